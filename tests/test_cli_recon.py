# SPDX-License-Identifier: BSD-3-Clause
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

import tomodl
from tomodl.cli import main
from tomodl.io import read_dx
from tomodl.recon.preprocess import minus_log, normalize
from conftest import save_tiny_unet


def run(*args):
    """``tomodl ARGS`` in-process; ``recon`` runs plain FBP unless ``--algorithm`` is given (the
    default algorithm, fbp+resattunet, is tested in test_releases.py)."""
    args = [str(a) for a in args]
    if args and args[0] == "recon" and "--algorithm" not in args:
        args[1:1] = ["--algorithm", "fbp"]
    return CliRunner().invoke(main, args)


def expected(scan, center, **kw):
    proj, flat, dark, theta = read_dx(scan.path)
    kw.setdefault("algorithm", "fbp")
    return tomodl.recon(minus_log(normalize(proj, flat, dark)), theta, center, **kw)


def one_line_error(res):
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def test_help_and_version():
    assert "recon" in run("--help").output
    res = run("recon", "--help")
    assert res.exit_code == 0 and "--rotation-axis" in res.output and "shepp" in res.output
    assert tomodl.__version__ in run("--version").output


def test_full_run_writes_tiffs_that_match_the_api(tiny_scan):
    out = tiny_scan.path.with_name("tiny_rec")
    res = run("recon", tiny_scan.path, "--rotation-axis", 17.3, "--no-progress")
    assert res.exit_code == 0, res.output + res.stderr
    assert f"Output: {out}" in res.output
    files = sorted(out.glob("recon_*.tiff"))
    assert len(files) == 3 and not list(out.parent.glob("*.partial"))
    vol = np.stack([tifffile.imread(f) for f in files])
    np.testing.assert_allclose(vol, expected(tiny_scan, 17.3), atol=1e-6)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["center"] == 17.3 and prov["algorithm"] == "fbp"


def test_auto_axis_chunks_and_h5(tiny_scan, tmp_path):
    out = tmp_path / "vol.h5"
    res = run("recon", tiny_scan.path, "--save-format", "h5", "--out-path", out,
              "--nsino-per-chunk", 2, "--start-row", 1, "--fbp-filter", "hann", "--no-progress")
    assert res.exit_code == 0, res.output + res.stderr
    with h5py.File(out, "r") as f:
        vol = f["/exchange/data"][()]
        center = json.loads(f.attrs["provenance"])["center"]
    assert center == pytest.approx(tiny_scan.center, abs=0.5)
    assert f"{center:.2f}" in res.output
    ref = expected(tiny_scan, center, filter_name="hann", nchunk=1, method="direct")[1:]
    np.testing.assert_allclose(vol, ref, atol=1e-5)


def test_try_mode_writes_one_image_per_centre(tiny_scan):
    res = run("recon", tiny_scan.path, "--reconstruction-type", "try", "--rotation-axis", 17.5,
              "--center-search-width", 2, "--center-search-step", 0.5)
    assert res.exit_code == 0, res.output + res.stderr
    out = tiny_scan.path.with_name("tiny_try")
    centers = np.arange(15.5, 19.6, 0.5)
    assert sorted(p.name for p in out.glob("*.tiff")) == [f"center_{c:07.2f}.tiff" for c in centers]
    assert len(list(out.glob("*.png"))) == centers.size
    record = json.loads((out / "sharpness.json").read_text())
    assert record["sharpest"] == pytest.approx(tiny_scan.center, abs=0.5)
    assert one_line_error(run("recon", tiny_scan.path, "--reconstruction-type", "try",
                              "--rotation-axis", 17.5)).endswith("or choose another output path")


def test_existing_output_needs_overwrite_and_input_is_never_replaced(tiny_scan):
    args = ("recon", tiny_scan.path, "--rotation-axis", 17.3, "--no-progress")
    assert run(*args).exit_code == 0
    msg = one_line_error(run(*args))
    assert "already exists" in msg and "--overwrite" in msg
    assert run(*args, "--overwrite").exit_code == 0
    msg = one_line_error(run(*args, "--save-format", "h5", "--out-path", tiny_scan.path,
                             "--overwrite"))
    assert "is the input scan" in msg
    assert read_dx(tiny_scan.path).proj.shape == (33, 3, 37)


def test_failed_run_leaves_no_output_and_resume_finishes(tiny_scan, monkeypatch):
    from tomodl.recon import stages

    real, calls = stages.reconstruct_chunk, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("simulated disk failure")
        return real(*a, **k)

    monkeypatch.setattr(stages, "reconstruct_chunk", flaky)
    args = ("recon", tiny_scan.path, "--rotation-axis", 17.3, "--nsino-per-chunk", 1,
            "--no-progress")
    assert "simulated disk failure" in one_line_error(run(*args))
    out = tiny_scan.path.with_name("tiny_rec")
    assert not out.exists() and out.with_name("tiny_rec.partial").is_dir()
    res = run(*args, "--resume")
    assert res.exit_code == 0 and len(calls) == 4          # only the 2 missing rows redone
    vol = np.stack([tifffile.imread(f) for f in sorted(out.glob("*.tiff"))])
    np.testing.assert_allclose(vol, expected(tiny_scan, 17.3, nchunk=1, method="direct"),
                               atol=1e-5)


def _not_hdf5(tmp_path, scan):
    p = tmp_path / "notes.h5"
    p.write_text("not an HDF5 file\n")
    return p


def _missing_dataset(tmp_path, scan):
    p = tmp_path / "empty.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("/exchange/other", data=np.zeros(3))
    return p


def _theta_mismatch(tmp_path, scan):
    p = tmp_path / "theta.h5"
    with h5py.File(scan.path, "r") as src, h5py.File(p, "w") as f:
        for name in ("/exchange/data", "/exchange/data_white", "/exchange/data_dark"):
            f.create_dataset(name, data=src[name][()])
        f.create_dataset("/exchange/theta", data=np.linspace(0, 180, 20)).attrs["units"] = "deg"
    return p


@pytest.mark.parametrize("make, extra, words", [
    (_not_hdf5, (), "HDF5"),
    (_missing_dataset, (), "/exchange/data"),
    (_theta_mismatch, (), "20 angles"),
    (None, ("--fbp-filter", "nope"), "'nope' is not one of"),
    (None, ("--rotation-axis", "left"), "neither a number of pixels nor 'auto'"),
    (None, ("--model", "w"), "fbp+<model>"),
    (None, ("--start-row", 5), "select nothing"),
    (None, ("--device", "tpu"), "Unknown device"),
])
def test_bad_inputs_exit_2_with_one_line(tiny_scan, tmp_path, make, extra, words):
    path = make(tmp_path, tiny_scan) if make else tiny_scan.path
    msg = one_line_error(run("recon", path, "--no-progress", *extra))
    assert words in msg
    assert not list(tmp_path.glob("*_rec*"))


def test_verbose_shows_the_traceback(tiny_scan):
    res = run("-v", "recon", tiny_scan.path, "--start-row", 5)
    assert res.exit_code == 2 and "Traceback" in res.stderr


def test_fbp_plus_model_from_a_weights_folder(tiny_scan, tmp_path):
    pytest.importorskip("torch")
    weights = save_tiny_unet(tmp_path / "w", filter_name="shepp", sparse_factor=1)
    out = tmp_path / "dl.h5"
    res = run("recon", tiny_scan.path, "--algorithm", "fbp+unet", "--model", weights,
              "--dtype", "float32", "--batch-size", 2, "--rotation-axis", 17.3,
              "--save-format", "h5", "--out-path", out, "--no-progress")
    assert res.exit_code == 0, res.output + res.stderr
    with h5py.File(out, "r") as f:
        vol = f["/exchange/data"][()]
        assert json.loads(f.attrs["provenance"])["algorithm"] == "fbp+unet"
    assert vol.shape == (3, 37, 37) and np.all(np.isfinite(vol))
    msg = one_line_error(run("recon", tiny_scan.path, "--algorithm", "fbp+unet", "--model",
                             tmp_path / "nowhere", "--no-progress"))
    assert "nowhere" in msg


# -- issue 11: silent garbage, messages for the command line, damaged files, the docs ---------
def _nothing_written(folder, scan):
    """Only the scan itself in ``folder``: no output, no .partial, no lock or progress file."""
    return sorted(p.name for p in folder.iterdir()) == [scan.name]


THETA33 = np.linspace(0.0, np.pi, 33, endpoint=False)


@pytest.mark.parametrize("theta, extra, words", [
    (THETA33[:1], (), "1 distinct projection direction (angles modulo 180 degrees) for 1 "),
    (THETA33[:2], (), "2 distinct projection directions"),
    (np.full(33, 0.7), (), "1 distinct projection direction (angles modulo 180 degrees) for 33"),
    (THETA33, ("--rotation-axis", 1000), "the rotation axis 1000 px is off the detector"),
    (THETA33, ("--rotation-axis", -5), "the rotation axis -5 px is off the detector"),
    (THETA33, ("--rotation-axis", 1000, "--reconstruction-type", "try"), "off the detector"),
    (THETA33[:2], ("--algorithm", "fbp+resattunet"), "2 distinct"),
])
def test_what_cannot_be_reconstructed_is_refused_before_any_output(tmp_path, theta, extra,
                                                                   words):
    from conftest import write_scan

    scan = write_scan(tmp_path / "s.h5", theta, n_rows=2)
    msg = one_line_error(run("recon", scan.path, "--no-progress", *extra))
    assert words in msg and f"'{scan.path}'" in msg, msg
    if "axis" in words:
        assert "pass --rotation-axis in detector pixels, 0 to 36, or auto" in msg
        assert "center=" not in msg                       # no Python argument on the CLI
    assert _nothing_written(tmp_path, scan.path)


def test_rotation_axis_must_be_finite(tiny_scan):
    msg = one_line_error(run("recon", tiny_scan.path, "--rotation-axis", "nan"))
    assert "'nan' is not a finite number of pixels" in msg
    assert _nothing_written(tiny_scan.path.parent, tiny_scan.path)


def test_doubtful_axis_is_reconstructed_with_one_warning(tiny_scan):
    res = run("recon", tiny_scan.path, "--rotation-axis", 2.0, "--nsino-per-chunk", 1,
              "--no-progress")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("WARNING") == 1 and "2.5 px from the edge" in res.stderr


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_duplicated_angles_leak_no_numpy_warning(tmp_path):
    from conftest import write_scan

    theta = THETA33.copy()
    theta[1], theta[5] = theta[0], theta[4]                  # two angles recorded twice
    scan = write_scan(tmp_path / "dup.h5", theta, n_rows=2)
    res = run("recon", scan.path, "--center-method", "registration", "--no-progress")
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert "RuntimeWarning" not in res.stderr


def test_reader_errors_name_the_file_and_no_python_argument(tmp_path):
    from tomodl.io import write_dx

    proj = np.full((33, 2, 37), 5000.0, np.float32)
    proj[3, 1, 5] = np.nan
    path = write_dx(tmp_path / "nan.h5", proj, np.full((2, 2, 37), 9000.0, np.float32), None,
                    THETA33)
    msg = one_line_error(run("recon", path, "--rotation-axis", 18, "--no-progress"))
    assert "Scan file" in msg and "nan.h5" in msg and "NaN/Inf" in msg and "repair the data" in msg
    assert "nonfinite=" not in msg


def test_corrupt_metadata_names_the_file_and_the_dataset(tiny_scan):
    raw = bytearray(tiny_scan.path.read_bytes())
    at = raw.find(b"GCOL")                                   # the global heap (string attributes)
    raw[at:at + 4] = b"XXXX"
    tiny_scan.path.write_bytes(bytes(raw))
    msg = one_line_error(run("recon", tiny_scan.path, "--no-progress"))
    assert msg.startswith(f"Error: Scan file '{tiny_scan.path}': cannot read dataset "
                          "/exchange/theta (attribute 'units') (HDF5: "), msg
    assert "truncated or corrupt" in msg


def _usage_table():
    """Rows ``| `--opt`, `--other` | meaning |`` of the recon table in docs/usage.md."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    section = text.split("## Command line: `tomodl recon`")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `-")]
    cells = {row: re.split(r"(?<!\\)\|", row) for row in rows}      # "\|" is a pipe in a cell
    return {row: re.findall(r"`(--?[a-z][a-z-]*)", cell[1]) for row, cell in cells.items()}


def test_docs_list_each_recon_option_once_with_the_codes_defaults():
    import inspect

    from tomodl.cli.recon import recon as command

    table = _usage_table()
    listed = [opt for opts in table.values() for opt in opts]
    assert len(listed) == len(set(listed)), "an option is listed twice in docs/usage.md"
    params = {o: p for p in command.params for o in p.opts + p.secondary_opts}
    assert set(listed) <= set(params), set(listed) - set(params)
    documented = {params[o].name for o in listed}
    shown = {p.name for p in command.params if not getattr(p, "hidden", False)}
    missing = shown - {"scan", "help"} - documented
    assert not missing, f"document these `tomodl recon` options in docs/usage.md: {missing}"
    (row,) = [r for r, opts in table.items() if "--algorithm" in opts]
    assert f"`{params['--algorithm'].default}` (default" in row
    usage = (Path(tomodl.__file__).parents[1] / "docs" / "usage.md").read_text()
    default = inspect.signature(tomodl.recon).parameters["algorithm"].default
    assert f'sinogram_order=False, algorithm="{default}",' in " ".join(usage.split())
    assert "the default is plain FBP" not in usage


def test_try_mode_near_the_edge_cuts_the_trials_at_the_detector(tiny_scan):
    res = run("recon", tiny_scan.path, "--reconstruction-type", "try", "--rotation-axis", 3,
              "--center-search-width", 5, "--center-search-step", 1)
    assert res.exit_code == 0, res.stderr                 # trials -2 and -1 are off the detector
    out = tiny_scan.path.with_name("tiny_try")
    assert sorted(json.loads((out / "sharpness.json").read_text())["centers"]) == \
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_degrees_labelled_radians_are_a_file_error_not_python_advice(tiny_scan):
    with h5py.File(tiny_scan.path, "a") as f:
        f["/exchange/theta"].attrs["units"] = "rad"          # the values are degrees
    msg = one_line_error(run("recon", tiny_scan.path, "--no-progress"))
    assert "/exchange/theta has units 'rad'" in msg and "set its 'units' attribute to 'deg'" in msg
    assert "np.deg2rad" not in msg
