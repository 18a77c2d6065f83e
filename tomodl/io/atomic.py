# SPDX-License-Identifier: BSD-3-Clause
"""Small helpers that make outputs appear atomically and fail with one clear line.

Every output tomodl writes goes to a temporary name next to the final one and is moved into
place with :func:`os.replace` only once it is complete, so a crash, ``SIGKILL`` or a full disk
never leaves a truncated file under the final name.

Whether an existing path may be written over is decided in one place, :func:`check_replace`:
``--overwrite`` replaces only an output that tomodl wrote (:mod:`tomodl.io.ownership`), and
never the scan, the weights in use, a folder holding either, or the current, home or root
directory.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Tuple, Union

import numpy as np

from tomodl.errors import OutputError
from tomodl.io.ownership import KIND_NAMES, identify, unfinished

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

OVERWRITE_FLAG = "--overwrite"
#: Side files of an output ``<out>``: its working copy, progress record and lock.
PARTIAL, PROGRESS, LOCK = ".partial", ".progress.json", ".lock"
#: Every kind of output tomodl writes (:data:`tomodl.io.ownership.KIND_NAMES`).
OUTPUT_KINDS = ("volume", "try", "scan", "pairs", "weights", "image")
#: What a reconstruction (a volume or the try mode) may replace.
RECON_KINDS = ("volume", "try")


def sidecar(path: PathLike, suffix: str) -> Path:
    """``<path><suffix>``, e.g. ``rec.h5.partial`` for :data:`PARTIAL`."""
    path = Path(path)
    return path.with_name(path.name + suffix)


def aside(path: PathLike) -> Path:
    """``.<name>.old``: where :func:`replace_dir` moves an old folder output while replacing it."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


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


def check_output_name(path: PathLike) -> Path:
    """``path`` as a Path, refusing one that names no file or folder ('', '.', '..', '/')."""
    text = os.fspath(path)
    p = Path(text)
    if not text.strip() or p.name in ("", ".", ".."):
        shown = f"{text!r} (empty or '.')" if text in ("", ".") else repr(text)
        raise OutputError(f"Output path {shown} names no file or folder; give a new name such "
                          "as 'rec.h5' or 'rec_tiff'")
    return p


def _label(item: Any) -> Tuple[Path, str]:
    if isinstance(item, tuple):
        return Path(item[0]), str(item[1])
    return Path(item), "input scan"


def _guard(out: Path, protected: Iterable[Any]) -> None:
    """Refuse an output that is, or holds, a protected path, or a place never replaced."""
    for item in protected:
        inp, what = _label(item)
        if _same(out, inp) or _same(sidecar(out, PARTIAL), inp):
            raise OutputError(f"Output {str(out)!r} is the {what} {str(inp)!r}; tomodl only ever "
                              "reads it, choose a different output path")
        if _holds(out, inp):
            raise OutputError(f"Output {str(out)!r} contains the {what} {str(inp)!r}; writing "
                              "there could delete it, choose a different output path")
    specials = [("the root directory", Path("/"))]
    for what, where in (("your home directory", Path.home), ("the current directory", Path.cwd)):
        with contextlib.suppress(OSError, RuntimeError, KeyError):
            specials.append((what, where()))
    for verb, test in (("is", _same), ("contains", _holds)):
        for what, special in specials:
            if test(out, special):
                raise OutputError(f"Output {str(out)!r} {verb} {what}; tomodl never writes over "
                                  "it, give a new output name such as 'rec_tiff'")


def _holds(folder: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_replace(path: PathLike, *, overwrite: bool, kinds: Sequence[str] = OUTPUT_KINDS,
                  protected: Iterable[Any] = ()) -> None:
    """Decide whether an output may be written at ``path``: return, or raise one-line OutputError.

    The one place where tomodl decides what it may replace.  Refused, with or without
    ``overwrite``: a name that is no file name (''), a path that is or holds one of
    ``protected`` (items are paths, or ``(path, what)`` to name them in the message, e.g.
    ``(weights, "weights folder in use")``; the default name is "input scan"), the current, home
    or root directory or a folder holding one.  An existing ``path`` is replaced only with
    ``overwrite`` and only when :func:`tomodl.io.ownership.identify` finds it is a tomodl output
    of one of ``kinds`` (or empty); the same holds for the working name ``<path>.partial``.

    Before deciding, the stale side files of a finished output (``<path>.progress.json``, the
    lock, a moved-aside old output), left by a run killed after its final rename, are removed
    (:func:`clear_stale`).
    """
    out = check_output_name(path)
    _guard(out, protected)
    clear_stale(out)
    partial = sidecar(out, PARTIAL)
    if os.path.lexists(partial) and not unfinished(partial):
        raise OutputError(f"{str(partial)!r} was not written by tomodl, which keeps unfinished "
                          "outputs under that name; move it away or choose another output path")
    if not os.path.lexists(out):
        return
    kind, why = identify(out)
    if not overwrite:
        what = f" (a tomodl {KIND_NAMES[kind]})" if kind not in (None, "empty") else ""
        raise OutputError(f"Output {str(out)!r} already exists{what}; pass {OVERWRITE_FLAG} "
                          "(overwrite=True) to replace it, or choose another output path")
    if kind == "empty" or kind in kinds:
        return
    if kind is None:
        raise OutputError(f"Output {str(out)!r} exists and was not written by tomodl ({why}); "
                          f"{OVERWRITE_FLAG} only replaces tomodl outputs: move it away or "
                          "choose another output path")
    wanted = " or ".join(KIND_NAMES[k] for k in kinds)
    raise OutputError(f"Output {str(out)!r} is a tomodl {KIND_NAMES[kind]}, not a {wanted}; "
                      f"{OVERWRITE_FLAG} does not replace it, choose another output path")


@contextlib.contextmanager
def temp_then_rename(final: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; fsync it and rename it over ``final`` on success.

    On any exception the temporary is deleted and ``final`` is untouched; an ``OSError`` (disk
    full, permission) becomes :class:`OutputError`.  No ownership check: use it for files inside
    an output that tomodl owns, and :func:`atomic_file` for an output of its own.
    """
    final = Path(final)
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


@contextlib.contextmanager
def atomic_file(final: PathLike, *, overwrite: bool = False,
                kinds: Sequence[str] = OUTPUT_KINDS, protected: Iterable[Any] = ()
                ) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; move it to ``final`` only on success.

    ``final`` is first checked by :func:`check_replace` (``overwrite``, ``kinds``,
    ``protected``).  The caller writes and closes the file at the yielded path; on a clean exit
    it is fsynced and renamed over ``final`` (atomic on POSIX), on any exception it is deleted
    and ``final`` is untouched (:func:`temp_then_rename`).
    """
    check_replace(final, overwrite=overwrite, kinds=kinds, protected=protected)
    with temp_then_rename(final) as tmp:
        yield tmp


def write_atomic(path: PathLike, data: Union[bytes, str]) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`temp_then_rename`."""
    with temp_then_rename(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def replace_dir(src: PathLike, final: PathLike) -> None:
    """Rename the finished folder (or file) ``src`` to ``final``, replacing what is there.

    An existing ``final`` folder is first renamed aside (:func:`aside`) and deleted after the
    rename, so ``final`` is always either the old or the new output; an old folder left aside
    by a kill is removed by the next :func:`clear_stale`.  The caller has checked ``final``
    with :func:`check_replace`.
    """
    src, final = Path(src), Path(final)
    old = None
    if os.path.lexists(final) and (src.is_dir() or final.is_dir()):
        old = aside(final)
        _remove_stale_aside(old)
        os.replace(final, old)
    os.replace(src, final)
    fsync_dir(final.parent)
    if old is not None:
        remove_path(old)


def _remove_stale_aside(old: Path) -> None:
    if not os.path.lexists(old):
        return
    if identify(old)[0] is None:
        raise OutputError(f"{str(old)!r} was not written by tomodl, which moves old outputs "
                          "aside under that name; move it away and rerun")
    remove_path(old)


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
    write_atomic(path, json.dumps(jsonable(obj), indent=1))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(out: PathLike, inputs: Iterable[Any]) -> None:
    """Refuse an output that would replace or delete one of the ``inputs``.

    Raises :class:`OutputError` when ``out`` names no file, when ``out`` (or its ``.partial``
    working name) is the same file as an input (also through symlinks or hard links), when an
    input lies inside ``out`` (a TIFF/Zarr output directory replaced with ``--overwrite`` would
    delete it), or when ``out`` is or holds the current, home or root directory.  Items of
    ``inputs`` are paths or ``(path, what)`` (see :func:`check_replace`).
    """
    _guard(check_output_name(out), inputs)


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
    killed run never leaves a stale lock (a leftover ``.lock`` file is reused, and removed by
    :func:`clear_stale`).  A ``.lock`` that is not empty is not tomodl's and is refused.  Where
    the file system has no ``flock`` (some network mounts), writing goes on without a lock.
    """

    def __init__(self, out_path: Any):
        self.path = sidecar(out_path, LOCK)
        if os.path.lexists(self.path) and (self.path.is_symlink() or not self.path.is_file()
                                           or self.path.stat().st_size > 0):
            raise OutputError(f"{str(self.path)!r} is not a tomodl lock file (tomodl's are empty "
                              "files); move it away or choose another output path")
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


def clear_stale(out: PathLike) -> None:
    """Remove the side files that a run killed after its final rename leaves behind.

    Once ``<out>.partial`` has been renamed to ``out`` the output is complete, so a progress
    record without a partial output, an old output moved :func:`aside` by :func:`replace_dir`
    and the lock file are stale.  They are removed only while no running tomodl holds the lock
    (an aside only when it is a tomodl output).
    """
    out = Path(out)
    progress, partial, old = sidecar(out, PROGRESS), sidecar(out, PARTIAL), aside(out)
    stale = progress.exists() and not os.path.lexists(partial)
    if not (stale or os.path.lexists(old) or os.path.lexists(sidecar(out, LOCK))):
        return
    try:
        held = OutputLock(out)
    except (OutputError, OSError):
        return                          # a run is writing this output, or the lock is not ours
    try:
        if stale and not os.path.lexists(partial):
            logger.info("%s: removing the stale progress record of a finished output", progress)
            remove_path(progress)
        if os.path.lexists(old) and identify(old)[0] is not None:
            remove_path(old)
    finally:
        held.release()
