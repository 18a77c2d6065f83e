# SPDX-License-Identifier: BSD-3-Clause
"""A three-stage conveyor: read chunk k+1 and write chunk k-1 while chunk k is reconstructed.

Like Tomocupy's conveyor, one reader thread (HDF5 hyperslab read, then normalize and ``-log``
in numpy), the calling thread (FBP and denoising in torch, which releases the GIL) and one
writer thread (HDF5/TIFF/Zarr writes and fsync) are linked by bounded queues of
``queue_depth`` chunks, so at most ``2 * queue_depth + 3`` chunks are alive
(:mod:`tomodl.recon.budget`).

Failures are ordered like a sequential loop: when chunk k fails (read, pre-process or
reconstruction), every chunk before k is still written and nothing after k is; when a write
fails, the run stops at once.  Either way :class:`ChunkFailure` names the rows of chunk k and
carries the original exception.  ``KeyboardInterrupt`` stops reading and computing at once;
the chunks already computed (at most ``queue_depth + 1``) are still written.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple

#: Pipeline stages, in order, as reported by :class:`StageClock`.
STAGES = ("read", "preprocess", "fbp", "denoise", "write")
#: Seconds between checks of the stop flags while a queue is full or empty.
POLL = 0.05
Rows = Tuple[int, int]


class ChunkFailure(Exception):
    """Chunk ``rows`` failed in ``stage``; the cause is ``__cause__`` / ``error``."""

    def __init__(self, rows: Rows, stage: str, error: BaseException):
        super().__init__(f"rows [{rows[0]}, {rows[1]}) failed in {stage}: {error}")
        self.rows, self.stage, self.error = rows, stage, error
        self.__cause__ = error


class StageClock:
    """Busy seconds per stage (:data:`STAGES`), safe to update from several threads."""

    def __init__(self) -> None:
        self._busy: Dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Add the time spent in the block to ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add({stage: time.perf_counter() - t0})

    def add(self, busy: Mapping[str, float]) -> None:
        """Add busy seconds measured elsewhere (e.g. on a Dask worker)."""
        with self._lock:
            for stage, sec in busy.items():
                self._busy[stage] = self._busy.get(stage, 0.0) + float(sec)

    @property
    def busy(self) -> Dict[str, float]:
        """Busy seconds per stage."""
        with self._lock:
            return dict(self._busy)

    @property
    def wall(self) -> float:
        """Seconds since the clock was created."""
        return time.perf_counter() - self._start

    def summary(self, wall: Optional[float] = None) -> str:
        """One line: busy seconds per stage, wall time and wall / slowest stage.

        Entries other than :data:`STAGES` (e.g. ``"cluster"``: Dask start-up) are listed but
        are not stages."""
        busy, wall = self.busy, self.wall if wall is None else wall
        stages = {k: busy[k] for k in STAGES}
        slowest = max(stages, key=stages.get)
        ratio = wall / busy[slowest] if busy[slowest] > 0 else float("nan")
        parts = ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
        return (f"busy seconds per stage: {parts}; stages sum {sum(stages.values()):.2f} s, "
                f"wall {wall:.2f} s, slowest stage {slowest} (wall / slowest {ratio:.2f})")


_END = object()


def _put(q: "queue.Queue", item: Any, halt: threading.Event) -> bool:
    while not halt.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue", halt: threading.Event) -> Any:
    while not halt.is_set():
        try:
            return q.get(timeout=POLL)
        except queue.Empty:
            continue
    return _END


def _reader(chunks, produce, q_in, halt_read: threading.Event) -> None:
    for rows in chunks:
        if halt_read.is_set():
            return
        try:
            item = produce(rows)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            _put(q_in, ChunkFailure(rows, "read", err), halt_read)
            return
        if not _put(q_in, (rows, item), halt_read):
            return
    _put(q_in, _END, halt_read)


def _writer(consume, q_out, halt: threading.Event, failures: list) -> None:
    while True:
        got = _get(q_out, halt)
        if got is _END:
            return
        rows, result = got
        try:
            consume(rows, result)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            failures.append(ChunkFailure(rows, "write", err))
            halt.set()
            return


def run_conveyor(chunks: Iterable[Rows], produce: Callable[[Rows], Any],
                 compute: Callable[[Rows, Any], Any], consume: Callable[[Rows, Any], None],
                 *, queue_depth: int = 1) -> None:
    """Run ``consume(rows, compute(rows, produce(rows)))`` for every chunk, overlapped.

    Parameters
    ----------
    chunks : iterable of (start, stop)
        Row ranges, processed and consumed in this order.
    produce, compute, consume : callables
        The reader stage (own thread), the compute stage (calling thread) and the writer
        stage (own thread).
    queue_depth : int
        Chunks waiting between stages; ``0`` runs everything sequentially in the calling thread.

    Raises
    ------
    ChunkFailure
        The first chunk that failed (see module docstring for what is still consumed).
    """
    if queue_depth < 0:
        raise ValueError(f"queue_depth must be >= 0, got {queue_depth}")
    if queue_depth == 0:
        for rows in chunks:
            item = _stage(rows, "read", produce, rows)
            result = _stage(rows, "reconstruction", compute, rows, item)
            del item
            _stage(rows, "write", consume, rows, result)
        return
    q_in: "queue.Queue" = queue.Queue(queue_depth)
    q_out: "queue.Queue" = queue.Queue(queue_depth)
    halt_read, halt = threading.Event(), threading.Event()
    write_failures: list = []
    threads = [threading.Thread(target=_reader, args=(chunks, produce, q_in, halt_read),
                                name="tomodl-read", daemon=True),
               threading.Thread(target=_writer, args=(consume, q_out, halt, write_failures),
                                name="tomodl-write", daemon=True)]
    for t in threads:
        t.start()
    failure = None
    try:
        failure = _compute_loop(compute, q_in, q_out, halt)
    finally:                        # also on Ctrl-C: reading stops, computed chunks are written
        halt_read.set()
        _put(q_out, _END, halt)
        for t in threads:
            t.join()
    if write_failures:
        raise write_failures[0]
    if failure is not None:
        raise failure


def _compute_loop(compute, q_in, q_out, halt: threading.Event) -> Optional[ChunkFailure]:
    while True:
        got = _get(q_in, halt)
        if got is _END:
            return None
        if isinstance(got, ChunkFailure):
            return got
        rows, item = got
        try:
            result = compute(rows, item)
        except Exception as err:  # noqa: BLE001 - reported as the chunk's failure
            return ChunkFailure(rows, "reconstruction", err)
        del got, item
        if not _put(q_out, (rows, result), halt):
            return None


def _stage(rows: Rows, name: str, func: Callable, *args) -> Any:
    try:
        return func(*args)
    except Exception as err:  # noqa: BLE001 - reported as the chunk's failure
        raise ChunkFailure(rows, name, err) from err
