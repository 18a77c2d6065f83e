# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl simulate foam|pairs`` in-process with click's CliRunner."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tomodl.cli.simulate import FAMILY_NAMES, simulate
from tomodl.sim.families import FAMILIES

SMALL = ["--size", "41", "--slices", "2", "--angles", "120", "--no-progress"]


def run(*args):
    return CliRunner().invoke(simulate, [str(a) for a in args])


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    for w in words:
        assert w in lines[0], res.output


def test_family_names_match_the_library():
    assert set(FAMILY_NAMES) == set(FAMILIES)


def test_foam_writes_a_scan_that_the_recon_pipeline_reads(tmp_path):
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    out = tmp_path / "foam.h5"
    res = run("foam", out, *SMALL, "--family", "layered", "--seed", 3, "--rings", 0.002,
              "--set", "n_layers=2")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        meta = json.loads(f["/tomodl_sim"].attrs["metadata"])
        gt = f["/tomodl_sim/ground_truth"][()]
    assert meta["family"] == "layered" and meta["params"]["n_layers"] == 2
    assert meta["acquisition"]["ring_strength"] == 0.002
    result = reconstruct_file(out, ReconConfig(algorithm="fbp", center=meta["geometry"]["center"],
                                               save_format="h5", out_path=tmp_path / "rec.h5"))
    with h5py.File(result.path, "r") as f:
        rec = f["exchange/data"][()]
    assert rec.shape == gt.shape
    assert np.corrcoef(rec.ravel(), gt.ravel())[0, 1] > 0.9


def test_pairs_command(tmp_path):
    scans = []
    for seed in range(3):
        scans.append(tmp_path / f"s{seed}.h5")
        assert run("foam", scans[-1], *SMALL, "--seed", seed).exit_code == 0
    res = run("pairs", *scans, "--out", tmp_path / "pairs.h5", "--sparse", 10, "--no-progress")
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "pairs.h5", "r") as f:
        assert sorted(f) == ["test", "train", "val"]
        assert sum(f[s]["input"].shape[0] for s in f) == 6
        assert json.loads(f.attrs["metadata"])["sparse_factor"] == 10
    one_line_error(run("pairs", *scans, "--out", tmp_path / "pairs.h5"), "exists")
    one_line_error(run("pairs", scans[0], "--out", tmp_path / "p.h5", "--fractions", "1,x"),
                   "--fractions")
    one_line_error(run("pairs", scans[0], "--out", tmp_path / "p.h5", "--sparse", "4,x"),
                   "--sparse")
    one_line_error(run("pairs", scans[0], "--out", tmp_path / "p.h5", "--sparse", "0"),
                   "sparse")
    res = run("pairs", *scans, "--out", tmp_path / "mix.h5", "--sparse", "4,10", "--no-progress")
    assert res.exit_code == 0 and "1 in 4,10 angles" in res.output
    with h5py.File(tmp_path / "mix.h5", "r") as f:
        assert json.loads(f.attrs["metadata"])["sparse_factors"] == [4, 10]


@pytest.mark.parametrize("args, words", [
    (["--angles", "0"], ["--angles"]),
    (["--flux", "-5"], ["--flux"]),
    (["--size", "64", "--spheres", "400", "--porosity", "0.45"], ["fit"]),
    (["--set", "sponginess=3"], ["sponginess"]),
    (["--family", "sponge"], ["--family"]),
])
def test_impossible_parameters_are_one_line_errors(tmp_path, args, words):
    one_line_error(run("foam", tmp_path / "x.h5", "--slices", "2", "--angles", "30", *args),
                   *words)
    assert not (tmp_path / "x.h5").exists()


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "a.h5"
    out.write_bytes(b"keep")
    one_line_error(run("foam", out, *SMALL), "exists", "overwrite")
    assert out.read_bytes() == b"keep"
    # --overwrite replaces only what tomodl wrote (issue 11): not this file, but its own scan
    one_line_error(run("foam", out, *SMALL, "--overwrite"), "not written by tomodl")
    assert out.read_bytes() == b"keep"
    out.unlink()
    assert run("foam", out, *SMALL).exit_code == 0
    assert run("foam", out, *SMALL, "--overwrite").exit_code == 0
