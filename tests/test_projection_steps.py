"""The projection-level steps in the volume pipeline: Paganin's projection-chunked pass,
double_fov stitching and the preview PNG (tomodl.recon.volume, projection_pass, preview)."""
import logging

import numpy as np
import pytest

from conftest import write_scan
from tomodl.io import read_dx
from tomodl.io.writers import read_volume
from tomodl.recon.corrections import Corrections
from tomodl.recon.fbp import fbp
from tomodl.recon.phase import retrieve_phase
from tomodl.recon.pipeline import ReconConfig, reconstruct_file
from tomodl.recon.preprocess import minus_log, normalize

PHASE = dict(retrieve_phase_method="paganin", energy=20.0, propagation_distance=200.0,
             pixel_size=1.0, retrieve_phase_alpha=1e-2)


def _phase_scan(path, n_angles=24, n_rows=11, n_det=29, center=14.0):
    """Raw counts whose rows differ (the conftest phantom, scaled per row)."""
    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    return write_scan(path, theta, n_rows=n_rows, n_det=n_det, center=center)


def _cfg(tmp_path, **kw):
    base = dict(algorithm="fbp", center=14.0, save_format="h5", progress=False,
                out_path=tmp_path / "out.h5", preview=False)
    return ReconConfig(**{**base, **kw})


def _killed_run(monkeypatch, path, cfg, at: int) -> None:
    """Run ``cfg`` and stop it (KeyboardInterrupt) in the ``at``-th FBP chunk of pass 2."""
    from tomodl.recon import stages

    real, calls = stages.reconstruct_chunk, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(stages, "reconstruct_chunk", flaky)
        with pytest.raises(KeyboardInterrupt):
            reconstruct_file(path, cfg)


def _whole_volume(path, corr, center, rows=slice(None)):
    """One whole-volume computation: normalize -> Paganin on whole projections -> -log -> FBP."""
    s = read_dx(path)
    t = retrieve_phase(normalize(s.proj, s.flat, s.dark), energy=corr.energy,
                       propagation_distance=corr.propagation_distance,
                       pixel_size=corr.pixel_size, alpha=corr.retrieve_phase_alpha)
    return fbp(np.swapaxes(minus_log(t), 0, 1)[rows], s.theta, center)


def test_phase_pass_matches_whole_volume_at_chunk_edges(tmp_path):
    path = _phase_scan(tmp_path / "s.h5").path
    corr = Corrections(**PHASE)
    res = reconstruct_file(path, _cfg(tmp_path, corrections=corr, nsino_per_chunk=3,
                                      start_row=1, end_row=10))
    vol = read_volume(res.path, "h5")
    ref = _whole_volume(path, corr, 14.0, slice(1, 10))
    np.testing.assert_allclose(vol, ref, atol=1e-5 * np.abs(ref).max())
    plain = reconstruct_file(path, _cfg(tmp_path, out_path=tmp_path / "plain.h5"))
    assert np.abs(read_volume(plain.path, "h5")[1:10] - vol).max() > 1e-3   # it did something
    assert not list(tmp_path.glob("*.phase.h5*"))                        # scratch removed


def test_phase_pass_resumes_and_reuses_the_finished_pass(tmp_path, monkeypatch, caplog):
    path = _phase_scan(tmp_path / "s.h5").path
    cfg = _cfg(tmp_path, corrections=Corrections(**PHASE), nsino_per_chunk=4)
    _killed_run(monkeypatch, path, cfg, 2)                       # killed in pass 2
    assert (tmp_path / "out.h5.phase.h5").exists()
    with caplog.at_level(logging.INFO, logger="tomodl"):
        res = reconstruct_file(path, cfg)
    assert "reusing the finished projection pass" in caplog.text
    assert res.n_computed < res.n_slices
    np.testing.assert_allclose(read_volume(res.path, "h5"),
                               _whole_volume(path, cfg.corrections, 14.0), atol=1e-5)
    assert not (tmp_path / "out.h5.phase.h5").exists()


def test_phase_pass_continues_a_killed_first_pass(tmp_path, monkeypatch):
    """Blocks of 1 projection; killed after 5 blocks; the rerun starts at projection 5."""
    from tomodl.recon import projection_pass as pp

    path = _phase_scan(tmp_path / "s.h5").path
    cfg = _cfg(tmp_path, corrections=Corrections(**PHASE))
    monkeypatch.setattr(pp, "block_size", lambda *a: 1)
    real, seen = pp._block, []

    def flaky(path_, cfg_, block, rows):
        seen.append(block[0])
        if len(seen) == 6:
            raise KeyboardInterrupt
        return real(path_, cfg_, block, rows)

    monkeypatch.setattr(pp, "_block", flaky)
    with pytest.raises(KeyboardInterrupt):
        reconstruct_file(path, cfg)
    seen.clear()
    monkeypatch.setattr(pp, "_block", real)
    monkeypatch.setattr(pp, "_block", lambda *a: (seen.append(a[2][0]), real(*a))[1])
    res = reconstruct_file(path, cfg)
    assert seen[0] == 5
    np.testing.assert_allclose(read_volume(res.path, "h5"),
                               _whole_volume(path, cfg.corrections, 14.0), atol=1e-5)


def test_scratch_not_ours_is_refused(tmp_path):
    from tomodl.errors import TomodlError

    path = _phase_scan(tmp_path / "s.h5").path
    (tmp_path / "out.h5.phase.h5").write_text("mine")
    with pytest.raises(TomodlError, match="not written by tomodl"):
        reconstruct_file(path, _cfg(tmp_path, corrections=Corrections(**PHASE)))
    assert (tmp_path / "out.h5.phase.h5").read_text() == "mine"


@pytest.mark.parametrize("given", [True, False])
def test_double_fov_matches_full_width_reconstruction(tmp_path, given):
    from tomodl.recon.stitch import stitch_360

    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    scan = write_scan(tmp_path / "w.h5", theta, n_rows=4, n_det=41, center=8.0)
    corr = Corrections(file_type="double_fov")
    res = reconstruct_file(scan.path, _cfg(tmp_path, corrections=corr, nsino_per_chunk=3,
                                           center=8.0 if given else "auto"))
    assert abs(res.center - 8.0) < 0.2
    s = read_dx(scan.path)
    t180, th180, c180 = stitch_360(minus_log(normalize(s.proj, s.flat, s.dark)), s.theta,
                                   res.center)
    ref = fbp(np.swapaxes(t180, 0, 1), th180, c180)
    vol = read_volume(res.path, "h5")
    assert vol.shape == (4, 65, 65) if given else vol.shape[1] in (64, 65, 66)
    np.testing.assert_allclose(vol, ref, atol=1e-5 * np.abs(ref).max())


def test_double_fov_needs_opposite_angles(tmp_path):
    from tomodl.errors import GeometryError

    scan = write_scan(tmp_path / "w.h5", np.linspace(0, np.pi, 34, endpoint=False))
    with pytest.raises(GeometryError, match="opposite"):
        reconstruct_file(scan.path, _cfg(tmp_path, corrections=Corrections(file_type="double_fov")))


def test_preview_png_written_next_to_output(tmp_path, tiny_scan):
    from PIL import Image

    from tomodl.io.ownership import identify
    from tomodl.recon.preview import orthogonal_slices, preview_image

    res = reconstruct_file(tiny_scan.path, _cfg(tmp_path, center=tiny_scan.center,
                                                 nsino_per_chunk=1, preview=None))
    png = tmp_path / "out_preview.png"
    assert png.exists() and identify(png)[0] == "image"
    img = np.asarray(Image.open(png))
    vol = read_volume(res.path, "h5")
    assert img.shape == preview_image(*orthogonal_slices(vol)).shape


def test_preview_after_resume_reads_back_missing_slices(tmp_path, tiny_scan, monkeypatch):
    from tomodl.recon.preview import PreviewCollector, orthogonal_slices

    written = {}
    real_write = PreviewCollector.write
    monkeypatch.setattr(PreviewCollector, "write",
                        lambda self, p, **k: (written.update(v=(self.axial, self.xz, self.yz)),
                                              real_write(self, p, **k))[1])
    cfg = _cfg(tmp_path, center=tiny_scan.center, nsino_per_chunk=1, preview=True)
    _killed_run(monkeypatch, tiny_scan.path, cfg, 3)
    res = reconstruct_file(tiny_scan.path, cfg)
    for got, want in zip(written["v"], orthogonal_slices(read_volume(res.path, "h5"))):
        np.testing.assert_array_equal(got, want)


def test_preview_never_replaces_a_foreign_file(tmp_path, tiny_scan, caplog):
    from tomodl.errors import TomodlError

    png = tmp_path / "out_preview.png"
    png.write_bytes(b"user's own")
    with pytest.raises(TomodlError, match="not written by tomodl"):
        reconstruct_file(tiny_scan.path, _cfg(tmp_path, center=tiny_scan.center, preview=True))
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        reconstruct_file(tiny_scan.path, _cfg(tmp_path, center=tiny_scan.center, preview=None))
    assert "no preview" in caplog.text and png.read_bytes() == b"user's own"


def test_defaults_change_nothing(tmp_path, tiny_scan):
    """Default Corrections and preview off give the bytes of the plain pipeline."""
    a = reconstruct_file(tiny_scan.path, _cfg(tmp_path, center=tiny_scan.center))
    b = reconstruct_file(tiny_scan.path, _cfg(tmp_path, center=tiny_scan.center,
                                              out_path=tmp_path / "b.h5", preview=None))
    np.testing.assert_array_equal(read_volume(a.path, "h5"), read_volume(b.path, "h5"))


def test_preview_image_is_shrunk_and_collector_matches_volume():
    from tomodl.recon.preview import PreviewCollector, orthogonal_slices, preview_image

    rng = np.random.default_rng(0)
    vol = rng.random((7, 9, 9)).astype(np.float32)
    col = PreviewCollector(7, 9)
    for a in range(0, 7, 3):
        col.add(a, vol[a:a + 3])
    for got, want in zip((col.axial, col.xz, col.yz), orthogonal_slices(vol)):
        np.testing.assert_array_equal(got, want)
    img = preview_image(np.ones((2000, 2000)), np.ones((50, 2000)), np.ones((50, 2000)),
                        max_side=500)
    assert img.shape[0] == 500 and img.shape[1] <= 3 * 500 + 8


def test_double_fov_resume_reuses_the_found_axis(tmp_path, monkeypatch):
    from tomodl.recon import stitch

    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    scan = write_scan(tmp_path / "w.h5", theta, n_rows=4, n_det=41, center=8.0)
    cfg = _cfg(tmp_path, corrections=Corrections(file_type="double_fov"), nsino_per_chunk=1,
               center="auto")
    _killed_run(monkeypatch, scan.path, cfg, 3)
    monkeypatch.setattr(stitch, "find_center_360", lambda *a: pytest.fail("searched again"))
    res = reconstruct_file(scan.path, cfg)
    assert res.n_computed == 2 and abs(res.center - 8.0) < 0.2
