"""Export speed of the sort model: workbook with live formulas (goal ≤ 5 s) and npz.

    python benchmarks/bench_export.py

Uses the trained `sort` model when it is in graphs/, else `sort-random` (same shapes).
Times include computing the sheet's values (a fresh sheet each run); best of 3.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dfgpt
from dfgpt.errors import CheckpointError


def main() -> None:
    try:
        model = dfgpt.load("sort")
    except CheckpointError:
        model = dfgpt.load("sort-random")
    out = Path(tempfile.mkdtemp())
    for text in ("CABACA", "CABACABACAB"):
        best, result = float("inf"), None
        for _ in range(3):
            sheet = model.sheet(text)
            t0 = time.perf_counter()
            result = sheet.to_xlsx(out / "sort.xlsx", progress=False)
            best = min(best, time.perf_counter() - t0)
        assert result is not None
        size = (out / "sort.xlsx").stat().st_size / 1e6
        print(
            f"xlsx {model.config.name} T={len(text):>2}: {best:.2f} s (goal ≤ 5 s, ratio {best / 5:.2f}), "
            f"{result.cells:,} cells, {result.formulas:,} formulas, {len(result.sheets)} sheets, "
            f"{len(result.names)} names, {size:.1f} MB"
        )
        sheet = model.sheet(text)
        t0 = time.perf_counter()
        sheet.to_npz(out / "sort.npz")
        print(f"npz  {model.config.name} T={len(text):>2}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
