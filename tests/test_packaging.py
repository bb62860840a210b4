"""The package as installed, not only the source tree, carries the shipped models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_shipped_models(tmp_path):
    # Build from a copy: setuptools leaves build/ behind, and a stale one could feed the wheel.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*cache*"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
         "-w", str(tmp_path)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("dfgpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("sort", "aab"):
        assert f"dfgpt/graphs/{model}/config.json" in names
        assert f"dfgpt/graphs/{model}/model.safetensors" in names
    for asset in ("index.html", "app.js", "style.css"):  # the explorer works offline from the package alone
        assert f"dfgpt/server/static/{asset}" in names
    shipped = (ROOT / "graphs" / "sort" / "model.safetensors").read_bytes()
    assert zipfile.ZipFile(wheel).read("dfgpt/graphs/sort/model.safetensors") == shipped


def test_a_source_checkout_loads_the_shipped_models_without_pip_install():
    """`PYTHONPATH=. python -c "import dfgpt; dfgpt.load('sort')"` from a checkout: only the
    path finder may find dfgpt (an editable install's finder would otherwise hide the bug)."""
    code = (
        "import sys, importlib.machinery as m\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if f in (m.BuiltinImporter, m.FrozenImporter, m.PathFinder)]\n"
        "import dfgpt\n"
        f"assert dfgpt.__file__.startswith({str(ROOT)!r}), dfgpt.__file__\n"
        "print(dfgpt.load('sort').generate('CBABBC', max_new_tokens=6), dfgpt.load('aab').config.n_embd)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.split() == ["ABBBCC", "8"]
