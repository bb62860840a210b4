"""The package as installed, not only the source tree, carries the shipped models."""

from __future__ import annotations

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
