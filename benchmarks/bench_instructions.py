"""A refactor's cost in instructions: each workload's warm run counted by callgrind, old tree vs new.

    python benchmarks/bench_instructions.py --old ../old-checkout [--new .] [workload ...]

Wall-clock ratios need an idle machine; an instruction count does not (the same code on the same
inputs executes the same instructions, whatever else the cores are doing), so "within 3% of
before" can be checked on a busy machine. Each workload runs once to warm up (imports, memoised
plans, value blocks), then once inside a builtin `map` step; callgrind counts only the
instructions executed inside `map_next`, i.e. the measured run. One BLAS thread.
Needs `valgrind` (Debian's package). Asserts each count is real work (over a million
instructions) and that both trees computed the same result (a digest the workload prints).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ("forward", "edit", "generate", "task", "sweep", "patch", "influence", "gpt2fwd", "gpt2sweep", "export")


def count(tree: Path, workload: str) -> tuple[int, str]:
    """(instructions of the measured run, its result's digest) for one workload under one tree."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no",
           "--toggle-collect=map_next", sys.executable, str(HERE / "instruction_workloads.py"), workload]
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp", check=True)
    n = re.search(r"Collected : (\d+)", got.stderr)
    digest = re.search(r"digest (\S+)", got.stdout)
    if n is None or digest is None:
        raise SystemExit(f"{workload}: no count or digest\n{got.stdout[-2000:]}\n{got.stderr[-2000:]}")
    return int(n.group(1)), digest.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the checkout before the change")
    ap.add_argument("--new", type=Path, default=HERE.parent, help="the checkout after it (default: this one)")
    ap.add_argument("workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    a = ap.parse_args()
    print(f"{'workload':12s} {'old':>16s} {'new':>16s}  new/old")
    for w in a.workloads:
        (o, do), (n, dn) = count(a.old.resolve(), w), count(a.new.resolve(), w)
        assert o > 1_000_000 and n > 1_000_000, (w, o, n)
        assert do == dn, f"{w}: the two trees computed different results ({do} vs {dn})"
        print(f"{w:12s} {o:>16,d} {n:>16,d}  {n / o:.4f}", flush=True)


if __name__ == "__main__":
    main()
