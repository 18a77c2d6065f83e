# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl finetune`` and its engine (tomodl.training.budgeted): resume, the never-worse rule,
provenance, refusals, the command line, and a physics check on a tiny simulated dense scan."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomodl.errors import OutputError, TomodlError  # noqa: E402
from tomodl.training.budgeted import BudgetConfig, run_budgeted, work_dir  # noqa: E402

ARGS = {"base_filters": 4, "depth": 2, "residual": True}


def save_tiny_base(folder: Path, **config) -> Path:
    """An untrained residual ResAttUnet (base 4, depth 2): it returns its input."""
    from tomodl.models.registry import create_model
    from tomodl.models.weights import save_weights

    torch.manual_seed(0)
    return save_weights(create_model("resattunet", **ARGS), folder, arch="resattunet",
                        model_args=ARGS, filter_name="shepp", dtype=torch.float16, **config)


@pytest.fixture
def base(tmp_path) -> Path:
    return save_tiny_base(tmp_path / "base")


class ToyTask:
    """Denoise smooth random images; ``target_shift`` trains towards a wrong target (the
    held-out loss can only get worse); ``die_at`` simulates a kill at that step."""

    kind = "finetune"

    def __init__(self, target_shift: float = 0.0, die_at: int = -1, seed: int = 0):
        g = np.random.default_rng(seed)
        k = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
        clean = g.standard_normal((16, 1, 16, 16))
        for ax in (2, 3):
            clean = np.apply_along_axis(lambda v: np.convolve(v, k, "same"), ax, clean)
        noisy = clean + 0.5 * g.standard_normal(clean.shape)
        self.x, self.y = (torch.tensor(a, dtype=torch.float32) for a in (noisy, clean))
        self.device = torch.device("cpu")
        self.shift, self.die_at, self.calls = target_shift, die_at, 0

    def train_loss(self, model, rng):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        idx = torch.as_tensor(rng.integers(0, 12, 4))
        return torch.nn.functional.mse_loss(model(self.x[idx]).float(), self.y[idx] + self.shift)

    def validation_loss(self, model):
        return float(torch.nn.functional.mse_loss(model(self.x[12:]).float(), self.y[12:]))

    def reference_scores(self, model):
        return {"network": {"mse": self.validation_loss(model)}}

    def provenance(self):
        return {"toy": True, "shift": self.shift}


def cfg(**kw) -> BudgetConfig:
    values = dict(minutes=2.0, max_steps=30, lr=2e-2, precision="fp32", seed=1, threads=1,
                  validate_every=60, checkpoint_every=60, warmup_steps=2)
    values.update(kw)
    return BudgetConfig(**values)


def test_engine_improves_and_records_provenance(base, tmp_path):
    from tomodl.models.weights import read_config

    res = run_budgeted(ToyTask(), base, tmp_path / "out", cfg(), progress=False)
    assert res.improved and res.best_loss < res.base_loss and res.steps > 3
    c = read_config(tmp_path / "out")
    prov = c.extra["finetune"]
    assert prov["improved"] is True and prov["base"]["sha256"] == read_config(base).sha256
    assert prov["task"] == {"toy": True, "shift": 0.0} and prov["steps"] == res.steps
    assert prov["held_out"]["val_loss"] < prov["held_out"]["val_loss_base"]
    assert c.dtype == "float16" and c.normalization == read_config(base).normalization
    assert not work_dir(tmp_path / "out").exists()


def test_engine_never_exports_worse_than_base(base, tmp_path):
    from tomodl.models.weights import load_weights, read_config

    res = run_budgeted(ToyTask(target_shift=2.0), base, tmp_path / "out",
                       cfg(max_steps=6, validate_every=1e-6), progress=False)
    assert not res.improved and res.best_loss == res.base_loss
    assert read_config(tmp_path / "out").extra["finetune"]["improved"] is False
    a, b = load_weights(tmp_path / "out")[0], load_weights(base)[0]
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_engine_resumes_after_a_kill(base, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_budgeted(ToyTask(die_at=8), base, out, cfg(max_steps=12, checkpoint_every=1e-6),
                     progress=False)
    assert not out.exists()
    saved = torch.load(next((work_dir(out) / "checkpoints").iterdir()) / "state.pt",
                       weights_only=True)["extra"]
    assert saved["step"] == 7 and saved["elapsed"] > 0
    with pytest.raises(TomodlError, match="budget.lr"):
        run_budgeted(ToyTask(), base, out, cfg(lr=1e-3), progress=False)
    res = run_budgeted(ToyTask(), base, out, cfg(max_steps=12), progress=False)
    assert res.resumed and res.steps == 12 and res.seconds >= saved["elapsed"]


def test_engine_refusals(base, tmp_path):
    with pytest.raises(TomodlError, match="too small"):
        run_budgeted(ToyTask(), base, tmp_path / "a", cfg(minutes=1e-6), progress=False)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not written by tomodl"):
        run_budgeted(ToyTask(), base, user, cfg(), overwrite=True, progress=False)
    with pytest.raises(OutputError, match="already exists"):
        run_budgeted(ToyTask(), base, user, cfg(), progress=False)
    assert (user / "notes.txt").read_text() == "mine"
    with pytest.raises(TomodlError, match="precision"):
        BudgetConfig(precision="fp8")
    done = run_budgeted(ToyTask(), base, tmp_path / "b", cfg(max_steps=1), progress=False)
    assert json.loads((done.out / "config.json").read_text())["arch"] == "resattunet"
    again = run_budgeted(ToyTask(), base, tmp_path / "b", cfg(max_steps=1), overwrite=True,
                         progress=False)
    assert again.steps == 1 and not again.resumed


# -- finetune on a tiny simulated dense scan --------------------------------------------------
@pytest.fixture
def dense(tmp_path):
    """120 angles over 180 degrees, 8 rows of 48 px (each row the phantom, scaled)."""
    from conftest import write_scan

    theta = np.linspace(0.0, np.pi, 120, endpoint=False)
    return write_scan(tmp_path / "dense.h5", theta, n_rows=8, n_det=48, center=23.6)


def small(**kw):
    values = dict(angles=[12, 6], minutes=2.0, max_steps=30, crop=32, batch_size=4, lr=1e-2,
                  validate_every=1e9, center=23.6, progress=False, threads=1)
    values.update(kw)
    return values


def test_finetune_lowers_heldout_loss_and_loads_in_recon(dense, base, tmp_path):
    import tomodl
    from tomodl.models.weights import read_config
    from tomodl.training.finetune import finetune

    out = tmp_path / "my_model"
    res = finetune(dense.path, out, base=base, **small())
    assert res.improved and res.best_loss < 0.8 * res.base_loss
    prov = read_config(out).extra["finetune"]
    assert prov["base"]["sha256"] == read_config(base).sha256
    scan = prov["task"]["scans"][0]
    assert scan["sha256"] and scan["holdout_rows"] == [3, 4] and 3 not in scan["train_rows"]
    assert 2 not in scan["train_rows"] and 5 not in scan["train_rows"]      # guard band
    assert prov["task"]["angles_per_half_turn"] == [12.0, 6.0]
    assert set(prov["held_out"]["exported"]["network"]) == {"psnr@12", "ssim@12", "psnr@6",
                                                           "ssim@6"}
    fin, start = res.scores["final"]["network"], res.scores["base"]["network"]
    assert fin["psnr@12"] > start["psnr@12"]
    # the base returns its input: its scores are the FBP's
    assert start["psnr@12"] == pytest.approx(res.scores["base"]["fbp"]["psnr@12"], abs=0.05)
    sparse = dense.lineint[::10]
    rec = tomodl.recon(np.exp(-sparse), np.deg2rad(np.linspace(0, 180, 120, endpoint=False))[::10],
                       center=23.6, algorithm="fbp+resattunet", model=str(out))
    assert rec.shape == (8, 48, 48) and np.isfinite(rec).all()


def test_finetune_refusals(dense, base, tmp_path):
    from tomodl.training.finetune import finetune

    with pytest.raises(TomodlError, match=r"needs 150 \(3x the largest"):
        finetune(dense.path, tmp_path / "a", base=base, **small(angles=[50]))
    with pytest.raises(TomodlError, match="too small"):
        finetune(dense.path, tmp_path / "b", base=base, **small(minutes=1e-5))
    with pytest.raises(TomodlError, match="not both"):
        finetune(dense.path, tmp_path / "c", base=base, **small(sparse=[10]))
    with pytest.raises(TomodlError, match="validated for 9-600"):
        finetune(dense.path, tmp_path / "d", base="resattunet", **small(angles=[6]))
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_rows_and_holdout_choice():
    from tomodl.training.scan_data import choose_rows, subset

    train, held = choose_rows(2, 1, 1 << 30)
    assert (train, held) == ((0,), (1,))                       # the tooth: one row each
    train, held = choose_rows(100, 1, 1 << 30)
    assert held == (40, 46, 53, 59) and not set(range(35, 65)) & set(train)
    train, held = choose_rows(100, 10, 200)               # 20 rows fit: 4 held out, 16 train
    assert len(train) == 16 and (train[0], train[-1]) == (0, 99) and len(held) == 4
    with pytest.raises(TomodlError, match="distinct"):
        choose_rows(10, 1, 1 << 30, rows=[1, 2], holdout=[2])
    assert subset(181, 46, 0.0).size == 46 and len(set(subset(181, 10, 17.9))) == 10
    from tomodl.training.finetune import parse_counts

    assert parse_counts(None, None, 181) == (60, 30, 15)       # the defaults the scan can label
    assert parse_counts(None, None, 100) == (30, 15)
    assert parse_counts(None, [10, 20], 180) == (18, 9)


def test_cli_one_line_errors(dense, base, tmp_path):
    from click.testing import CliRunner

    from tomodl.cli import main

    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    for args in (["--angles", "50"], ["--angles", "x"], ["--out", str(user), "--overwrite"]):
        r = CliRunner().invoke(main, ["finetune", str(dense.path), "--model", str(base),
                                      "--minutes", "0.5", "--center", "23.6",
                                      "--no-progress"] + args)
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert (user / "keep.txt").read_text() == "x"


def write_minus_log(path: Path, n_det: int = 40, mark: bool = True) -> Path:
    """Line integrals without flats (like tomo77_minuslog.h5), 90 angles, 4 rows."""
    import h5py

    from conftest import make_lineint

    theta = np.linspace(0.0, np.pi, 90, endpoint=False)
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", data=make_lineint(theta, 4, n_det, 19.5))
        f.create_dataset("/exchange/theta", data=np.rad2deg(theta)).attrs["units"] = "degrees"
        if mark:
            f.attrs["normalisation"] = "minus_log"
    return path


def test_minus_log_scan_and_mixed_widths(dense, base, tmp_path):
    from tomodl.errors import ScanFileError
    from tomodl.recon.corrections import NO_CORRECTIONS
    from tomodl.recon.fbp import fbp
    from tomodl.training.finetune import finetune
    from tomodl.training.scan_data import RowStore, plan_scan

    log = write_minus_log(tmp_path / "log.h5")
    plan = plan_scan(log, center=19.5, device="cpu")
    assert plan.minus_log and plan.n_det == 40 and plan.holdout_rows == (2,)
    store = RowStore([plan], NO_CORRECTIONS, "shepp", device="cpu")
    with h5py_file(log) as data:
        ref = fbp(np.swapaxes(data, 0, 1)[[0]], plan.theta, 19.5, device="cpu")[0]
    np.testing.assert_allclose(store.label(0), ref, atol=1e-6)
    with pytest.raises(ScanFileError, match="no flat fields"):
        plan_scan(write_minus_log(tmp_path / "unmarked.h5", mark=False), center=19.5,
                  device="cpu")
    # widths 48 and 40 mixed: crops make the width irrelevant
    res = finetune([dense.path, log], tmp_path / "mixed", base=base,
                   **small(center=[23.6, 19.5], max_steps=2, angles=[10]))
    assert len(read_prov(res.out)["task"]["scans"]) == 2


def h5py_file(path):
    import contextlib

    import h5py

    @contextlib.contextmanager
    def cm():
        with h5py.File(path, "r") as f:
            yield f["/exchange/data"][()]
    return cm()


def read_prov(out):
    from tomodl.models.weights import read_config

    return read_config(out).extra["finetune"]


def test_cli_finetune_writes_a_model(dense, base, tmp_path):
    from click.testing import CliRunner

    from tomodl.cli import main

    out = tmp_path / "cli_model"
    r = CliRunner().invoke(main, ["finetune", str(dense.path), "--model", str(base),
                                  "--angles", "12", "--minutes", "0.04", "--center", "23.6",
                                  "--ncore", "1", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "held-out psnr@12: FBP" in r.output and f"--model {out}" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not work_dir(out).exists()


def test_cli_adapt_is_wired(base, tmp_path):
    """`tomodl adapt` runs tomodl.training.adapt.adapt and reports like finetune."""
    from click.testing import CliRunner

    from conftest import write_scan
    from tomodl.cli import main

    scan = write_scan(tmp_path / "sparse.h5", np.linspace(0, np.pi, 36, endpoint=False),
                      n_rows=8, n_det=48, center=23.6)
    args = ["adapt", str(scan.path), "--model", str(base), "--center", "23.6", "--ncore", "1",
            "--no-progress", "--out", str(tmp_path / "new" / "m")]   # parents are created
    r = CliRunner().invoke(main, args + ["--minutes", "0.03"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("adapt: ") and (tmp_path / "new" / "m" / "config.json").is_file()
    r = CliRunner().invoke(main, args + ["--minutes", "0.03"])       # exists, no --overwrite
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "already exists" in r.output
    r = CliRunner().invoke(main, args + ["--minutes", "0.03", "--overwrite", "--no-resume",
                                         "--proximity", "0"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "new" / "m" / "config.json").read_text())
    assert cfg["extra"]["finetune"]["task"]["settings"]["proximity"] == 0.0
