# SPDX-License-Identifier: BSD-3-Clause
"""Reading DXchange / NeXus scans: round trips, units, hyperslabs and every bad-input error."""
import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomodl.errors import OutputError, ScanFileError, SelectionError, TomodlError
from tomodl.io import Scan, read_dx, scan_info, write_dx

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOOTH = SHARED / "data" / "tooth.h5"
N_ANG, N_ROWS, N_DET = 37, 5, 41  # odd sizes


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    proj = rng.integers(100, 60000, (N_ANG, N_ROWS, N_DET)).astype(np.uint16)
    flat = rng.integers(50000, 60000, (3, N_ROWS, N_DET)).astype(np.uint16)
    dark = rng.integers(0, 100, (2, N_ROWS, N_DET)).astype(np.uint16)
    theta = np.linspace(0, np.pi, N_ANG, endpoint=False)
    return proj, flat, dark, theta


@pytest.fixture
def dx_file(tmp_path, data):
    return write_dx(tmp_path / "scan.h5", *data)


def raw_dx(path, proj, theta=None, units=None, flat=None, dark=None):
    """A DXchange file written by hand (no validation), to build malformed inputs."""
    with h5py.File(path, "w") as f:
        if proj is not None:
            f["/exchange/data"] = proj
        if theta is not None:
            f["/exchange/theta"] = theta
            if units is not None:
                f["/exchange/theta"].attrs["units"] = units
        if flat is not None:
            f["/exchange/data_white"] = flat
        if dark is not None:
            f["/exchange/data_dark"] = dark
    return path


def test_round_trip_uint16_to_float32_and_degrees(dx_file, data):
    proj, flat, dark, theta = data
    scan = read_dx(dx_file)
    assert isinstance(scan, Scan)
    p, fl, dk, th = scan  # unpacks like dxchange
    for got, ref in ((p, proj), (fl, flat), (dk, dark)):
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref.astype(np.float32))
    assert th.dtype == np.float32
    np.testing.assert_allclose(th, theta, atol=1e-6)
    with h5py.File(dx_file, "r") as f:  # stored in degrees, chunked for sinogram reads
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert f["/exchange/theta"][-1] == pytest.approx(np.rad2deg(theta[-1]))
        chunks = f["/exchange/data"].chunks
        assert chunks[0] == N_ANG and chunks[2] == N_DET and 1 <= chunks[1] <= 8


def test_write_dx_radians_and_extra(tmp_path, data):
    proj, flat, dark, theta = data
    gt = np.ones((N_ROWS, N_DET, N_DET), np.float32)
    path = write_dx(tmp_path / "s.h5", proj.astype(np.float32), None, None, theta,
                    theta_units="rad", extra={"/tomodl_sim/ground_truth": gt,
                                              "/tomodl_sim": {"seed": 3, "cfg": {"k": [1, 2]}}})
    scan = read_dx(path)
    assert scan.flat is None and scan.dark is None
    np.testing.assert_allclose(scan.theta, theta, atol=1e-7)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["/tomodl_sim/ground_truth"][()], gt)
        assert f["/tomodl_sim"].attrs["seed"] == 3
        assert f["/tomodl_sim"].attrs["cfg"] == '{"k": [1, 2]}'
    with pytest.raises(ValueError, match="choose one of"):
        write_dx(tmp_path / "t.h5", proj, None, None, theta, theta_units="grad")


@pytest.mark.parametrize("units", ["deg", "Degrees", "DEGREE", b"degrees"])
def test_degree_units_are_converted(tmp_path, units):
    deg = np.linspace(0, 3, 7)  # small angles: only the units attribute says degrees
    path = raw_dx(tmp_path / "d.h5", np.ones((7, 3, 5), np.float32), deg, units)
    np.testing.assert_allclose(read_dx(path).theta, np.deg2rad(deg), rtol=1e-6)


@pytest.mark.parametrize("units", ["rad", "Radians"])
def test_radian_units_are_kept(tmp_path, units):
    rad = np.linspace(0, 3, 7)
    path = raw_dx(tmp_path / "r.h5", np.ones((7, 3, 5), np.float32), rad, units)
    np.testing.assert_allclose(read_dx(path).theta, rad, rtol=1e-6)


def test_missing_units_are_inferred_with_a_warning(tmp_path, caplog):
    ones = np.ones((7, 3, 5), np.float32)
    deg = np.linspace(0, 180, 7, endpoint=False)
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        got = read_dx(raw_dx(tmp_path / "a.h5", ones, deg)).theta
        np.testing.assert_allclose(got, np.deg2rad(deg), rtol=1e-6)
        rad = np.linspace(0, np.pi, 7)
        np.testing.assert_allclose(read_dx(raw_dx(tmp_path / "b.h5", ones, rad)).theta, rad,
                                   rtol=1e-6)
    assert sum("no 'units' attribute" in r.getMessage() for r in caplog.records) == 2


def test_missing_theta_gives_equal_steps_over_pi(tmp_path, caplog):
    path = raw_dx(tmp_path / "n.h5", np.ones((9, 3, 5), np.float32))
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        theta = read_dx(path).theta
    np.testing.assert_allclose(theta, np.arange(9) * np.pi / 9, rtol=1e-6)
    assert any("equal steps" in r.getMessage() for r in caplog.records)


def test_hyperslab_reads_only_requested_rows(dx_file, data, monkeypatch):
    proj, flat, _, theta = data
    seen = []
    original = h5py.Dataset.read_direct

    def spy(self, dest, source_sel=None, dest_sel=None):
        seen.append((self.name, source_sel))
        return original(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", spy)
    scan = read_dx(dx_file, proj=(3, 30, 4), sino=(1, 4, 2))
    np.testing.assert_array_equal(scan.proj, proj[3:30:4, 1:4:2].astype(np.float32))
    np.testing.assert_array_equal(scan.flat, flat[:, 1:4:2].astype(np.float32))
    np.testing.assert_allclose(scan.theta, theta[3:30:4], atol=1e-6)
    assert scan.proj.shape == (7, 2, N_DET)
    assert {name for name, _ in seen} == {"/exchange/data", "/exchange/data_white",
                                          "/exchange/data_dark"}
    for name, sel in seen:  # one strided hyperslab per dataset, only the requested rows
        assert sel[1] == slice(1, 4, 2)
        if name == "/exchange/data":
            assert sel[0] == slice(3, 28, 4)


def test_python_slicing_rules(dx_file, data):
    proj = data[0]
    np.testing.assert_array_equal(read_dx(dx_file, sino=(-2, None)).proj,
                                  proj[:, -2:].astype(np.float32))
    np.testing.assert_array_equal(read_dx(dx_file, proj=slice(30, 99)).proj,  # stop clipped
                                  proj[30:].astype(np.float32))


def test_scan_info_reads_no_pixels(dx_file, monkeypatch):
    touched = []
    original = h5py.Dataset.__getitem__

    def spy(self, args):
        touched.append(self.name)
        return original(self, args)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    monkeypatch.setattr(h5py.Dataset, "read_direct", lambda *a, **k: pytest.fail("pixels read"))
    info = scan_info(dx_file)
    assert touched == ["/exchange/theta"]
    assert (info.layout, info.shape, info.dtype) == ("dxchange", (N_ANG, N_ROWS, N_DET), "uint16")
    assert (info.n_flat, info.n_dark, info.has_flat, info.has_dark) == (3, 2, True, True)
    assert info.theta.dtype == np.float32 and info.theta.size == N_ANG
    assert info.file_size == dx_file.stat().st_size
    assert info.provenance()["size"] == info.file_size


def test_input_opened_read_only(dx_file):
    digest = hashlib.sha256(dx_file.read_bytes()).hexdigest()
    mtime = dx_file.stat().st_mtime_ns
    dx_file.chmod(0o444)
    read_dx(dx_file, sino=(0, 2))
    scan_info(dx_file)
    assert hashlib.sha256(dx_file.read_bytes()).hexdigest() == digest
    assert dx_file.stat().st_mtime_ns == mtime


def nexus_file(path, data, units="degree"):
    """NXtomo: 2 darks, 3 flats, projections split by 2 more flats, then nothing else."""
    proj, flat, dark, theta = data
    frames = np.concatenate([dark, flat, proj[:20], flat[:2], proj[20:]])
    key = np.array([2] * 2 + [1] * 3 + [0] * 20 + [1] * 2 + [0] * (N_ANG - 20))
    angles = np.concatenate([[0, 0, 0, 0, 0], np.rad2deg(theta[:20]), [0, 0],
                             np.rad2deg(theta[20:])])
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXtomo"
        det = entry.create_group("instrument/detector")
        det["data"] = frames
        det["image_key"] = key
        entry["data/data"] = h5py.SoftLink("/entry/instrument/detector/data")
        entry["sample/rotation_angle"] = angles
        entry["sample/rotation_angle"].attrs["units"] = units
    return path


def test_nexus_nxtomo(tmp_path, data):
    proj, flat, dark, theta = data
    path = nexus_file(tmp_path / "nx.nxs", data)
    scan = read_dx(path)
    np.testing.assert_array_equal(scan.proj, proj.astype(np.float32))
    np.testing.assert_array_equal(scan.flat, np.concatenate([flat, flat[:2]]).astype(np.float32))
    np.testing.assert_array_equal(scan.dark, dark.astype(np.float32))
    np.testing.assert_allclose(scan.theta, theta, atol=1e-6)
    sub = read_dx(path, proj=(15, 26, 3), sino=(2, 5))  # crosses the flats in the middle
    np.testing.assert_array_equal(sub.proj, proj[15:26:3, 2:5].astype(np.float32))
    np.testing.assert_allclose(sub.theta, theta[15:26:3], atol=1e-6)
    info = scan_info(path)
    assert (info.layout, info.n_angles, info.n_flat, info.n_dark) == ("nexus", N_ANG, 5, 2)


@pytest.mark.skipif(not TOOTH.exists(), reason="shared tooth.h5 not available")
def test_real_tooth_scan():
    info = scan_info(TOOTH)
    assert info.shape == (181, 2, 640) and info.layout == "dxchange"
    scan = read_dx(TOOTH, proj=(0, 181, 4), sino=(1, 2))
    assert scan.proj.shape == (46, 1, 640) and scan.flat.shape == (10, 1, 640)
    with h5py.File(TOOTH, "r") as f:  # stored in degrees, 0 .. 179.0055
        deg = f["/exchange/theta"][()]
    np.testing.assert_allclose(scan.theta, np.deg2rad(deg[::4]), rtol=1e-6)


# --- bad input: the right type and one line naming the file --------------------------------

def _truncated(tmp_path, data):
    path = write_dx(tmp_path / "full.h5", *data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _not_hdf5(tmp_path, data):
    path = tmp_path / "notes.h5"
    path.write_text("this is not hdf5\n" * 10)
    return path


def _corrupt_global_heap(tmp_path, data):
    """Damaged metadata (issue 11): the global heap holding the variable-length strings (the
    theta ``units`` attribute) loses its signature; h5py raised a bare OSError."""
    path = write_dx(tmp_path / "heap.h5", *data)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"GCOL")
    assert at > 0, "no global heap in the file"
    raw[at:at + 4] = b"XXXX"
    path.write_bytes(bytes(raw))
    return path


BAD_FILES = {
    "corrupt global heap": (_corrupt_global_heap,
                            "cannot read dataset /exchange/theta (attribute 'units') (HDF5: "),
    "degrees labelled rad": (lambda t, d: raw_dx(t / "dr.h5", d[0], np.degrees(d[3]), "rad"),
                             "units 'rad' but max |theta| = 175.1, more than two turns"),
    "missing file": (lambda t, d: t / "nope.h5", "does not exist"),
    "directory": (lambda t, d: t, "is a directory"),
    "not hdf5": (_not_hdf5, "not an HDF5 file"),
    "truncated": (_truncated, "truncated or corrupt"),
    "no exchange/data": (lambda t, d: raw_dx(t / "e.h5", None, theta=d[3]), "/exchange/data"),
    "2-D data": (lambda t, d: raw_dx(t / "w.h5", d[0][0]), "2 dimensions"),
    "empty data": (lambda t, d: raw_dx(t / "z.h5", np.zeros((0, 3, 5), np.uint16)), "is empty"),
    "theta length": (lambda t, d: raw_dx(t / "th.h5", d[0], d[3][:-1], "rad"),
                     f"36 angles but /exchange/data has {N_ANG}"),
    "flat shape": (lambda t, d: raw_dx(t / "f.h5", d[0], d[3], "rad", flat=d[1][:, :-1]),
                   "rows x columns"),
    "dark shape": (lambda t, d: raw_dx(t / "k.h5", d[0], d[3], "rad", dark=d[2][..., :-2]),
                   "/exchange/data_dark"),
    "theta units": (lambda t, d: raw_dx(t / "u.h5", d[0], d[3], "mrad"), "units 'mrad'"),
    "nan data": (lambda t, d: raw_dx(t / "nan.h5", np.where(d[0] > 59000, np.nan,
                                                            d[0].astype(np.float32)), d[3], "rad"),
                 "NaN/Inf values"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_errors(tmp_path, data, case):
    make, needle = BAD_FILES[case]
    path = make(tmp_path, data)
    for reader in (read_dx, scan_info):
        if case == "nan data" and reader is scan_info:
            continue  # scan_info reads no pixels
        with pytest.raises(ScanFileError) as err:
            reader(path)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and needle in msg, msg
        assert isinstance(err.value, ValueError)


def test_nonfinite_warn_policy(tmp_path, data, caplog):
    bad = data[0].astype(np.float32)
    bad[0, 0, :3] = [np.nan, np.inf, -np.inf]
    path = raw_dx(tmp_path / "nan.h5", bad, data[3], "rad")
    with pytest.raises(ScanFileError, match="contains 3 NaN/Inf values") as err:
        read_dx(path)
    assert "pass nonfinite='warn'" in str(err.value)            # Python: the argument
    assert "nonfinite=" not in err.value.cli_message()          # the command line has none
    assert "repair the data" in err.value.cli_message()
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        assert np.isnan(read_dx(path, nonfinite="warn").proj[0, 0, 0])
    assert any("3 NaN/Inf" in r.getMessage() for r in caplog.records)
    assert read_dx(path, sino=(1, 3)).proj.shape == (N_ANG, 2, N_DET)  # bad row not read
    with pytest.raises(ValueError, match="choose one of"):
        read_dx(path, nonfinite="ignore")


@pytest.mark.parametrize("kwargs", [{"proj": (5, 5)}, {"sino": (10, 20)}, {"proj": (0, 9, 0)},
                                    {"sino": (3, 1)}, {"proj": (1,)}, {"sino": ("a", 2)},
                                    {"proj": (0, 9, -1)}])
def test_bad_selections(dx_file, kwargs):
    with pytest.raises(SelectionError) as err:
        read_dx(dx_file, **kwargs)
    assert "\n" not in str(err.value) and str(dx_file) in str(err.value)
    assert isinstance(err.value, TomodlError)


def test_nexus_errors(tmp_path, data):
    path = nexus_file(tmp_path / "nx.nxs", data)
    with h5py.File(path, "a") as f:
        del f["/entry/instrument/detector/image_key"]
        f["/entry/instrument/detector/image_key"] = np.zeros(4, int)
    with pytest.raises(ScanFileError, match="image_key has 4 values"):
        read_dx(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["/entry/foo"] = np.ones(3)
    with pytest.raises(ScanFileError, match="no /exchange/data .* no /entry/data/data"):
        scan_info(other)


def test_write_dx_refuses_overwrite_and_is_atomic(tmp_path, data):
    path = write_dx(tmp_path / "scan.h5", *data)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        write_dx(path, *data)
    with pytest.raises(ValueError, match="absolute HDF5 paths"):  # fails while writing
        write_dx(path, *data, extra={"relative": np.ones(3)}, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.h5"]  # no temporary left
    write_dx(path, data[0][:5], None, None, data[3][:5], overwrite=True)
    assert scan_info(path).n_angles == 5
