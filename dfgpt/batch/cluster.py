"""Chunks of a sweep on a Dask cluster: an embedded local one, or an existing one by address.

`run(plan, items, scheduler=...)` cuts the items into chunks, sends the plan with each
task (the model's name or path and the pairs as ids, never a loaded model: a worker loads
the model once and keeps it), submits one task per chunk, and collects them as they finish, with
a progress bar counted in sites. A worker that dies takes its running chunk with it; the
scheduler runs it again elsewhere (Dask's `allowed-failures`), and a chunk whose code
raises is retried `retries` times. Chunks that still fail are returned with their error,
for the caller to report or keep as holes. An interrupt (Ctrl-C) cancels every chunk and
closes the embedded cluster; the sweep never wrote a sheet, so there is nothing to undo.

`where(scheduler, workers, n)` says where a dataset of `n` pairs or inputs runs: a dataset of
more than one runs on an embedded local cluster sized to the machine's cores by default (in
process when Dask is not installed or the model was built in memory: the values are the same);
`scheduler="inline"` keeps it in process, and a dataset of one stays in process.

Dask is imported here, when a distributed sweep starts, never by `import dfgpt`.

>>> progress_default(None) in (True, False), progress_default(False)
(True, False)
>>> where("inline", None, 8), where(None, None, 1), where(None, 2, 1)
(None, None, 'local')
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import ClusterError, QueryError
from .chunks import Chunk, Item, Plan, chunks, run_chunk

__all__ = ["INLINE", "LOCAL", "QUIET", "Failed", "local_cluster", "progress_default", "run", "where"]

LOCAL = "local"  # scheduler="local": an embedded cluster of one single-threaded process per core
INLINE = "inline"  # scheduler="inline": in this process, one pair after the other
Failed = tuple[list[Item], BaseException]
_LOCK = threading.Lock()  # a worker with several threads runs one chunk at a time: runners are not shared


def progress_default(progress: bool | None) -> bool:
    """`None`: a bar when someone watches (a terminal, or a notebook)."""
    if progress is not None:
        return bool(progress)
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def where(scheduler: Any, workers: int | None, n: int, shippable: bool = True) -> Any:
    """None to run in this process, else the scheduler to run on (see the module). `shippable`: the
    model can be loaded on a worker by name or path (one built in memory stays in process by default)."""
    if isinstance(scheduler, str) and scheduler == INLINE:
        if workers is not None:
            raise QueryError(f"workers={workers} starts local Dask workers and scheduler='inline' runs in this "
                             "process: drop one of them.")
        return None
    if scheduler is not None or workers is not None:
        return LOCAL if scheduler is None else scheduler
    if n > 1 and shippable and importlib.util.find_spec("distributed") is not None and not unguarded_script():
        return LOCAL
    return None


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)


def unguarded_script() -> bool:
    """Whether this call runs from a script's top level outside `if __name__ == "__main__":`.

    A local cluster's worker processes import the main script again (multiprocessing's spawn),
    so such a script would start the sweep again in every worker; the default runs it in process.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(getattr(main, "__spec__", None), "name", "") or ""
    if not path or spec == "__main__" or spec.endswith(".__main__"):
        return False  # a notebook, `python -c`, `python -m package`: spawn imports no script again
    frame: Any = sys._getframe(1)
    while frame is not None and (frame.f_code.co_name != "<module>" or frame.f_globals.get("__name__") != "__main__"):
        frame = frame.f_back
    if frame is None or frame.f_code.co_filename != path:
        return False  # the script's top level does not run this (a test runner, a function called later)
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return False
    line = frame.f_lineno
    return not any(_is_main_guard(node) and node.lineno <= line <= (node.end_lineno or line) for node in tree.body)


def _chunk(plan: Plan, packed: np.ndarray) -> Chunk:
    """A chunk on a worker: `packed` is its items as rows [pair, *site key] of one int array, which
    Dask ships as one buffer (a list of tuples it would walk item by item when the task is submitted)."""
    items = [(int(row[0]), tuple(int(x) for x in row[1:])) for row in packed.tolist()]
    with _LOCK:
        return run_chunk(plan, items)


def _pack(items: list[Item]) -> np.ndarray:
    return np.array([(p, *key) for p, key in items], dtype=np.int64)  # [items, 1 + key length]


QUIET = {  # an embedded cluster shares the cores with the sweep: its housekeeping stays out of the way
    "distributed.worker.profile.enabled": False,  # a stack sample of every task every 10 ms
    "distributed.admin.tick.interval": "1s",  # the event loops' watchdog, every 20 ms by default
    "distributed.admin.system-monitor.interval": "2s",  # CPU and memory readings for the dashboard
    # Dask also sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, to hand freed memory back to the
    # system. Setting it turns glibc's adaptive mmap threshold off, so every array over 128 KiB is a
    # fresh mapping whose pages the kernel zeroes on first touch: a sweep ran 8-10% slower in a worker
    # than in this process. The same environment without it:
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
}


def local_cluster(n: int) -> Any:
    """The embedded cluster: `n` single-threaded worker processes on this machine, with `QUIET`.

    Idle, Dask's defaults cost 12% of a core here (scheduler and 2 workers); with `QUIET` 3.5%.
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set(QUIET):  # the nannies hand this config to their worker processes
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0")


def _client(scheduler: Any, workers: int | None) -> tuple[Any, Any, bool]:
    """(client, embedded cluster or None, whether this call owns the client)."""
    try:
        import dask
        from dask.distributed import Client
        from dask.utils import parse_timedelta
    except ImportError:
        raise ClusterError("a distributed sweep needs Dask: pip install 'dfgpt[dask]' (or 'dask[distributed]'); "
                           "or run the sweep in process (scheduler='inline').") from None
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise QueryError(f"workers must be a whole number ≥ 1 (local worker processes), got {workers!r}.")
    if scheduler is None or scheduler == LOCAL:
        n = workers or os.cpu_count() or 1
        try:
            cluster = local_cluster(n)
        except (RuntimeError, OSError, TimeoutError) as e:
            guard = (" This script runs it at its top level, and each worker process imports the script again: "
                     "put the sweep under `if __name__ == \"__main__\":`." if unguarded_script() else "")
            raise ClusterError(f"the embedded Dask cluster did not start ({type(e).__name__}: {e}).{guard} Or run "
                               "in this process: scheduler='inline'.") from None
        return Client(cluster), cluster, True
    if isinstance(scheduler, str):
        if workers is not None:
            raise QueryError(f"workers={workers} starts local workers; an existing cluster ({scheduler}) has its "
                             "own: drop workers, or use scheduler='local'.")
        if "://" not in scheduler:
            raise QueryError(f"scheduler must be 'local', 'inline', an address such as 'tcp://127.0.0.1:8786', "
                             f"or a dask.distributed.Client; got {scheduler!r}.")
        try:
            # At most 10 s, less if dask's config says so (distributed.comm.timeouts.connect).
            wait = min(10.0, float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))))
            return Client(scheduler, timeout=wait), None, True
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"no Dask scheduler answers at {scheduler} ({type(e).__name__}); start one "
                               "(`dask scheduler`, then `dask worker ADDRESS` on each machine), or use "
                               "scheduler='local'.") from None
    if not hasattr(scheduler, "submit") or not hasattr(scheduler, "scatter"):
        raise QueryError(f"scheduler must be 'local', 'inline', an address or a dask.distributed.Client, got "
                         f"{type(scheduler).__name__}.")
    return scheduler, None, False


def run(plan: Plan, items: list[Item], scheduler: Any = LOCAL, workers: int | None = None,
        size: int | None = None, progress: bool | None = None, retries: int = 2,
        cost: Sequence[float] | None = None, block: Sequence[Any] | None = None) -> tuple[list[Chunk], list[Failed]]:
    """Every item computed on the cluster: the chunks that came back, and the chunks that failed.

    `cost`: per item, to cut chunks of about equal work (`chunks.costs`) when `size` is not given;
    `block`: per item, its replay group, never split between chunks (see `chunks.chunks`).
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise QueryError(f"retries must be a whole number ≥ 0, got {retries!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise QueryError(f"chunk must be a whole number of sites ≥ 1, got {size!r}.")
    shipped = plan.shipped()  # refuses a model with no name or path before starting anything
    from dask.distributed import as_completed

    client, cluster, own = _client(scheduler, workers)
    try:
        addresses = sorted(client.scheduler_info().get("workers", {}))
        n = max(1, len(addresses))
        parts = chunks(items, n, size, cost, block)
        # The plan (ids and a name: kilobytes) goes with every task, so no task waits on data
        # held by another worker, which may be the one that died. Consecutive chunks go to one
        # worker first (a loose preference: any worker may run or steal them), so a pair's sheets
        # are made on one worker, not on every worker that gets a chunk of it.
        futures = [client.submit(_chunk, shipped, _pack(part), retries=retries, pure=False,
                                 key=f"dfgpt-{plan.token}-{i}",
                                 workers=[addresses[i * n // len(parts)]] if addresses else None,
                                 allow_other_workers=True, priority=len(parts) - i)  # and in order
                   for i, part in enumerate(parts)]
        where = {f.key: i for i, f in enumerate(futures)}
        done: list[Chunk] = []
        failed: list[Failed] = []
        bar = tqdm(total=len(items), unit="site", desc=f"sweep {plan.over}", disable=not progress_default(progress))
        try:
            # The chunks that finished since the last look, fetched in one call (a round trip per
            # worker, not per chunk: each costs the scheduler and this process about 2 ms).
            for batch in as_completed(futures).batches():
                ok = [f for f in batch if f.status != "error"]
                failed += [(parts[where[f.key]], f.exception()) for f in batch if f.status == "error"]
                done += client.gather(ok)
                bar.update(sum(len(parts[where[f.key]]) for f in batch))
                for f in batch:
                    f.release()
        except BaseException:
            client.cancel(futures)  # Ctrl-C: nothing more runs for this sweep
            raise
        finally:
            bar.close()
        return done, failed
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
