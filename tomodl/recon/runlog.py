# SPDX-License-Identifier: BSD-3-Clause
"""Warnings once per run: a file reconstruction calls the same stages on every chunk, and a
warning about the data (dead detector pixels, values below the transmission floor, a doubtful
axis) would otherwise be printed once per chunk.

:func:`once_per_run` lets each warning through the first time (per logger and message format)
and, at the end of the run, says how many more times it came.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Dict, Iterator, Tuple

#: Loggers whose warnings can come once per chunk (besides every ``tomodl.*`` logger that
#: exists when the run starts); a logger's filter sees only the records logged on it.
RUN_LOGGERS = ("tomodl.io._hdf", "tomodl.io.dxchange", "tomodl.io.nexus",
               "tomodl.models.inference", "tomodl.models.releases", "tomodl.recon.center",
               "tomodl.recon.denoising", "tomodl.recon.fbp", "tomodl.recon.geometry",
               "tomodl.recon.preprocess", "tomodl.recon.stages")

logger = logging.getLogger(__name__)


class OncePerRun(logging.Filter):
    """Pass each warning (logger name and message format) once; count the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.counts: Dict[Tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        with self._lock:
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
        return n == 0


@contextlib.contextmanager
def once_per_run() -> Iterator[OncePerRun]:
    """Within the block, each tomodl warning is logged once; repeats are summed up at the end."""
    names = set(RUN_LOGGERS) | {n for n in logging.root.manager.loggerDict
                                if n.startswith("tomodl.")}
    loggers = [logging.getLogger(n) for n in sorted(names)]
    once = OncePerRun()
    for log in loggers:
        log.addFilter(once)
    try:
        yield once
    finally:
        for log in loggers:
            log.removeFilter(once)
        for (name, msg), n in once.counts.items():
            if n > 1:
                logger.info("the warning %r of %s came %d more times in this run (once per "
                            "chunk); shown once", msg if len(msg) < 50 else msg[:47] + "...",
                            name, n - 1)
