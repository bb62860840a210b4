"""dfgpt: a GPT as a spreadsheet of named cells, evaluated lazily, traced cell by cell.

>>> import dfgpt
>>> sheet = dfgpt.load("sort-random").sheet("CABACA")
>>> sheet.formula("logit[5][A]").split(" = ")[0]
'logit[5][A]'
"""

from .batch.api import ablation_sweep, attribution_patch, sweep, sweep_pairs
from .batch.circuits import acdc, eap, eap_ig
from .batch.influence import influence
from .batch.pairs import read_inputs, read_pairs
from .batch.task import task_score
from .circuits.circuit import Circuit
from .circuits.circuit_sheet import CircuitSheet
from .core.config import Config
from .errors import DfgptError
from .interventions.lens import logit_lens
from .model import Model, load
from .sheet import Sheet
from .views.render import draw

__all__ = [
    "Circuit", "CircuitSheet", "Config", "DfgptError", "Model", "Sheet", "ablation_sweep", "acdc",
    "attribution_patch", "draw", "eap", "eap_ig", "influence", "load", "logit_lens", "read_inputs",
    "read_pairs", "sweep", "sweep_pairs", "task_score",
]
__version__ = "0.1.0"
