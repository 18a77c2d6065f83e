# SPDX-License-Identifier: BSD-3-Clause
"""Scans that hold line integrals (already flat-field corrected and -log'd, no flats), as
many beamline pipelines and TomoBank-derived files store them: read as they are, marked by the
file (root attribute ``normalisation="minus_log"``) or named by ``--input-values``."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_scan

from tomodl.cli import main
from tomodl.io import scan_info, write_dx
from tomodl.recon.corrections import Corrections
from tomodl.recon.pipeline import ReconConfig, reconstruct_file

THETA = np.linspace(0, np.pi, 41, endpoint=False)
CENTER = 14.6


@pytest.fixture
def raw(tmp_path):
    """41 angles x 5 rows x 31 columns of raw counts with flats (odd sizes)."""
    return write_scan(tmp_path / "raw.h5", THETA, n_rows=5, n_det=31, center=CENTER)


def lineint_file(path, p, *, marked=True):
    extra = {"/": {"normalisation": "minus_log"}} if marked else None
    return write_dx(path, p.astype(np.float32), None, None, THETA.astype(np.float32),
                    theta_units="rad", extra=extra)


def recon_h5(path, out, **corr):
    cfg = ReconConfig(algorithm="fbp", center=CENTER, save_format="h5", out_path=out,
                      progress=False, corrections=Corrections(**corr))
    res = reconstruct_file(path, cfg)
    with h5py.File(res.path, "r") as f:
        return f["/exchange/data"][...], json.loads(f.attrs["provenance"])


def test_marked_file_reconstructs_like_the_raw_scan(raw, tmp_path):
    from tomodl.recon.preprocess import minus_log, normalize
    from tomodl.io import read_dx

    scan = read_dx(raw.path)
    p = minus_log(normalize(scan.proj, scan.flat, scan.dark))      # what the raw path computes
    path = lineint_file(tmp_path / "li.h5", p)
    assert scan_info(path).line_integrals and not scan_info(raw.path).line_integrals
    ref, _ = recon_h5(raw.path, tmp_path / "a.h5")
    vol, prov = recon_h5(path, tmp_path / "b.h5")
    np.testing.assert_allclose(vol, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    assert prov["corrections"]["input_values"] == "auto"


def test_unmarked_file_is_refused_with_the_option_named_then_read_with_it(raw, tmp_path):
    path = lineint_file(tmp_path / "u.h5", raw.lineint, marked=False)
    res = CliRunner().invoke(main, ["recon", str(path), "--algorithm", "fbp",
                                    "--rotation-axis", str(CENTER), "--out-path",
                                    str(tmp_path / "u_rec")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--input-values line-integrals" in lines[0]
    assert not (tmp_path / "u_rec").exists()
    vol, prov = recon_h5(path, tmp_path / "c.h5", input_values="line-integrals")
    import tomodl

    assert prov["corrections"]["input_values"] == "line-integrals"
    ref = tomodl.recon(raw.lineint, THETA, center=CENTER, algorithm="fbp")   # the array API
    np.testing.assert_allclose(vol, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_explicit_counts_on_a_marked_file_refuses(raw, tmp_path):
    path = lineint_file(tmp_path / "m.h5", raw.lineint)
    with pytest.raises(Exception, match="no flat fields"):
        recon_h5(path, tmp_path / "d.h5", input_values="counts")


def test_dezinger_is_refused_on_line_integrals_and_stripes_work(raw, tmp_path):
    path = lineint_file(tmp_path / "z.h5", raw.lineint)
    with pytest.raises(Exception, match="drop --dezinger"):
        recon_h5(path, tmp_path / "e.h5", dezinger=3)
    vol, _ = recon_h5(path, tmp_path / "f.h5", remove_stripe_method="ti")
    plain, _ = recon_h5(path, tmp_path / "g.h5")
    assert np.isfinite(vol).all()
    assert np.abs(vol - plain).max() < 0.5 * np.abs(plain).max()     # filtered, not destroyed


def test_unknown_input_values_lists_the_options():
    with pytest.raises(ValueError, match=r"choose one of \['auto', 'counts', 'line-integrals'\]"):
        Corrections(input_values="log")
