"""Chunks of a sweep on a Dask cluster: an embedded local one, or an existing one by address.

`run(plan, items, scheduler=...)` cuts the items into chunks, sends the plan with each
task (the model's name or path and the pairs as ids, never a loaded model: a worker loads
the model once and keeps it), submits one task per chunk, and collects them as they finish, with
a progress bar counted in sites. A worker that dies takes its running chunk with it; the
scheduler runs it again elsewhere (Dask's `allowed-failures`), and a chunk whose code
raises is retried `retries` times. Chunks that still fail are returned with their error,
for the caller to report or keep as holes. An interrupt (Ctrl-C) cancels every chunk and
closes the embedded cluster; the sweep never wrote a sheet, so there is nothing to undo.

Dask is imported here, when a distributed sweep starts, never by `import dfgpt`.

>>> progress_default(None) in (True, False), progress_default(False)
(True, False)
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from tqdm.auto import tqdm

from ..errors import ClusterError, QueryError
from .chunks import Chunk, Item, Plan, chunks, run_chunk

__all__ = ["LOCAL", "Failed", "progress_default", "run"]

LOCAL = "local"  # scheduler="local": an embedded cluster of one single-threaded process per core
Failed = tuple[list[Item], BaseException]
_LOCK = threading.Lock()  # a worker with several threads runs one chunk at a time: runners are not shared


def progress_default(progress: bool | None) -> bool:
    """`None`: a bar when someone watches (a terminal, or a notebook)."""
    if progress is not None:
        return bool(progress)
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def _chunk(plan: Plan, items: list[Item]) -> Chunk:
    with _LOCK:
        return run_chunk(plan, items)


def _client(scheduler: Any, workers: int | None) -> tuple[Any, Any, bool]:
    """(client, embedded cluster or None, whether this call owns the client)."""
    try:
        import dask
        from dask.distributed import Client, LocalCluster
        from dask.utils import parse_timedelta
    except ImportError:
        raise ClusterError("a distributed sweep needs Dask: pip install 'dfgpt[dask]' (or 'dask[distributed]'); "
                           "or run the sweep in process (scheduler=None).") from None
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise QueryError(f"workers must be a whole number ≥ 1 (local worker processes), got {workers!r}.")
    if scheduler is None or scheduler == LOCAL:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
        return Client(cluster), cluster, True
    if isinstance(scheduler, str):
        if workers is not None:
            raise QueryError(f"workers={workers} starts local workers; an existing cluster ({scheduler}) has its "
                             "own: drop workers, or use scheduler='local'.")
        if "://" not in scheduler:
            raise QueryError(f"scheduler must be 'local', an address such as 'tcp://127.0.0.1:8786', or a "
                             f"dask.distributed.Client; got {scheduler!r}.")
        try:
            # At most 10 s, less if dask's config says so (distributed.comm.timeouts.connect).
            wait = min(10.0, float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))))
            return Client(scheduler, timeout=wait), None, True
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"no Dask scheduler answers at {scheduler} ({type(e).__name__}); start one "
                               "(`dask scheduler`, then `dask worker ADDRESS` on each machine), or use "
                               "scheduler='local'.") from None
    if not hasattr(scheduler, "submit") or not hasattr(scheduler, "scatter"):
        raise QueryError(f"scheduler must be 'local', an address or a dask.distributed.Client, got "
                         f"{type(scheduler).__name__}.")
    return scheduler, None, False


def run(plan: Plan, items: list[Item], scheduler: Any = LOCAL, workers: int | None = None,
        size: int | None = None, progress: bool | None = None, retries: int = 2) -> tuple[list[Chunk], list[Failed]]:
    """Every item computed on the cluster: the chunks that came back, and the chunks that failed."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise QueryError(f"retries must be a whole number ≥ 0, got {retries!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise QueryError(f"chunk must be a whole number of sites ≥ 1, got {size!r}.")
    shipped = plan.shipped()  # refuses a model with no name or path before starting anything
    from dask.distributed import as_completed

    client, cluster, own = _client(scheduler, workers)
    try:
        n = max(1, len(client.scheduler_info().get("workers", {})))
        parts = chunks(items, n, size)
        # The plan (ids and a name: kilobytes) goes with every task, so no task waits on data
        # held by another worker, which may be the one that died.
        futures = [client.submit(_chunk, shipped, part, retries=retries, pure=False, key=f"dfgpt-{plan.token}-{i}")
                   for i, part in enumerate(parts)]
        where = {f.key: i for i, f in enumerate(futures)}
        done: list[Chunk] = []
        failed: list[Failed] = []
        bar = tqdm(total=len(items), unit="site", desc=f"sweep {plan.over}", disable=not progress_default(progress))
        try:
            for fut in as_completed(futures):
                i = where[fut.key]
                if fut.status == "error":
                    failed.append((parts[i], fut.exception()))
                else:
                    done.append(fut.result())
                bar.update(len(parts[i]))
                fut.release()
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
