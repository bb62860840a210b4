"""A real explorer server for the tests: uvicorn on 127.0.0.1, a free port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from dfgpt.server.app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(models: Mapping[str, Any], **kw: Any) -> Iterator[str]:
    """The base URL of an explorer serving `models` until the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(models, **kw), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def dask_client(workers: int) -> Iterator[Any]:
    """A Dask client of a local cluster of `workers` one-thread processes on 127.0.0.1, closed after."""
    import distributed  # imported when asked: the server tests do not need Dask

    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
