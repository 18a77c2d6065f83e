# SPDX-License-Identifier: BSD-3-Clause
import subprocess
import sys

import numpy as np
import pytest

import tomodl
from tests.conftest import make_lineint
from tomodl.errors import TomodlError
from tomodl.recon.api import ALGORITHMS, Algorithm, parse_algorithm, tomopy_algorithm
from tomodl.recon.api import recon as api_recon
from tomodl.recon.fbp import fbp

THETA = np.linspace(0, np.pi, 33, endpoint=False).astype(np.float32)


def recon(*args, **kwargs):
    """``tomodl.recon`` with FBP unless the test names another algorithm (the default,
    fbp+resattunet, is tested in test_releases.py)."""
    kwargs.setdefault("algorithm", "fbp")
    return api_recon(*args, **kwargs)


@pytest.fixture(scope="module")
def proj():
    """(33 angles, 3 rows, 37 det) line integrals, axis 17.3."""
    return make_lineint(THETA, 3, 37, 17.3)


def test_recon_is_a_function_and_the_subpackage_still_imports():
    assert callable(tomodl.recon) and tomodl.recon is api_recon
    from tomodl.recon.fbp import fbp as f2  # noqa: F401
    from tomodl.recon import center  # noqa: F401

    assert f2 is fbp


def test_matches_fbp_in_both_layouts(proj):
    ref = fbp(np.swapaxes(proj, 0, 1), THETA, 17.3)
    out = recon(proj, THETA, 17.3)
    assert out.dtype == np.float32 and out.shape == (3, 37, 37)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(recon(np.swapaxes(proj, 0, 1), THETA, 17.3,
                                        sinogram_order=True), ref)


# fbp's method="auto" may choose another interpolation for another number of rows, so the
# comparisons between row subsets below pin the method.
def test_default_centre_is_tomopys_and_per_row_centres(proj):
    np.testing.assert_array_equal(recon(proj, THETA), recon(proj, THETA, 37 / 2))
    per_row = recon(proj, THETA, [17.0, 17.3, 18.0], method="direct")
    for r, c in enumerate([17.0, 17.3, 18.0]):
        one = recon(proj[:, r:r + 1], THETA, c, method="direct")[0]
        np.testing.assert_allclose(per_row[r], one, atol=1e-6)


def test_chunks_and_threads_do_not_change_the_result(proj):
    ref = recon(proj, THETA, 17.3, method="direct")
    for kw in ({"nchunk": 1, "ncore": 1}, {"nchunk": 2}):
        np.testing.assert_allclose(recon(proj, THETA, 17.3, method="direct", **kw), ref,
                                   atol=1e-6)


def test_grid_filter_and_fbp_keywords(proj):
    out = recon(proj, THETA, 17.3, num_gridx=21, filter_name="ramlak", filter_par=[0.5, 8],
                num_gridy=21, method="direct")
    assert out.shape == (3, 21, 21)
    np.testing.assert_allclose(out, fbp(np.swapaxes(proj, 0, 1), THETA, 17.3, num_gridx=21,
                                        filter_name="ramlak", method="direct"), atol=1e-6)


def test_uniform_disk_reconstructs_its_attenuation():
    from tomodl.sim.analytic import ellipse_sinogram

    theta = np.linspace(0, np.pi, 180, endpoint=False)
    sino = ellipse_sinogram([(0, 0, 20, 20, 0, 0.01)], theta, 65, 32.0)[:, None]
    rec = recon(sino.astype(np.float32), theta, 32.0)[0]
    assert rec[22:43, 22:43].mean() == pytest.approx(0.01, rel=0.02)


def test_torch_in_torch_out(proj):
    torch = pytest.importorskip("torch")
    out = recon(torch.from_numpy(proj), THETA, 17.3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), recon(proj, THETA, 17.3), atol=1e-6)


def test_algorithm_parsing():
    assert parse_algorithm("FBP+ResAttUnet") == Algorithm("fbp", "resattunet")
    assert parse_algorithm("fbp") == Algorithm("fbp", None)
    assert set(ALGORITHMS) == {"fbp", "fbp+resattunet", "fbp+unet"}


@pytest.mark.parametrize("kwargs, match", [
    ({"algorithm": "bogus"}, "Unknown algorithm 'bogus'; choose one of .*fbp\\+resattunet"),
    ({"algorithm": "sirt"}, "'sirt' is one of TomoPy's iterative.*choose one of .*'fbp'"),
    ({"filter_name": "nope"}, "nope.*shepp"),
    ({"bogus": 1}, "Unknown keyword.*bogus.*allowed"),
    ({"model": "x"}, "Unknown keyword.*model.*need algorithm='fbp\\+<model>'"),
    ({"batch_size": 2}, "batch_size"),
    ({"center": [1.0, 2.0]}, "center has 2 values"),
    ({"num_gridx": 21, "num_gridy": 23}, "square"),
    ({"nchunk": 0}, "nchunk"),
])
def test_bad_arguments_raise_value_errors_listing_choices(proj, kwargs, match):
    with pytest.raises(ValueError, match=match):
        recon(proj, THETA, **kwargs)


def test_array_contract_errors(proj):
    with pytest.raises(ValueError, match="theta has 32 angles but tomo has 33 projections"):
        recon(proj, THETA[:-1])
    with pytest.raises(ValueError, match="looks like degrees"):
        recon(proj, np.rad2deg(THETA))
    with pytest.raises(ValueError, match="3-D"):
        recon(proj[:, 0], THETA)


def test_plain_fbp_never_imports_the_models_package():
    code = ("import sys, numpy as np, tomodl; "
            "tomodl.recon(np.ones((8, 1, 9), np.float32), np.linspace(0, 3, 8), "
            "algorithm='fbp'); "
            "assert not any(m.startswith('tomodl.models') for m in sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fbp_plus_model_runs_slice_by_slice(proj):
    pytest.importorskip("torch")
    from tomodl.models.registry import create_model

    net = create_model("unet", base_filters=4, depth=2)
    out = recon(proj, THETA, 17.3, algorithm="fbp+unet", model=net, batch_size=2,
                dtype="float32", nchunk=2)
    assert out.shape == (3, 37, 37) and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_missing_models_package_is_a_clear_error(proj, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomodl.models.inference", None)
    with pytest.raises(TomodlError, match="fbp\\+resattunet' needs .*torch"):
        recon(proj, THETA, algorithm="fbp+resattunet")


def _tomopy_recon_standin(tomo, theta, center=None, algorithm=None, ncore=None, nchunk=None,
                          **kwargs):
    """What ``tomopy.recon`` does with a callable algorithm (tomopy/recon/algorithm.py):
    float32 sinogram-ordered contiguous data, per-row float32 centres (default n_det / 2),
    kwargs num_gridx/num_gridy/options defaulted, recon preallocated and filled in place per
    chunk of rows, ``algorithm(tomo[s], center[s], recon[s], theta_f32, **kwargs)``."""
    tomo = np.require(np.swapaxes(np.asarray(tomo, np.float32), 0, 1), requirements="AC")
    dy, dt, dx = tomo.shape
    for kw, val in (("num_gridx", dx), ("num_gridy", dx), ("options", {})):
        kwargs.setdefault(kw, val)
    if center is None:
        center = np.ones(dy, np.float32) * (dx / 2.0)
    elif np.array(center).size == 1:
        center = np.ones(dy, np.float32) * center
    center = np.asarray(center, np.float32)
    theta = np.asarray(theta, np.float32)
    rec = np.zeros((dy, kwargs["num_gridx"], kwargs["num_gridy"]), np.float32)
    step = nchunk or dy
    for r0 in range(0, dy, step):
        s = slice(r0, r0 + step)
        algorithm(tomo[s], center[s], rec[s], theta, **kwargs)
    return rec


def test_tomopy_callable_contract(proj):
    ref = recon(proj, THETA, 17.3, filter_name="hann", method="direct")
    out = _tomopy_recon_standin(proj, THETA, 17.3, algorithm=tomodl.tomopy_algorithm,
                                filter_name="hann", method="direct", nchunk=1)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(_tomopy_recon_standin(proj, THETA, algorithm=tomopy_algorithm),
                               recon(proj, THETA), atol=1e-6)
    with pytest.raises(ValueError, match="options"):
        _tomopy_recon_standin(proj, THETA, algorithm=tomopy_algorithm, options={"a": 1})
    with pytest.raises(ValueError, match="Unknown keyword.*num_iter"):
        _tomopy_recon_standin(proj, THETA, algorithm=tomopy_algorithm, num_iter=3)


def test_recon_accepts_a_tomopy_style_callable(proj):
    seen = []

    def algo(tomo, center, rec, theta, **kwargs):
        assert tomo.dtype == np.float32 and tomo.flags.c_contiguous and tomo.shape[1:] == (33, 37)
        assert center.dtype == np.float32 and theta.dtype == np.float32
        seen.append(sorted(kwargs))
        rec[...] = center[:, None, None]

    out = recon(proj, THETA, [1.0, 2.0, 3.0], algorithm=algo, nchunk=2, ncore=2)
    assert out[:, 0, 0].tolist() == [1.0, 2.0, 3.0]
    assert seen[0] == ["filter_name", "num_gridx", "num_gridy", "options"] and len(seen) == 2
    with pytest.raises(ValueError, match="device"):
        recon(proj, THETA, algorithm=algo, device="cpu")


# -- issue 11: geometry that cannot give an image, doubtful geometry, TomoPy names ------------
@pytest.mark.parametrize("n, theta, match", [
    (1, THETA[:1], "1 distinct projection direction .* for 1 projection"),
    (2, THETA[:2], "2 distinct projection directions .* for 2 projections"),
    (33, np.full(33, 0.4, np.float32), "1 distinct projection direction .* for 33 projections"),
    (4, np.array([0.0, np.pi, 0.5, 0.5 + np.pi]), "2 distinct"),       # mirror views add nothing
])
def test_too_few_directions_are_refused_by_recon_and_fbp(proj, n, theta, match):
    from tomodl.errors import GeometryError

    with pytest.raises(GeometryError, match=match + ".*at least 3"):
        recon(proj[:n], theta, 17.3)
    with pytest.raises(GeometryError, match=match):
        fbp(np.swapaxes(proj[:n], 0, 1), theta, 17.3)


@pytest.mark.parametrize("center", [1000.0, -5.0, [17.3, 17.3, 60.0]])
def test_axis_off_the_detector_is_refused_naming_the_argument(proj, center):
    from tomodl.errors import GeometryError

    with pytest.raises(GeometryError, match="off the detector, whose columns are 0 to 36; "
                                            "pass center= in detector pixels") as err:
        recon(proj, THETA, center)
    assert "--rotation-axis" not in str(err.value)           # Python is told about arguments
    assert "--rotation-axis" in err.value.cli_message()      # the command line about options
    with pytest.raises(GeometryError, match="off the detector"):
        fbp(np.swapaxes(proj, 0, 1), THETA, center)


def test_doubtful_geometry_warns_once_and_still_reconstructs(proj, caplog):
    with caplog.at_level("WARNING", logger="tomodl"):
        recon(proj, THETA, 17.3, nchunk=1)
    assert not caplog.records                                 # a sound scan: silent
    with caplog.at_level("WARNING", logger="tomodl"):
        rec = recon(proj[:17], THETA[:17], 17.3, nchunk=1)     # 17 steps of 5.45 deg
    assert [r.getMessage() for r in caplog.records if "cover 93 of the 180" in r.getMessage()]
    assert len(caplog.records) == 1 and np.isfinite(rec).all()
    caplog.clear()
    with caplog.at_level("WARNING", logger="tomodl"):
        recon(proj, THETA, 2.0, nchunk=1)                       # 2.5 px from the edge
    assert len(caplog.records) == 1 and "from the edge" in caplog.records[0].getMessage()


def test_duplicated_angles_raise_no_numpy_warning(proj, recwarn):
    from tomodl.recon.center import find_center

    theta = THETA.copy()
    theta[1], theta[5] = theta[0], theta[4]
    tomo = proj.copy()
    tomo[1], tomo[5] = tomo[0], tomo[4]
    c = find_center(tomo, theta, method="registration")
    assert abs(c - 17.3) < 0.5
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], \
        [str(w.message) for w in recwarn]


def test_tomodl_error_keeps_its_advice_through_pickling():
    import pickle

    from tomodl.errors import GeometryError

    err = GeometryError("axis off", fix="pass center=", cli_fix="pass --rotation-axis")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is GeometryError and str(back) == "axis off; pass center="
    assert back.cli_message() == "axis off; pass --rotation-axis"
    assert TomodlError("plain").cli_message() == "plain"
