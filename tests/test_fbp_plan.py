# SPDX-License-Identifier: BSD-3-Clause
"""fbp's plan, built once (fbp_plan) and reused across chunks of rows: same numbers as building
it per call, refused for data it was not built for, built once per file reconstruction."""
import h5py
import numpy as np
import pytest
from conftest import write_scan

pytest.importorskip("torch")

from tomodl.recon import fbp as fbp_module  # noqa: E402
from tomodl.recon.fbp import fbp, fbp_plan  # noqa: E402


def _sino(rows, n_ang, n_det, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((rows, n_ang, n_det)).astype(np.float32), \
        np.sort(rng.uniform(0, np.pi, n_ang))


@pytest.mark.parametrize("method", ["fourier", "direct"])
@pytest.mark.parametrize("n_det,num_gridx", [(31, None), (28, 33)])
def test_a_reused_plan_gives_the_same_slices_chunk_by_chunk(method, n_det, num_gridx):
    sino, theta = _sino(7, 23, n_det)
    centers = n_det / 2 + np.linspace(-1.3, 0.9, 7)            # a centre per row
    kw = dict(filter_name="hann", num_gridx=num_gridx, method=method, device="cpu", ncore=2)
    plan = fbp_plan(n_det, theta, num_gridx, filter_name="hann", method=method, device="cpu",
                    ncore=2)
    assert plan.method == method
    for r0, r1 in [(0, 3), (3, 4), (4, 7)]:
        fresh = fbp(sino[r0:r1], theta, centers[r0:r1], **kw)
        reused = fbp(sino[r0:r1], theta, centers[r0:r1], plan=plan, **kw)
        np.testing.assert_allclose(reused, fresh, rtol=0, atol=1e-6)
    whole = fbp(sino, theta, centers, plan=plan, **kw)
    np.testing.assert_allclose(whole, fbp(sino, theta, centers, **kw), rtol=0, atol=1e-6)


def test_auto_plan_matches_auto_fbp():
    sino, theta = _sino(3, 19, 25)
    plan = fbp_plan(25, theta, device="cpu")
    np.testing.assert_allclose(fbp(sino, theta, 12.2, plan=plan, device="cpu"),
                               fbp(sino, theta, 12.2, device="cpu"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("change", ["n_det", "theta", "grid", "filter", "filter_par", "method"])
def test_a_plan_built_for_other_data_is_refused(change):
    sino, theta = _sino(2, 17, 21)
    plan = fbp_plan(21, theta, filter_name="shepp", method="fourier", device="cpu")
    kw = dict(filter_name="shepp", method="fourier", device="cpu", plan=plan)
    if change == "n_det":
        sino = sino[..., :20]
    elif change == "theta":
        theta = theta + 1e-3
    elif change == "grid":
        kw["num_gridx"] = 23
    elif change == "filter":
        kw["filter_name"] = "hann"
    elif change == "filter_par":
        kw["filter_par"] = [0.3, 8]
    else:
        kw["method"] = "direct"
    with pytest.raises(ValueError, match="FBP plan was built for another"):
        fbp(sino, theta, 10.0, **kw)


def test_recon_builds_one_plan_for_all_its_chunks(monkeypatch):
    from tomodl.recon.api import recon

    calls = []
    real = fbp_module.fbp_plan
    monkeypatch.setattr(fbp_module, "fbp_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    sino, theta = _sino(9, 21, 27)
    rec = recon(np.swapaxes(sino, 0, 1), theta, center=13.4, algorithm="fbp", nchunk=2,
                device="cpu", ncore=1)
    assert len(calls) == 1 and rec.shape == (9, 27, 27)
    np.testing.assert_allclose(rec, fbp(sino, theta, 13.4, device="cpu"), rtol=0, atol=1e-6)


def test_the_file_pipeline_builds_the_plan_once_per_run(tmp_path, monkeypatch):
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    theta = np.linspace(0, np.pi, 37, endpoint=False)
    scan = write_scan(tmp_path / "scan.h5", theta, n_rows=11, n_det=29, center=13.6)
    calls = []
    real = fbp_module.fbp_plan
    monkeypatch.setattr(fbp_module, "fbp_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    vols = []
    for rows in (2, 11):
        cfg = ReconConfig(algorithm="fbp", center=13.6, nsino_per_chunk=rows, save_format="h5",
                          progress=False, preview=False, out_path=tmp_path / f"r{rows}.h5")
        calls.clear()
        res = reconstruct_file(scan.path, cfg)
        assert len(calls) == 1, (rows, len(calls))
        with h5py.File(res.path, "r") as f:
            vols.append(f["/exchange/data"][()])
    np.testing.assert_allclose(vols[0], vols[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n, n_angles", [(63, 45), (128, 181)])
def test_the_memory_budget_counts_the_plan_kept_for_the_run(n, n_angles):
    """The plan lives from the first chunk to the end of a run, so the budget must hold it:
    :func:`tomodl.recon.budget.fbp_plan_bytes` bounds the real plan from above, not by much."""
    from tomodl.recon.budget import fbp_plan_bytes
    from tomodl.recon.fbp import fbp_plan

    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    plan = fbp_plan(n, theta, method="fourier", device="cpu")
    g = plan.state
    m = g.matrix
    real = sum(t.numel() * t.element_size() for t in
               (m.crow_indices(), m.col_indices(), m.values(), g.phase))
    estimate = fbp_plan_bytes(n_angles, n)
    assert real <= estimate <= 1.6 * real, (real, estimate)
