"""docs/architecture.md lists the modules in order of dependence, and the code keeps to it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_module_imports_only_modules_above_it_at_import_time():
    table = re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "architecture.md").read_text(), re.M)
    modules = {p.stem for p in (ROOT / "dfgpt").glob("*.py")} - {"__init__", "__main__"}
    assert set(table) == modules
    pos = {m: i for i, m in enumerate(table)}
    for m in table:
        tree = ast.parse((ROOT / "dfgpt" / f"{m}.py").read_text())
        # Module-level `from .x import ...` only: lazy imports inside functions are the
        # documented way down the table (a sheet delegating to its concept modules).
        ups = {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        assert all(pos[d] < pos[m] for d in ups & modules), (m, sorted(d for d in ups & modules if pos[d] >= pos[m]))
