"""dfgpt: a GPT as a spreadsheet of named cells, evaluated lazily, traced cell by cell.

>>> import dfgpt
>>> sheet = dfgpt.load("sort-random").sheet("CABACA")
>>> sheet.formula("logit[5][A]").split(" = ")[0]
'logit[5][A]'
"""

from .batch.api import attribution_patch, sweep
from .batch.pairs import read_pairs
from .core.config import Config
from .errors import DfgptError
from .interventions.lens import logit_lens
from .model import Model, load
from .sheet import Sheet
from .views.render import draw

__all__ = ["Config", "DfgptError", "Model", "Sheet", "attribution_patch", "draw", "load", "logit_lens", "read_pairs",
           "sweep"]
__version__ = "0.1.0"
