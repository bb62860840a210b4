"""The folder layout is the architecture: layers import only downward, and nothing imports in a circle.

Every import of every module under dfgpt/ is read with `ast`: at module level, inside
functions, and under `if TYPE_CHECKING:` alike, so a cycle cannot hide in a function body.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "dfgpt"

# Tiers, lowest first. A module may import modules of its own package or of lower tiers. The
# packages of one tier are siblings: they may not import each other, except along SIDE_EDGES.
TIERS = (
    "errors html",
    "core",  # the engine: names, config, ops with their autodiff, graph, cones, evaluation
    "models",  # weights in: checkpoints, hub folders, tokenizer, the catalog
    "cells",  # one input's cells by name
    "analysis edits interventions circuits generation export toys",  # what is asked or done with cells
    "sheet model",  # the façade: the public Sheet and Model, and load
    "batch views",  # datasets (in process or on Dask); pictures
    "cli server",  # the command line and the explorer's web server: the top; only `dfgpt serve` joins them
)
# (importer, imported) between siblings, each for a reason a reader can check:
SIDE_EDGES = {
    ("interventions", "edits"),  # a patch is an edit: a pin with a receipt and an undo
    ("circuits", "edits"),  # an edge patch is an edit too: switch and patch cells written with a receipt and an undo
    ("circuits", "interventions"),  # discovery measures with the patching metrics (logit_diff, kl, ...)
    ("circuits", "analysis"),  # a circuit sheet's cells have formulas, as any sheet's
    ("toys", "analysis"),  # aab read as SymPy formulas in its one constant
    ("model", "sheet"),  # a Model makes Sheets
    ("cli", "server"),  # `dfgpt serve` only (test_the_server_and_the_cli_meet_only_in_the_serve_verb)
}
LEVEL = {part: i for i, tier in enumerate(TIERS) for part in tier.split()}
CODE_LINES = 400  # the house guide for one module


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every dfgpt module `name` imports, wherever in the file the import stands."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dfgpt"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "dfgpt":
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            out |= subs or {target}
    return {m for m in out if m in MODULES and m != name}


def layer_of(name: str) -> int | None:
    """The layer of a library module; None for the package's own __init__ and __main__ (the top)."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return None
    return LEVEL[parts[1]]


def import_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    g.add_edges_from((m, d) for m in MODULES for d in imports_of(m))
    return g


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        parts = name.split(".")
        assert len(parts) == 1 or parts[1] == "__main__" or parts[1] in LEVEL, f"{name} is in no layer"


def test_the_import_graph_has_no_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_layers_import_only_downward():
    upward = [
        (m, d)
        for m, d in import_graph().edges
        if layer_of(m) is not None and layer_of(d) is not None and layer_of(d) > layer_of(m)  # type: ignore[operator]
    ]
    assert not upward, f"upward imports: {upward}"


def package_of(name: str) -> str | None:
    parts = name.split(".")
    return None if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def test_siblings_import_each_other_only_along_the_allowed_side_edges():
    side = {
        (package_of(m), package_of(d))
        for m, d in import_graph().edges
        if package_of(m) and package_of(d) and package_of(m) != package_of(d) and layer_of(m) == layer_of(d)
    }
    assert side <= SIDE_EDGES, f"imports between siblings not in SIDE_EDGES: {sorted(side - SIDE_EDGES)}"


def test_every_allowed_side_edge_is_used():
    """An allowed edge nobody takes is a permission to forget: drop it from SIDE_EDGES."""
    used = {(package_of(m), package_of(d)) for m, d in import_graph().edges}
    assert SIDE_EDGES <= used, sorted(SIDE_EDGES - used)


def test_no_library_module_imports_the_cli():
    g = import_graph()
    for m in MODULES:
        if not m.startswith("dfgpt.cli") and m not in ("dfgpt.__main__",):
            assert not [d for d in g.successors(m) if d.startswith("dfgpt.cli")], m


def test_the_server_and_the_cli_meet_only_in_the_serve_verb():
    g = import_graph()
    for m in MODULES:
        if m.startswith("dfgpt.server"):
            assert not [d for d in g.successors(m) if d.startswith("dfgpt.cli")], m
        elif m.startswith("dfgpt.cli") and m != "dfgpt.cli.serve":
            assert not [d for d in g.successors(m) if d.startswith("dfgpt.server")], m


def test_no_dfgpt_import_inside_a_function():
    """dfgpt's own imports stand at the top of a module, where the layering can be read (third-party
    ones may wait for the call that needs them: torch, tokenizers and scipy are slow to import)."""
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom):
                        assert not inner.level and (inner.module or "").split(".")[0] != "dfgpt", (name, node.name)
                    elif isinstance(inner, ast.Import):
                        assert all(a.name.split(".")[0] != "dfgpt" for a in inner.names), (name, node.name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_under_the_size_guide(name):
    lines = MODULES[name].read_text(encoding="utf-8").splitlines()
    code = [x for x in lines if x.strip() and not x.strip().startswith("#")]
    assert len(code) <= CODE_LINES, f"{name}: {len(code)} code lines; split it by concept"


def test_architecture_md_walks_every_module_in_layer_order():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `(dfgpt[\w.]*)` \|", text, flags=re.M)
    want = {m for m, p in MODULES.items() if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(listed) == sorted(want)
    levels = [layer_of(m) for m in listed]
    assert levels == sorted(levels), "docs/architecture.md lists the modules in layer order"


def test_every_package_ships_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in PKG.rglob("__init__.py")}
    assert packages <= listed, f"pyproject.toml [tool.setuptools] packages misses {sorted(packages - listed)}"
