# SPDX-License-Identifier: BSD-3-Clause
"""``--overwrite`` replaces only what tomodl wrote, never the inputs (issue 11, data loss).

Every test puts something of the user's where an output would go and checks that it survives,
with one ``Error:`` line that says why and what to do.
"""
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tomodl.cli import main
from tomodl.errors import OutputError
from tomodl.io import write_png
from tomodl.io.atomic import check_replace
from tomodl.io.ownership import identify
from conftest import save_tiny_unet


def run(*args):
    """``tomodl ARGS`` in-process (plain FBP, the axis given, no progress bar)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def recon(scan, *args):
    return run("recon", scan, "--algorithm", "fbp", "--rotation-axis", 17.3, "--no-progress",
               *args)


def error_line(res):
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "precious.txt").write_text("the user's notes")
    return path


def intact(folder: Path) -> bool:
    return (folder / "precious.txt").read_text() == "the user's notes"


# -- the reported cases ---------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_tomodl_did_not_write(tiny_scan):
    mine = user_folder(tiny_scan.path.parent / "mydata")
    msg = error_line(recon(tiny_scan.path, "--out-path", mine, "--overwrite"))
    assert "not written by tomodl" in msg and "move it away" in msg
    assert intact(mine) and sorted(os.listdir(mine)) == ["precious.txt"]
    msg = error_line(recon(tiny_scan.path, "--out-path", mine, "--overwrite",
                           "--reconstruction-type", "try"))
    assert "not written by tomodl" in msg and intact(mine)


def test_overwrite_never_replaces_the_weights_in_use(tiny_scan, tmp_path):
    weights = save_tiny_unet(tmp_path / "W")
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    res = run("recon", tiny_scan.path, "--algorithm", "fbp+unet", "--model", weights,
              "--rotation-axis", 17.3, "--no-progress", "--out-path", weights, "--overwrite")
    assert "weights folder in use" in error_line(res)
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before
    # nor another weights folder: tomodl wrote it, but it is no reconstruction
    msg = error_line(recon(tiny_scan.path, "--out-path", weights, "--overwrite"))
    assert "is a tomodl weights folder" in msg
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before


@pytest.mark.parametrize("fmt, name", [("h5", "mine.h5"), ("zarr", "mine.zarr")])
def test_overwrite_refuses_user_files_of_every_format(tiny_scan, fmt, name):
    target = tiny_scan.path.parent / name
    if fmt == "h5":
        with h5py.File(target, "w") as f:         # an HDF5 file, not written by tomodl
            f["data"] = np.arange(3)
    else:
        user_folder(target)
    before = sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()
    msg = error_line(recon(tiny_scan.path, "--save-format", fmt, "--out-path", target,
                           "--overwrite"))
    assert "not written by tomodl" in msg
    assert (sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()) == before


@pytest.mark.parametrize("fmt", ["tiff", "h5", "zarr", "try"])
def test_overwrite_replaces_what_tomodl_wrote(tiny_scan, fmt):
    out = tiny_scan.path.parent / f"rec_{fmt}"
    extra = (["--reconstruction-type", "try", "--center-search-width", 1] if fmt == "try"
             else ["--save-format", fmt])
    assert recon(tiny_scan.path, "--out-path", out, *extra).exit_code == 0
    assert identify(out)[0] == ("try" if fmt == "try" else "volume")
    assert "already exists (a tomodl" in error_line(recon(tiny_scan.path, "--out-path", out,
                                                         *extra))
    res = recon(tiny_scan.path, "--out-path", out, "--overwrite", *extra)
    assert res.exit_code == 0, res.stderr
    if out.is_dir():                 # a note of the user's inside makes the folder the user's
        (out / "precious.txt").write_text("the user's notes")
        assert "holds 'precious.txt'" in error_line(
            recon(tiny_scan.path, "--out-path", out, "--overwrite", *extra))
        assert intact(out)
    from tomodl.recon.preview import preview_path      # the default quick look (issue 14)

    quick_look = [] if fmt == "try" else [preview_path(out).name]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["tiny.h5", out.name]
                                                                  + quick_look)


def test_overwrite_never_touches_the_scan_its_folder_or_special_folders(tiny_scan, tmp_path,
                                                                         monkeypatch):
    scan = tiny_scan.path
    assert "contains the input scan" in error_line(recon(scan, "--out-path", scan.parent,
                                                         "--overwrite"))
    assert "contains the input scan" in error_line(
        recon(scan, "--out-path", scan.parent.parent, "--overwrite"))
    work = user_folder(tmp_path / "work")
    monkeypatch.chdir(work)
    with pytest.raises(OutputError, match="is the current directory"):
        check_replace(work, overwrite=True)
    with pytest.raises(OutputError, match="contains the current directory"):
        check_replace(tmp_path, overwrite=True)
    home = user_folder(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="is your home directory"):
        check_replace(Path("~").expanduser(), overwrite=True)
    with pytest.raises(OutputError, match="names no file or folder"):
        check_replace("/", overwrite=True)
    (tmp_path / "top").symlink_to("/")
    with pytest.raises(OutputError, match="is the root directory"):
        check_replace(tmp_path / "top", overwrite=True)
    assert intact(work) and intact(home) and scan.is_file()


def test_an_empty_folder_may_be_filled(tiny_scan):
    empty = tiny_scan.path.parent / "empty"
    empty.mkdir()
    assert recon(tiny_scan.path, "--out-path", empty, "--overwrite").exit_code == 0
    assert len(list(empty.glob("recon_*.tiff"))) == 3


def test_tomodl_working_names_held_by_the_user_are_refused(tiny_scan):
    out = tiny_scan.path.parent / "rec"
    partial = user_folder(tiny_scan.path.parent / "rec.partial")
    msg = error_line(recon(tiny_scan.path, "--out-path", out))
    assert "rec.partial' was not written by tomodl" in msg and intact(partial)
    os.rename(partial, tiny_scan.path.parent / "kept")
    lock = tiny_scan.path.parent / "rec.lock"
    lock.write_text("a file of the user's")
    assert "not a tomodl lock file" in error_line(recon(tiny_scan.path, "--out-path", out))
    assert lock.read_text() == "a file of the user's" and not out.exists()


# -- every other writer that takes overwrite ----------------------------------------------------
def test_simulate_and_pairs_refuse_user_files(tmp_path):
    from tomodl.sim.pairs import make_pairs
    from tomodl.sim.scan import simulate_scan

    mine = tmp_path / "mine.h5"
    mine.write_text("not even HDF5")
    res = CliRunner().invoke(main, ["simulate", "foam", str(mine), "--size", "21", "--slices",
                                    "1", "--angles", "8", "--no-progress", "--overwrite"])
    assert res.exit_code == 2 and "not written by tomodl" in res.stderr + res.output
    with pytest.raises(OutputError, match="not written by tomodl"):
        make_pairs([tmp_path / "any.h5"], mine, overwrite=True)
    assert mine.read_text() == "not even HDF5"
    from tomodl.sim.scan import ScanGeometry

    geo = ScanGeometry(n_det=21, n_rows=1, n_angles=8)
    sim = simulate_scan(tmp_path / "sim.h5", geometry=geo)
    assert identify(sim)[0] == "scan"
    simulate_scan(sim, geometry=geo, seed=1, overwrite=True)         # its own output: replaced
    with pytest.raises(OutputError, match="is the input scan"):
        make_pairs([sim], sim, overwrite=True)


def test_save_weights_refuses_a_folder_with_files_of_the_users(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    with pytest.raises(OutputError, match="not written by tomodl"):
        save_tiny_unet(folder, overwrite=True)
    assert (folder / "config.json").read_text() == '{"mine": true}'
    assert sorted(os.listdir(folder)) == ["config.json"]
    mine = save_tiny_unet(tmp_path / "ok")
    save_tiny_unet(mine, overwrite=True)                            # tomodl's own: replaced


def test_images_replace_only_tomodl_images(tmp_path):
    from PIL import Image

    from tomodl.recon.center import write_center

    img = np.linspace(0, 1, 15 * 15, dtype=np.float32).reshape(15, 15)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(photo)
    before = photo.read_bytes()
    with pytest.raises(OutputError, match="not written by tomodl"):
        write_png(photo, img, overwrite=True)
    assert photo.read_bytes() == before
    write_png(tmp_path / "p.png", img)
    write_png(tmp_path / "p.png", img, overwrite=True)               # its own preview
    folder = tmp_path / "centers"
    folder.mkdir()
    sino = np.ones((8, 1, 15), np.float32)
    theta = np.linspace(0, np.pi, 8, endpoint=False)
    write_center(sino, theta, folder, (7, 8, 1))
    write_center(sino, theta, folder, (7, 8, 1), overwrite=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "center_0007.00.png")
    with pytest.raises(OutputError, match="not written by tomodl"):
        write_center(sino, theta, folder, (7, 8, 1), overwrite=True)


# -- an empty output name (issue 11: "PosixPath('.') has an empty name") -----------------------
@pytest.mark.parametrize("name", ["", "."])
def test_an_empty_output_path_is_one_clear_error(tiny_scan, name):
    msg = error_line(recon(tiny_scan.path, "--out-path", name))
    assert "names no file or folder" in msg and "rec.h5" in msg
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    with pytest.raises(OutputError, match="names no file or folder"):
        reconstruct_file(tiny_scan.path, ReconConfig(algorithm="fbp", center=17.3,
                                                     out_path=name))
