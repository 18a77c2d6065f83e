# SPDX-License-Identifier: BSD-3-Clause
"""Volume writers: round trips, provenance, atomicity, resume after SIGKILL, overwrite rules."""
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import tomodl
from tomodl.errors import OutputError
from tomodl.io import (SAVE_FORMATS, check_output_path, open_writer, read_volume, write_png,
                       write_volume)

SHAPE = (7, 9, 11)  # odd sizes, non-square slices
PROV = {"command": "tomodl recon scan.h5 --center 4.5", "algorithm": "fbp+resattunet",
        "center": 4.5, "filter": "shepp", "sparse_factor": 4,
        "model": {"name": "resattunet", "sha256": "ab" * 32},
        "input": {"file": "/data/scan.h5", "size": 1234, "mtime": 1.5}}
OUT_NAME = {"h5": "rec.h5", "tiff": "rec_tiff", "zarr": "rec.zarr"}


@pytest.fixture
def vol():
    return np.random.default_rng(3).random(SHAPE).astype(np.float32)


def read_back(fmt, path):
    return read_volume(path, fmt)


def provenance_of(fmt, path):
    path = Path(path)
    if fmt == "h5":
        with h5py.File(path, "r") as f:
            grp = f[f"/process/tomodl-{tomodl.__version__}"]
            prov = json.loads(f.attrs["provenance"])
            assert f.attrs["axes"] == "z:y:x" and f.attrs["command"] == prov["command"]
            assert grp.attrs["center"] == 4.5 and json.loads(grp.attrs["model"]) == PROV["model"]
            assert f["/exchange/data"].chunks == (1,) + SHAPE[1:]
            return prov
    if fmt == "tiff":
        import tifffile

        with tifffile.TiffFile(path / "recon_00000.tiff") as tif:
            assert json.loads(tif.pages[0].description)["center"] == 4.5
        return json.loads((path / "provenance.json").read_text())
    import zarr

    attrs = zarr.open_array(store=str(path), mode="r").attrs
    assert attrs["axes"] == "z:y:x"
    return dict(attrs["provenance"])


@pytest.mark.parametrize("fmt", sorted(SAVE_FORMATS))
def test_round_trip_with_provenance(tmp_path, vol, fmt):
    out = write_volume(tmp_path / OUT_NAME[fmt], vol, fmt, provenance=PROV)
    np.testing.assert_array_equal(read_back(fmt, out), vol)
    prov = provenance_of(fmt, out)
    assert prov["tomodl_version"] == tomodl.__version__
    assert {k: prov[k] for k in PROV} == PROV
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUT_NAME[fmt]]  # nothing left over


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"choose one of \['h5', 'tiff', 'zarr'\]"):
        open_writer("png", tmp_path / "x", SHAPE, provenance={})


@pytest.mark.parametrize("fmt", sorted(SAVE_FORMATS))
def test_abort_and_exception_leave_no_final_output(tmp_path, vol, fmt):
    out = tmp_path / OUT_NAME[fmt]
    w = open_writer(fmt, out, SHAPE, provenance=PROV)
    w.write(0, vol[:3])
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(fmt, out, SHAPE, provenance=PROV) as w:
            w.write(0, vol[:3])
            raise RuntimeError("boom")
    assert not out.exists() and w.partial.exists()  # kept for --resume
    with pytest.raises(OutputError, match="3 of 7 slices written"):
        open_writer(fmt, out, SHAPE, provenance=PROV, resume=True).finalize()
    assert not out.exists()


@pytest.mark.parametrize("fmt", sorted(SAVE_FORMATS))
def test_resume_after_sigkill(tmp_path, vol, fmt):
    out = tmp_path / OUT_NAME[fmt]
    np.save(tmp_path / "vol.npy", vol)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from tomodl.io import open_writer
        vol = np.load({str(tmp_path / 'vol.npy')!r})
        w = open_writer({fmt!r}, {str(out)!r}, {SHAPE!r}, provenance={PROV!r})
        w.write(0, vol[0:2]); w.write(4, vol[4:6])
        w._write_block(2, vol[2:4] * 0 + 99)   # data reached the file, never recorded as done
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    prov = dict(PROV, command="tomodl recon scan.h5 --center 4.5 --resume")  # may differ
    w = open_writer(fmt, out, SHAPE, provenance=prov, resume=True)
    assert w.done == ((0, 2), (4, 6)) and w.missing == ((2, 4), (6, 7))
    for a, b in w.missing:
        w.write(a, vol[a:b])
    w.finalize()
    np.testing.assert_array_equal(read_back(fmt, out), vol)
    assert provenance_of(fmt, out)["command"].endswith("--resume")
    assert not w.progress_path.exists() and not w.partial.exists()


def test_resume_refuses_different_settings(tmp_path, vol):
    out = tmp_path / "rec.h5"
    w = open_writer("h5", out, SHAPE, provenance=PROV)
    w.write(0, vol[:2])
    w.close()
    with pytest.raises(OutputError, match=r"provenance keys \['center'\].*--overwrite"):
        open_writer("h5", out, SHAPE, provenance=dict(PROV, center=5.0), resume=True)
    with pytest.raises(OutputError, match="different settings"):
        open_writer("h5", out, (8,) + SHAPE[1:], provenance=PROV, resume=True)
    fresh = open_writer("h5", out, SHAPE, provenance=dict(PROV, center=5.0))  # no resume
    assert fresh.done == ()
    fresh.abort()


@pytest.mark.parametrize("fmt", sorted(SAVE_FORMATS))
def test_no_overwrite_without_flag(tmp_path, vol, fmt):
    out = write_volume(tmp_path / OUT_NAME[fmt], vol, fmt, provenance=PROV)
    with pytest.raises(OutputError) as err:
        open_writer(fmt, out, SHAPE, provenance=PROV)
    assert "--overwrite" in str(err.value) and str(out) in str(err.value)
    w = open_writer(fmt, out, SHAPE, provenance=PROV, overwrite=True)
    w.write(0, vol[::-1])
    np.testing.assert_array_equal(read_back(fmt, out), vol)  # old output intact until finalize
    w.finalize()
    np.testing.assert_array_equal(read_back(fmt, out), vol[::-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUT_NAME[fmt]]


def test_check_output_path(tmp_path):
    scan = tmp_path / "data" / "scan.h5"
    scan.parent.mkdir()
    scan.write_bytes(b"x")
    (tmp_path / "link.h5").symlink_to(scan)
    os.link(scan, tmp_path / "hard.h5")
    partial_named = tmp_path / "data" / "rec.h5.partial"  # the writer's working name
    partial_named.write_bytes(b"y")
    for out, inp in ((scan, scan), (tmp_path / "link.h5", scan), (tmp_path / "hard.h5", scan),
                     (tmp_path / "data", scan), (tmp_path, scan),
                     (tmp_path / "data" / "rec.h5", partial_named)):
        with pytest.raises(OutputError, match="input scan") as err:
            check_output_path(out, [inp])
        assert "\n" not in str(err.value)
    check_output_path(tmp_path / "data" / "rec.h5", [scan])
    with pytest.raises(OutputError, match="is the input scan"):
        open_writer("h5", scan, SHAPE, provenance={}, inputs=[scan], overwrite=True)


def test_disk_full_and_unwritable(tmp_path, vol, monkeypatch):
    out = tmp_path / "rec.h5"
    w = open_writer("h5", out, SHAPE, provenance=PROV)

    def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(OutputError) as err:
        w.write(0, vol[:3])
    assert str(err.value) == (f"Cannot write output {str(w.partial)!r}: no space left on device; "
                              "free disk space or choose another output directory")
    assert w.done == () and not out.exists()
    w.abort()
    monkeypatch.undo()
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 100})())
    with pytest.raises(OutputError, match="needs 0.00 GB but only 0.00 GB are free"):
        open_writer("tiff", tmp_path / "t", SHAPE, provenance=PROV)
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(OutputError, match="Cannot create output") as err:
        open_writer("h5", blocker / "rec.h5", SHAPE, provenance=PROV)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_write_validates_blocks(tmp_path, vol):
    w = open_writer("zarr", tmp_path / "r.zarr", SHAPE, provenance=PROV)
    with pytest.raises(ValueError, match="does not fit"):
        w.write(6, vol[:2])
    with pytest.raises(ValueError, match="does not fit"):
        w.write(0, vol[:, :3])
    w.write(6, vol[6])  # a single 2-D slice
    assert w.done == ((6, 7),)
    w.abort()


def test_write_png(tmp_path):
    from PIL import Image

    img = np.linspace(0, 1, 9 * 13, dtype=np.float32).reshape(9, 13)
    img[0, 0], img[1, 1] = 1e6, np.nan  # a hot pixel does not wreck the scaling
    path = write_png(tmp_path / "p.png", img)
    arr = np.asarray(Image.open(path))
    assert arr.shape == (9, 13) and arr.dtype == np.uint8
    assert arr[0, 0] == 255 and arr[1, 1] == 0 and arr[-1, -1] == 255 and arr[0, 1] == 0
    assert 100 < arr[4, 6] < 155
    with pytest.raises(OutputError, match="--overwrite"):
        write_png(path, img)
    write_png(path, img, vmin=0, vmax=2, overwrite=True)
    assert np.asarray(Image.open(path))[4, 6] < 80


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (the test then drops the lock by hand)."""


def die(w):
    """What the kernel does to a killed writer: its lock is dropped, its files stay."""
    w._lock._fh.close()


@pytest.mark.parametrize("fmt", sorted(SAVE_FORMATS))
def test_kill_after_the_final_rename_leaves_a_self_evident_complete_output(tmp_path, vol, fmt,
                                                                           monkeypatch):
    from tomodl.io import volume_writer

    out = tmp_path / OUT_NAME[fmt]
    real = volume_writer.remove_path

    def die_at_the_clean_up(path):           # the final rename has happened
        if Path(path).name.endswith(".progress.json") and out.exists():
            raise Killed
        real(path)

    monkeypatch.setattr(volume_writer, "remove_path", die_at_the_clean_up)
    w = open_writer(fmt, out, SHAPE, provenance=PROV)
    w.write(0, vol)
    with pytest.raises(Killed):
        w.finalize()
    die(w)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, out.name + ".lock", out.name + ".progress.json"])
    # the next run (same settings, resume) sees a finished output and clears the stale files
    with pytest.raises(OutputError) as err:
        open_writer(fmt, out, SHAPE, provenance=PROV, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    assert "already exists (a tomodl reconstructed volume)" in str(err.value)
    np.testing.assert_array_equal(read_back(fmt, out), vol)


def test_kill_while_a_folder_output_is_replaced_resumes_and_cleans_up(tmp_path, vol,
                                                                     monkeypatch):
    out = write_volume(tmp_path / "rec_tiff", vol, "tiff", provenance=PROV)
    w = open_writer("tiff", out, SHAPE, provenance=PROV, overwrite=True)
    w.write(0, vol[::-1])
    real = os.replace

    def dies_before_the_new_output_is_in_place(src, dst):
        if Path(dst) == out:         # the old output is aside, the new one not yet in place
            raise Killed
        real(src, dst)

    monkeypatch.setattr(os, "replace", dies_before_the_new_output_is_in_place)
    with pytest.raises(Killed):
        w.finalize()
    die(w)
    monkeypatch.undo()
    assert not out.exists() and list(tmp_path.glob(".rec_tiff.old*"))     # the old one, aside
    w = open_writer("tiff", out, SHAPE, provenance=PROV, overwrite=True, resume=True)
    assert w.complete                            # resumed: every slice was already written
    w.finalize()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec_tiff"]
    np.testing.assert_array_equal(read_back("tiff", out), vol[::-1])


def test_every_temporary_then_rename_write_fsyncs_and_cleans_up(tmp_path, monkeypatch):
    """Issue 11: the six copies of temp-file-then-rename had different guarantees; all now go
    through tomodl.io.atomic: fsynced before the rename, temporary removed on failure, the
    previous file intact, one OutputError line."""
    import torch

    from conftest import save_tiny_unet
    from tomodl.training.checkpoint import save_checkpoint
    from tomodl.training.figures import plot_loss, write_history

    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 2.0, "lr": 1e-3, "seconds": 1.0,
           "throughput": 5.0}
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    parts = (net, opt, torch.optim.lr_scheduler.StepLR(opt, 1),
             torch.amp.GradScaler("cpu", enabled=False))
    writers = {
        "h": lambda: write_history(tmp_path / "h" / "metrics.csv", [row]),
        "f": lambda: plot_loss([row], tmp_path / "f" / "loss.png"),
        "c": lambda: save_checkpoint(tmp_path / "c", 1, *parts, {}, keep=2),
        "w": lambda: save_tiny_unet(tmp_path / "w", overwrite=True),
        "t": lambda: write_volume(tmp_path / "t" / "rec", np.ones((1, 3, 3)), "tiff",
                                  provenance=PROV, overwrite=True),
        "p": lambda: write_png(tmp_path / "p" / "a.png", np.eye(3), overwrite=True),
    }
    for name, write in writers.items():
        folder = tmp_path / name
        folder.mkdir()
        write()                                               # a first, good output
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(OutputError, match="no space left on device") as err:
            write()
        monkeypatch.undo()
        assert "\n" not in str(err.value), name
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert after == before, name                # old files intact, no temporary left
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name], name
