# SPDX-License-Identifier: BSD-3-Clause
"""Reconstruct the chunks of a scan file on a Dask cluster (``tomodl recon --workers/--scheduler``).

Design:

- **Workers compute whole chunks** (read rows -> normalize, ``-log`` -> FBP -> denoise) with the
  same stage functions as the single-process conveyor (:mod:`tomodl.recon.stages`), the
  centre found once by the driver, and the same chunk plan, so the output is identical to a
  single-process run.  Each worker runs one chunk at a time (a per-worker lock), using all of
  its threads for torch, and loads the denoiser once, cached by the weights' SHA-256 in the
  :class:`WorkerState` plugin.
- **The driver writes.**  Chunk results come back to the driver, which writes them through the
  same atomic, resumable writer (:func:`tomodl.io.open_writer`) as the single-process path,
  in completion order, while the workers compute the next chunks.  One writer means one
  progress record, no parallel HDF5, the same lock against concurrent runs and the same resume
  semantics for every format; the price is that the output volume crosses the network once
  (a 2048^3 float32 volume is 32 GiB, about 30 s at 10 Gbit/s, small next to the compute).
- **Bounded memory.**  At most ``2 x workers`` chunks are submitted at a time (one running and
  one waiting per worker), so the driver holds at most that many results.
- **Faults.**  A worker process that dies (killed, out of memory) is replaced by its nanny and
  its chunk is rescheduled by Dask; a chunk that raises, or whose workers keep dying
  (``KilledWorker``), stops the run with :class:`~tomodl.recon.conveyor.ChunkFailure`: the
  chunks already written are kept and the same command continues from there.

The scan file and the weights folder must be readable under the same paths on every worker
(a shared file system), as with any HDF5 workflow on a cluster.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from tomodl.recon.conveyor import ChunkFailure, StageClock

logger = logging.getLogger(__name__)

#: Name of the worker plugin holding the per-worker lock and denoiser cache.
PLUGIN = "tomodl"
#: How long :func:`dask_client` waits for an existing scheduler before giving up.
SCHEDULER_TIMEOUT = "10s"
Rows = Tuple[int, int]


def _plugin_base():
    from distributed.diagnostics.plugin import WorkerPlugin

    return WorkerPlugin


class WorkerState:
    """Per-worker state: a lock (one chunk at a time) and denoisers cached by SHA-256.

    Registered on every worker (also workers that join later) by :func:`run_distributed`, as
    a ``distributed`` WorkerPlugin (:func:`worker_plugin`).
    """

    name = PLUGIN

    def setup(self, worker: Any = None) -> None:
        self.lock = threading.Lock()
        self.denoisers: Dict[str, Any] = {}
        from tomodl.recon.stages import RunCache

        self.plans = RunCache()  # FBP plans and the refiner, built once per worker

    def step(self, spec: Any) -> Optional[Callable]:
        """The denoising step of ``spec`` (loaded on first use), or None."""
        if spec is None:
            return None
        if spec.sha256 not in self.denoisers:
            logger.info("worker %d: loading %s weights %s", os.getpid(), spec.arch, spec.source)
            self.denoisers[spec.sha256] = spec.load()
        return spec.step(self.denoisers[spec.sha256])


def worker_plugin() -> Any:
    """A :class:`WorkerState` that is also a ``distributed.WorkerPlugin`` (imported lazily)."""
    cls = type("TomodlWorkerState", (WorkerState, _plugin_base()), {})
    return cls()


def compute_chunk(path: str, rows: Rows, center: float, cfg: Any, spec: Any,
                  ncore: Optional[int]) -> Tuple[Any, Dict[str, float]]:
    """Worker task: the slices ``(rows, N, N)`` of one chunk and the busy seconds per stage."""
    from distributed import get_worker

    from tomodl.recon import stages

    worker = get_worker()
    state = worker.plugins[PLUGIN]
    threads = ncore or worker.state.nthreads
    with state.lock:
        clock = StageClock()
        step = state.step(spec)
        with clock.time("read"):
            scan = stages.load_chunk(path, rows, cfg.corrections)
        with clock.time("preprocess"):
            proj = stages.preprocess_chunk(scan, path, cfg.corrections)
        rec = stages.reconstruct_chunk(proj, scan.theta, center, replace(cfg, ncore=threads),
                                       step, clock=clock, plans=state.plans)
        return rec, clock.busy


def _warm_up() -> None:
    import torch  # noqa: F401

    import tomodl.recon.fbp  # noqa: F401
    import tomodl.recon.stages  # noqa: F401


@contextlib.contextmanager
def dask_client(workers: Optional[int], scheduler: Optional[str]) -> Iterator[Any]:
    """A ``distributed.Client``: on a new local cluster of ``workers`` processes (loopback,
    no dashboard, one thread each), or connected to ``scheduler`` (an address, or the JSON
    file written by ``dask scheduler --scheduler-file``).  Closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise ValueError(f"--workers/--scheduler need dask.distributed ({err}); install it with "
                         "pip install 'tomodl[dask]'") from err
    if scheduler is not None:
        from pathlib import Path

        where = {"scheduler_file": scheduler} if Path(scheduler).is_file() else \
            {"address": scheduler}
        try:
            client = Client(**where, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as err:
            raise ValueError(f"cannot connect to the Dask scheduler {scheduler!r} ({err}); check "
                             "the address and that the scheduler is running") from err
        with client:
            yield client
        return
    import dask

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which returns every freed
    # buffer to the OS: the FBP's large temporaries then cost page faults (1.8x slower here)
    env = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
           if k != "MALLOC_TRIM_THRESHOLD_"}
    # the scheduler always serves HTTP health routes: on a free loopback port, no dashboard
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
            LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None,
                         scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run_distributed(job: Any, consume: Callable[[Rows, Any], None], clock: StageClock,
                    client: Any) -> None:
    """Compute ``job.todo`` on the Dask workers of ``client`` (:func:`dask_client`, opened by
    the caller before the output) and ``consume(rows, slices)`` each result here.

    Raises
    ------
    ChunkFailure
        A chunk raised, or its workers kept dying; submitted chunks are cancelled.
    """
    from distributed import as_completed

    cfg = job.cfg
    t0 = time.perf_counter()
    client.register_plugin(worker_plugin(), name=PLUGIN)
    client.run(_warm_up)            # import torch and the FBP on every worker at once
    clock.add({"cluster": time.perf_counter() - t0})
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    ncore = cfg.ncore
    if ncore is None and cfg.workers is not None:
        ncore = max(1, (os.cpu_count() or 1) // cfg.workers)
    logger.info("Dask: %d workers at %s, %s torch threads each", n_workers,
                client.scheduler.address, ncore or "all their")
    token = uuid.uuid4().hex[:8]
    todo = iter(job.todo)
    pending: Dict[Any, Rows] = {}
    done = as_completed()

    def submit() -> None:
        rows = next(todo, None)
        if rows is not None:
            fut = client.submit(compute_chunk, str(job.path.resolve()), rows, job.center,
                                cfg, job.spec, ncore, key=f"tomodl-{rows[0]}-{token}",
                                pure=False, retries=0)
            pending[fut] = rows
            done.add(fut)

    for _ in range(2 * n_workers):
        submit()
    for fut in done:
        rows = pending.pop(fut)
        try:
            rec, busy = fut.result()
        except Exception as err:  # noqa: BLE001 - every cause stops the run
            client.cancel(list(pending))
            raise ChunkFailure(rows, _stage_of(err), err) from err
        clock.add(busy)
        del fut
        submit()
        try:
            consume(rows, rec)
        except Exception as err:  # noqa: BLE001 - e.g. disk full
            client.cancel(list(pending))
            raise ChunkFailure(rows, "write", err) from err


def _stage_of(err: BaseException) -> str:
    if type(err).__name__ == "KilledWorker":
        return "a Dask worker that died repeatedly (out of memory?)"
    return "a Dask worker"
