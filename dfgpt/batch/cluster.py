"""Chunks of a sweep on a Dask cluster: an embedded local one, or an existing one by address.

`run(plan, items, scheduler=...)` cuts the items into chunks, sends the plan with each
task (the model's name or path and the pairs as ids, never a loaded model: a worker loads
the model once and keeps it), submits one task per chunk, and collects them as they finish, with
a progress bar counted in sites. A worker that dies takes its running chunk with it; the
scheduler runs it again elsewhere (Dask's `allowed-failures`), and a chunk whose code
raises is retried `retries` times. Chunks that still fail are returned with their error,
for the caller to report or keep as holes. An interrupt (Ctrl-C) cancels every chunk and
closes the embedded cluster; the sweep never wrote a sheet, so there is nothing to undo.

`where(scheduler, workers, n)` says where a dataset of `n` pairs or inputs runs: `AUTO` by
default for a dataset of more than one (the caller times the first pair in process and starts
an embedded local cluster only when the rest would take long enough to pay for its start-up,
`CLUSTER_START`; in process when Dask is not installed, the machine has one core, the model was
built in memory or a script sweeps at its top level: the values are the same);
`scheduler="inline"` keeps it in process, `"local"` always starts the embedded cluster, and a
dataset of one stays in process. `check_run(...)` refuses bad arguments the same way wherever
the sweep would run, before any work; `_client` turns every way an address can be wrong (a
malformed one, a port that does not speak Dask, a scheduler with no workers) into a typed
error that names it.

Dask is imported here, when a distributed sweep starts, never by `import dfgpt`.

>>> progress_default(None) in (True, False), progress_default(False)
(True, False)
>>> where("inline", None, 8), where(None, None, 1), where(None, 2, 1)
(None, None, 'local')
>>> check_run(None, None, 0, 2)
Traceback (most recent call last):
  ...
dfgpt.errors.QueryError: chunk must be a whole number of sites ≥ 1 (or None: about four tasks per worker), got 0.
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
from .plan import Chunk, Item, Plan, chunks
from .worker import run_chunk

__all__ = ["AUTO", "CLUSTER_START", "INLINE", "LOCAL", "QUIET", "Failed", "check_run", "cores", "local_cluster",
           "progress_default", "run", "unguarded_script", "where", "why_here"]

LOCAL = "local"  # scheduler="local": an embedded cluster of one single-threaded process per core
INLINE = "inline"  # scheduler="inline": in this process, one pair after the other
AUTO = "auto"  # the default for a dataset of more than one: in process, or a local cluster when it pays
# What starting an embedded cluster costs a sweep: the processes, each importing dfgpt and loading
# the model, and the first chunks' sheets (measured on this 2-core machine: 2.5-2.7 s on `sort`).
CLUSTER_START = 3.0
Failed = tuple[list[Item], BaseException]
_LOCK = threading.Lock()  # a worker with several threads runs one chunk at a time: runners are not shared


def progress_default(progress: bool | None) -> bool:
    """`None`: a bar when someone watches (a terminal, or a notebook)."""
    if progress is not None:
        return bool(progress)
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def cores() -> int:
    """The cores an embedded cluster gets a worker process for."""
    return os.cpu_count() or 1


def where(scheduler: Any, workers: int | None, n: int, shippable: bool = True) -> Any:
    """None to run in this process, `AUTO` to let the first pair's time decide, else the scheduler to
    run on (see the module). `shippable`: the model can be loaded on a worker by name or path (one
    built in memory stays in process by default)."""
    if isinstance(scheduler, str) and scheduler == INLINE:
        if workers is not None:
            raise QueryError(f"workers={workers} starts local Dask workers and scheduler='inline' runs in this "
                             "process: drop one of them.")
        return None
    if (scheduler is not None and not (isinstance(scheduler, str) and scheduler == AUTO)) or workers is not None:
        return LOCAL if scheduler is None or scheduler == AUTO else scheduler
    if n > 1 and shippable and cores() > 1 and importlib.util.find_spec("distributed") is not None \
            and not unguarded_script():
        return AUTO
    return None


def why_here(scheduler: Any, n: int, shippable: bool = True) -> str:
    """Why a dataset that `where` keeps in this process runs here, for the result and the progress line."""
    if isinstance(scheduler, str) and scheduler == INLINE:
        return " (scheduler='inline')"
    if n <= 1:
        return " (one pair)"
    if not shippable:
        return " (the model was built in memory: a worker loads a model by name or path)"
    if importlib.util.find_spec("distributed") is None:
        return " (Dask is not installed: pip install 'dfgpt[dask]')"
    if cores() <= 1:
        return " (one core)"
    return (" (a script's top level: local workers would import it again; a sweep under "
            "`if __name__ == \"__main__\":` may use them)")


def check_run(scheduler: Any, workers: Any, chunk: Any, retries: Any) -> None:
    """Refuse what no scheduler could run, the same in process and on a cluster, before any work."""
    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if workers is not None and (not whole(workers) or workers < 1):
        raise QueryError(f"workers must be a whole number ≥ 1 (local worker processes), got {workers!r}.")
    if chunk is not None and (not whole(chunk) or chunk < 1):
        raise QueryError(f"chunk must be a whole number of sites ≥ 1 (or None: about four tasks per worker), "
                         f"got {chunk!r}.")
    if not whole(retries) or retries < 0:
        raise QueryError(f"retries must be a whole number ≥ 0 (how often a chunk that raised runs again), "
                         f"got {retries!r}.")
    if not (scheduler is None or isinstance(scheduler, str) or hasattr(scheduler, "submit")):
        raise QueryError(f"scheduler must be 'auto', 'local', 'inline', an address such as 'tcp://127.0.0.1:8786' "
                         f"or a dask.distributed.Client; got {type(scheduler).__name__}.")


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


def _connect_wait() -> float:
    """How long an address may take to connect and answer: at most 10 s, less if dask's config says so
    (distributed.comm.timeouts.connect)."""
    import dask
    from dask.utils import parse_timedelta

    return min(10.0, float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))))


def _handshake(address: str, wait: float) -> None:
    """Connect to `address` within `wait` seconds and have the Dask handshake within as long again.

    `Client(address, timeout=...)` bounds only the TCP connect: a port that accepts the connection
    and never answers (an HTTP server) held it forever. The probe runs on a loop of its own in a
    thread, so it works under a notebook's running loop too.
    """
    import asyncio

    from distributed.comm import connect

    async def probe() -> None:  # `connect` gives up connecting after `wait`; the handshake gets as long again
        comm = await asyncio.wait_for(connect(address, timeout=wait), 2 * wait)
        await comm.close()

    error: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(probe())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=main, name="dfgpt-dask-probe", daemon=True)
    t.start()
    t.join(2 * wait + 5)
    if t.is_alive() or (error and isinstance(error[0], (TimeoutError, asyncio.TimeoutError))):
        raise ClusterError(f"{address} accepted a connection but did not answer as a Dask scheduler within "
                           f"{2 * wait:g} s "
                           "(is it another service's port?); give the address `dask scheduler` prints "
                           "(tcp://host:8786 by default), or use scheduler='local'.")
    if error:
        e = error[0]
        if isinstance(e, (OSError, EOFError)) or type(e).__name__.startswith("CommClosed"):
            raise ClusterError(f"no Dask scheduler answers at {address} ({type(e).__name__}); start one "
                               "(`dask scheduler`, then `dask worker ADDRESS` on each machine), or use "
                               "scheduler='local'.") from None
        raise e


def _address(scheduler: str) -> str:
    """The address, checked: a scheme Dask knows and a host and port it can parse."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    usage = ("give 'tcp://HOST:PORT' (what `dask scheduler` prints), or use scheduler='local' (a cluster on this "
             "machine) or 'inline' (this process)")
    try:
        scheme, loc = parse_address(scheduler)
        if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
            raise ValueError(f"{scheme}:// is not an address another process can reach")
        parse_host_port(loc)
    except (ValueError, TypeError) as e:
        raise QueryError(f"scheduler {scheduler!r} is not a Dask scheduler's address ({e}); {usage}.") from None
    if scheme in ("tls", "wss"):
        raise QueryError(f"scheduler {scheduler!r} needs TLS certificates, which an address alone cannot carry: "
                         "make the client yourself, dask.distributed.Client(address, security=Security(...)), and "
                         "pass it as scheduler=client.")
    return scheduler


def _client(scheduler: Any, workers: int | None) -> tuple[Any, Any, bool]:
    """(client, embedded cluster or None, whether this call owns the client)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ClusterError("a distributed sweep needs Dask: pip install 'dfgpt[dask]' (or 'dask[distributed]'); "
                           "or run the sweep in process (scheduler='inline').") from None
    if scheduler is None or scheduler == LOCAL:
        if unguarded_script():  # refused before a process starts: each would import the script again
            raise ClusterError("scheduler='local' starts worker processes, and each imports this script again, "
                               "which sweeps at its top level: put the sweep under `if __name__ == \"__main__\":`, "
                               "or run it in this process (scheduler='inline').")
        n = workers or cores()
        try:
            cluster = local_cluster(n)
        except (RuntimeError, OSError, TimeoutError) as e:
            raise ClusterError(f"the embedded Dask cluster did not start ({type(e).__name__}: {e}); run in this "
                               "process instead: scheduler='inline'.") from None
        return Client(cluster), cluster, True
    if isinstance(scheduler, str):
        if workers is not None:
            raise QueryError(f"workers={workers} starts local workers; an existing cluster ({scheduler}) has its "
                             "own: drop workers, or use scheduler='local'.")
        if "://" not in scheduler:
            raise QueryError(f"scheduler must be 'auto', 'local', 'inline', an address such as "
                             f"'tcp://127.0.0.1:8786', or a dask.distributed.Client; got {scheduler!r}.")
        address = _address(scheduler)
        wait = _connect_wait()
        _handshake(address, wait)
        try:
            return Client(address, timeout=wait), None, True
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"no Dask scheduler answers at {address} ({type(e).__name__}); start one "
                               "(`dask scheduler`, then `dask worker ADDRESS` on each machine), or use "
                               "scheduler='local'.") from None
    if not hasattr(scheduler, "submit") or not hasattr(scheduler, "scatter"):
        raise QueryError(f"scheduler must be 'auto', 'local', 'inline', an address or a dask.distributed.Client, "
                         f"got {type(scheduler).__name__}.")
    return scheduler, None, False


def describe(client: Any, cluster: Any, n: int) -> str:
    """Where a sweep ran, on `n` workers, in words: `a local cluster of 2 workers`, or the scheduler's address."""
    if cluster is not None:
        return f"a local cluster of {n} worker{'s' if n != 1 else ''}"
    return f"{client.scheduler.address} ({n} worker{'s' if n != 1 else ''})"


def _workers(client: Any) -> list[str]:
    """The cluster's workers' addresses, waiting a little for the first: a scheduler just started may
    have none yet; one that keeps none would hold the sweep forever."""
    addresses = sorted(client.scheduler_info().get("workers", {}))
    if addresses:
        return addresses
    wait = _connect_wait()
    try:
        client.wait_for_workers(1, timeout=wait)
    except (TimeoutError, OSError):
        raise ClusterError(f"the Dask scheduler at {client.scheduler.address} has no workers (waited {wait:g} s): "
                           "start some (`dask worker ADDRESS --nthreads 1`, once per core), or use "
                           "scheduler='local'.") from None
    return sorted(client.scheduler_info().get("workers", {}))


def run(plan: Plan, items: list[Item], scheduler: Any = LOCAL, workers: int | None = None,
        size: int | None = None, progress: bool | None = None, retries: int = 2,
        cost: Sequence[float] | None = None, block: Sequence[Any] | None = None,
        say: str = "") -> tuple[list[Chunk], list[Failed], str]:
    """Every item computed on the cluster: the chunks that came back, the chunks that failed, and
    where they ran (`describe`).

    `say`: why the sweep runs there, for the progress line (after where it runs).
    `cost`: per item, to cut chunks of about equal work (`plan.costs`) when `size` is not given;
    `block`: per item, its replay group, never split between chunks (see `plan.chunks`).
    """
    check_run(scheduler, workers, size, retries)
    shipped = plan.shipped()  # refuses a model with no name or path before starting anything
    from dask.distributed import as_completed

    client, cluster, own = _client(scheduler, workers)
    try:
        addresses = _workers(client)
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
        what, ran = "sweep" if plan.how is None else "ablate", describe(client, cluster, len(addresses)) + say
        bar = tqdm(total=len(items), unit="site", desc=f"{what} {plan.over} on {ran}",
                   disable=not progress_default(progress))
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
        return done, failed, ran
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
