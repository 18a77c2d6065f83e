# SPDX-License-Identifier: BSD-3-Clause
"""Format-independent part of the volume writers: finished-slice bookkeeping, resume, finalize.

Nothing appears under the final name before every slice is written: data go to
``<final>.partial`` (a file for HDF5, a directory for TIFF and Zarr), the finished slice ranges
are recorded in ``<final>.progress.json`` (replaced atomically after the data are flushed), and
:meth:`VolumeWriter.finalize` renames the partial output to the final name.  The per-format
subclasses and :func:`~tomodl.io.writers.open_writer` are in :mod:`tomodl.io.writers`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from tomodl.errors import OutputError
from tomodl.io.atomic import (PARTIAL, PROGRESS, RECON_KINDS, OutputLock, check_free_space,
                              check_replace, jsonable, output_error, remove_path, replace_dir,
                              sidecar, write_json_atomic)

logger = logging.getLogger(__name__)

#: Provenance keys that may differ between the run that started an output and the run that
#: resumes it (everything else must match, or resuming is refused).
RESUME_IGNORED_KEYS = frozenset({"command", "date", "time", "started", "hostname", "host",
                                 "user", "pid", "elapsed"})
Range = Tuple[int, int]


def _merge(ranges: Iterable[Range]) -> List[Range]:
    out: List[List[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _version() -> str:
    from tomodl import __version__

    return __version__


def _comparable(prov: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in jsonable(dict(prov)).items() if k not in RESUME_IGNORED_KEYS}


def read_progress(out_path: Any) -> Optional[Dict[str, Any]]:
    """The progress record of an interrupted output (``<out>.progress.json``), or None.

    None when there is no partial output, no record, or the record is unreadable.
    """
    partial, progress = sidecar(out_path, PARTIAL), sidecar(out_path, PROGRESS)
    if not (partial.exists() and progress.exists()):
        return None
    try:
        record = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("%s: unreadable progress record, ignored", progress)
        return None
    return record if isinstance(record, dict) else None


def resume_conflicts(record: Mapping[str, Any], fmt: str, shape: Tuple[int, int, int],
                     provenance: Mapping[str, Any]) -> str:
    """What prevents resuming ``record`` with these settings ('' when nothing does).

    Format and shape must be equal, and so must the provenance except the keys in
    :data:`RESUME_IGNORED_KEYS` (and ``tomodl_version`` when absent from ``provenance``).
    """
    mine = {"format": fmt, "shape": [int(s) for s in shape]}
    theirs = {"format": record.get("format"), "shape": record.get("shape")}
    if mine != theirs:
        return f"{theirs} vs {mine}"
    new = _comparable({"tomodl_version": _version(), **dict(provenance)})
    old = _comparable(record.get("provenance", {}))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"provenance keys {diff}" if diff else ""


class VolumeWriter:
    """Base class: bookkeeping of finished slices, resume, finalize and abort.

    Subclasses implement ``_create``, ``_reopen``, ``_write_block``, ``_sync``, ``_close`` and
    ``_write_provenance`` for one format.  Use :func:`open_writer` to construct one.
    """

    fmt: ClassVar[str] = ""
    is_dir: ClassVar[bool] = False

    def __init__(self, out_path: Any, shape: Tuple[int, int, int], *, provenance: Mapping,
                 overwrite: bool = False, resume: Any = False, inputs: Iterable[Any] = ()):
        self.path = Path(out_path)
        self.partial = sidecar(out_path, PARTIAL)
        self.progress_path = sidecar(out_path, PROGRESS)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be 3 positive ints (n_slices, ny, nx), got {shape!r}")
        self.provenance = {"tomodl_version": _version(), **jsonable(dict(provenance))}
        self.overwrite = bool(overwrite)
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
        self._done: List[Range] = []
        self._state = "open"
        self._lock = None
        self.inputs = list(inputs)
        self._check_replace()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = OutputLock(self.path)
            if not (resume and self._try_resume(strict=resume is True)):
                self._start_fresh()
        except OSError as err:
            self._release()
            raise output_error(self.partial, err, "create") from err
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _try_resume(self, strict: bool = True) -> bool:
        record = read_progress(self.path)
        if record is None:
            logger.info("%s: nothing to resume, starting a new output", self.path)
            return False
        conflicts = resume_conflicts(record, self.fmt, self.shape, self.provenance)
        if conflicts and strict:
            raise OutputError(f"Cannot resume {str(self.partial)!r}: it was started with "
                              f"different settings ({conflicts}); pass --overwrite to start "
                              "again")
        if conflicts:
            logger.warning("%s: the partial output was started with different settings (%s); "
                           "starting again", self.partial, conflicts)
            return False
        try:
            self._reopen()
        except Exception as err:  # noqa: BLE001 - a damaged partial output is simply redone
            logger.warning("%s: cannot reopen the partial output (%s); starting again",
                           self.partial, err)
            self._close()
            return False
        self._done = _merge(tuple(r) for r in record.get("done", []))
        logger.info("%s: resuming, %d of %d slices already written", self.path,
                    self.n_done, self.shape[0])
        return True

    def _start_fresh(self) -> None:
        remove_path(self.partial)
        remove_path(self.progress_path)
        check_free_space(self.path.parent, 4 * int(np.prod(self.shape)), self.path)
        try:
            self._create()
            self._write_provenance()
            self._sync()
        except OSError:
            self._close()
            remove_path(self.partial)
            raise
        self._save_progress()

    def _save_progress(self) -> None:
        write_json_atomic(self.progress_path, {
            "format": self.fmt, "shape": list(self.shape), "dtype": "float32",
            "provenance": self.provenance, "done": [list(r) for r in self._done]})

    # -- public API --------------------------------------------------------------------------
    @property
    def done(self) -> Tuple[Range, ...]:
        """Finished slice ranges ``((start, stop), ...)``, merged and sorted."""
        return tuple(self._done)

    @property
    def missing(self) -> Tuple[Range, ...]:
        """Slice ranges still to be written."""
        out, pos = [], 0
        for a, b in self._done:
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
        if pos < self.shape[0]:
            out.append((pos, self.shape[0]))
        return tuple(out)

    @property
    def n_done(self) -> int:
        """Number of finished slices."""
        return sum(b - a for a, b in self._done)

    @property
    def complete(self) -> bool:
        """True when every slice has been written."""
        return self.n_done == self.shape[0]

    def write(self, start: int, block) -> None:
        """Write ``block`` (``(k, ny, nx)``, cast to float32) at slices ``start .. start+k``.

        The data are flushed before the range is recorded as done, so after a crash a resumed
        writer never trusts slices that did not reach the disk.
        """
        if self._state != "open":
            raise RuntimeError(f"writer for {self.path} is {self._state}")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 2:
            block = block[None]
        start = int(start)
        if block.shape[1:] != self.shape[1:] or start < 0 or start + len(block) > self.shape[0]:
            raise ValueError(f"block of shape {block.shape} at slice {start} does not fit the "
                             f"volume {self.shape}")
        try:
            self._write_block(start, block)
            self._sync()
        except OSError as err:
            raise output_error(self.partial, err) from err
        self._done = _merge(self._done + [(start, start + len(block))])
        self._save_progress()

    def finalize(self) -> Path:
        """Rename the complete output to its final name and return that path."""
        if self._state == "finalized":
            return self.path
        if not self.complete:
            raise OutputError(f"Cannot finalize {str(self.path)!r}: {self.n_done} of "
                              f"{self.shape[0]} slices written, missing {list(self.missing)}; "
                              "rerun with --resume to finish it")
        self._check_replace()
        try:
            self._write_provenance()
            self._sync()
            self._close()
            self._move_into_place()
        except OSError as err:
            raise output_error(self.path, err, "finalize") from err
        remove_path(self.progress_path)
        self._state = "finalized"
        self._release()
        logger.info("wrote %s (%s %s)", self.path, self.fmt, self.shape)
        return self.path

    def close(self) -> None:
        """Release file handles and keep the partial output for a later ``resume=True``."""
        if self._state == "open":
            self._close()
            self._state = "closed"
        self._release()

    def abort(self) -> None:
        """Close and delete the partial output and its progress record."""
        self._close()
        remove_path(self.partial)
        remove_path(self.progress_path)
        if self._state != "finalized":
            self._state = "aborted"
        self._release()

    def __enter__(self) -> "VolumeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_replace(self) -> None:
        check_replace(self.path, overwrite=self.overwrite, kinds=RECON_KINDS,
                      protected=self.inputs)

    # -- helpers for subclasses ---------------------------------------------------------------
    def _move_into_place(self) -> None:
        replace_dir(self.partial, self.path)

    def _prov_json(self) -> str:
        return json.dumps(self.provenance, sort_keys=True)

    def _create(self) -> None:
        raise NotImplementedError

    def _reopen(self) -> None:
        raise NotImplementedError

    def _write_block(self, start: int, block: np.ndarray) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _write_provenance(self) -> None:
        raise NotImplementedError
