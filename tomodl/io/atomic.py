# SPDX-License-Identifier: BSD-3-Clause
"""Small helpers that make outputs appear atomically and fail with one clear line.

Every output tomodl writes goes to a temporary name next to the final one and is moved into
place with :func:`os.replace` only once it is complete, so a crash, ``SIGKILL`` or a full disk
never leaves a truncated file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import numpy as np

from tomodl.errors import OutputError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

OVERWRITE_FLAG = "--overwrite"


def one_line(text: str) -> str:
    """Collapse whitespace and newlines so that a message prints on one line."""
    return " ".join(str(text).split())


def output_error(path: PathLike, err: OSError, action: str = "write") -> OutputError:
    """Turn an ``OSError`` met while writing ``path`` into a one-line :class:`OutputError`."""
    code = getattr(err, "errno", None)
    if code is None and "No space left" in str(err):  # HDF5 errors carry errno in the text
        code = errno.ENOSPC
    if code == errno.ENOSPC:
        fix = "free disk space or choose another output directory"
        why = "no space left on device"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a directory you can write to"
        why = "permission denied" if code != errno.EROFS else "read-only file system"
    else:
        fix = "check the output path and the disk"
        why = err.strerror or str(err)
    return OutputError(one_line(f"Cannot {action} output {str(path)!r}: {why}; {fix}"))


def fsync_dir(directory: PathLike) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_path(path: PathLike) -> None:
    """Delete a file or directory tree if it exists (never follows a symlinked directory)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def refuse_existing(path: PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputError` when ``path`` exists and ``overwrite`` is false."""
    if not overwrite and os.path.lexists(path):
        raise OutputError(
            f"Output {str(path)!r} already exists; pass {OVERWRITE_FLAG} (overwrite=True) to "
            "replace it, or choose another output path"
        )


@contextlib.contextmanager
def atomic_file(final: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; move it to ``final`` only on success.

    The caller writes and closes the file at the yielded path.  On a clean exit the file is
    fsynced and renamed over ``final`` (atomic on POSIX); on any exception it is deleted and
    ``final`` is untouched.  An ``OSError`` (disk full, permission) becomes :class:`OutputError`.
    """
    final = Path(final)
    refuse_existing(final, overwrite)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        remove_path(tmp)
        raise output_error(final, err) from err
    except BaseException:
        remove_path(tmp)
        raise


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a fsynced temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(jsonable(obj), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        remove_path(tmp)
        raise output_error(path, err) from err


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(out: PathLike, inputs: Iterable[PathLike]) -> None:
    """Refuse an output that would replace or delete one of the ``inputs``.

    Raises :class:`OutputError` when ``out`` (or its ``.partial`` working name) is the same file
    as an input (also through symlinks or hard links), or when an input lies inside ``out``
    (a TIFF/Zarr output directory replaced with ``--overwrite`` would delete it).
    """
    out = Path(out)
    candidates = [out, out.with_name(out.name + ".partial")]
    for inp in inputs:
        inp = Path(inp)
        for cand in candidates:
            if _same(cand, inp):
                raise OutputError(
                    f"Output {str(out)!r} is the input scan {str(inp)!r}; the input is only ever "
                    "read, choose a different output path"
                )
        if inp.resolve().is_relative_to(out.resolve()):
            raise OutputError(
                f"Output {str(out)!r} contains the input scan {str(inp)!r}; writing there could "
                "delete it, choose a different output path"
            )


def check_free_space(directory: PathLike, nbytes: int, path: PathLike) -> None:
    """Raise :class:`OutputError` early when ``directory`` has less than ``nbytes`` free."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < nbytes:
        raise OutputError(
            f"Cannot write output {str(path)!r}: it needs {nbytes / 1e9:.2f} GB but only "
            f"{free / 1e9:.2f} GB are free in {str(directory)!r}; free disk space or choose "
            "another output directory"
        )


class OutputLock:
    """An exclusive advisory lock on ``<out>.lock`` held while an output is being written.

    Two processes writing one output would corrupt its partial data; the second one gets an
    :class:`~tomodl.errors.OutputError` instead.  ``flock`` locks die with their process, so a
    killed run never leaves a stale lock (a leftover ``.lock`` file is reused).  Where the file
    system has no ``flock`` (some network mounts), writing goes on without a lock.
    """

    def __init__(self, out_path: Any):
        self.path = Path(out_path).with_name(Path(out_path).name + ".lock")
        for _ in range(10):     # retry when the file was deleted by its releasing holder
            self._fh = open(self.path, "a+")
            if not self._lock(out_path) or self._still_linked():
                return
            self._fh.close()
        raise OutputError(f"Cannot lock {str(self.path)!r}: other processes keep replacing it; "
                          "check that no other tomodl run writes this output")

    def _lock(self, out_path: Any) -> bool:
        try:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise OutputError(
                f"Output {str(out_path)!r} is being written by another process (it holds "
                f"{str(self.path)!r}); wait for it to finish or choose another output path"
            ) from None
        except (ImportError, OSError) as err:
            logger.warning("%s: no file lock (%s); do not start two runs on one output",
                           self.path, err)
            return False
        return True

    def _still_linked(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Delete the lock file and unlock (closing the file drops the lock)."""
        if self._fh.closed:
            return
        remove_path(self.path)
        self._fh.close()
