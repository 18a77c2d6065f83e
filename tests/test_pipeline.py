# SPDX-License-Identifier: BSD-3-Clause
"""The chunked file pipeline: conveyor ordering and failures, memory plan, bounded memory,
provenance, one-line errors for failing chunks and unwritable outputs."""
import errno
import json
import os
import re
import subprocess
import threading
import tracemalloc
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save_tiny_unet, write_scan

from tomodl.cli import main
from tomodl.recon import budget
from tomodl.recon.conveyor import ChunkFailure, StageClock, run_conveyor
from tomodl.recon.pipeline import ReconConfig, chunks_todo, plan_chunks, reconstruct_file

CHUNKS = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]


def run(*args):
    """``tomodl ARGS`` in-process; ``recon`` runs plain FBP unless ``--algorithm`` is given (the
    default algorithm, fbp+resattunet, is tested in test_releases.py)."""
    args = [str(a) for a in args]
    if args and args[0] == "recon" and "--algorithm" not in args:
        args[1:1] = ["--algorithm", "fbp"]
    return CliRunner().invoke(main, args)


def one_line_error(res):
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def read_h5(path):
    with h5py.File(path, "r") as f:
        return f["/exchange/data"][()], json.loads(f.attrs["provenance"])


@pytest.fixture
def scan(tmp_path):
    """37 angles x 12 rows x 29 columns (odd sizes), axis 13.6."""
    return write_scan(tmp_path / "scan.h5", np.linspace(0, np.pi, 37, endpoint=False),
                      n_rows=12, n_det=29, center=13.6)


# -- conveyor -------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_conveyor_processes_every_chunk_in_order(depth):
    seen, threads = [], set()

    def consume(rows, res):
        threads.add(threading.current_thread().name)
        seen.append((rows, res))

    run_conveyor(CHUNKS, lambda r: r[0], lambda r, x: x * 10, consume, queue_depth=depth)
    assert seen == [(r, r[0] * 10) for r in CHUNKS]
    assert threads == ({"MainThread"} if depth == 0 else {"tomodl-write"})


@pytest.mark.parametrize("stage", ["read", "reconstruction"])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_conveyor_failure_keeps_every_earlier_chunk_and_nothing_later(stage, depth):
    seen = []

    def produce(rows):
        if stage == "read" and rows == (4, 6):
            raise OSError("bad sector")
        return rows

    def compute(rows, item):
        if stage == "reconstruction" and rows == (4, 6):
            raise RuntimeError("out of memory")
        return item

    with pytest.raises(ChunkFailure) as err:
        run_conveyor(CHUNKS, produce, compute, lambda r, x: seen.append(r), queue_depth=depth)
    assert err.value.rows == (4, 6) and err.value.stage == stage
    assert seen == CHUNKS[:2]


def test_conveyor_write_failure_stops_the_run():
    seen = []

    def consume(rows, res):
        if rows == (2, 4):
            raise OSError(errno.ENOSPC, "No space left on device")
        seen.append(rows)

    with pytest.raises(ChunkFailure) as err:
        run_conveyor(CHUNKS, lambda r: r, lambda r, x: x, consume, queue_depth=1)
    assert err.value.stage == "write" and isinstance(err.value.__cause__, OSError)
    assert seen == [(0, 2)]


def test_stage_clock_summary():
    clock = StageClock()
    clock.add({"fbp": 2.0, "read": 0.5})
    line = clock.summary(wall=2.2)
    assert "fbp 2.00" in line and "slowest stage fbp (wall / slowest 1.10)" in line


# -- memory plan ----------------------------------------------------------------------------
def test_parse_memory():
    assert budget.parse_memory("512M") == 512 * 2**20
    assert budget.parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert budget.parse_memory(4096) == 4096
    for bad in ("lots", "-1G", "3 parsecs", 0):
        with pytest.raises(ValueError, match="512M, 8G"):
            budget.parse_memory(bad)
    msg = one_line_error(run("recon", "x.h5", "--max-memory", "lots"))
    assert "--max-memory" in msg or "x.h5" in msg


def test_chunk_rows_follow_the_budget_not_the_volume(scan):
    from tomodl.io import scan_info

    info = scan_info(scan.path)
    per_row = budget.per_row_bytes(info, 29, 1, False)
    assert per_row < budget.per_row_bytes(info, 29, 3, False)        # deeper queues cost memory
    assert per_row < budget.per_row_bytes(info, 29, 1, True)         # so does the denoiser
    plan = budget.plan_memory(info, 1000, n_grid=29, queue_depth=1, budget=10**6 + 7 * per_row,
                              fixed=10**6, denoised=False)
    assert plan.rows == 6 and plan.peak <= plan.budget                # 7 fit, rounded to even
    big = budget.plan_memory(info, 4000, n_grid=29, queue_depth=1, budget=plan.budget,
                             fixed=10**6, denoised=False)
    assert big.rows == plan.rows and big.peak == plan.peak            # 4x the volume, same peak
    few = budget.plan_memory(info, 12, n_grid=29, queue_depth=1, budget=10**12, fixed=0,
                             denoised=False)
    assert few.rows == 2                                              # >= MIN_CHUNKS chunks
    with pytest.raises(ValueError, match="too small for this scan.*--max-memory"):
        budget.plan_memory(info, 12, n_grid=29, queue_depth=1, budget=10**6, fixed=10**6,
                           denoised=False)
    cfg = ReconConfig(algorithm="fbp", center=13.6, max_memory=2**30)
    assert plan_chunks(info, cfg) == [(r, r + 2) for r in range(0, 12, 2)]


def test_refinement_is_in_the_budget():
    """--refine adds the solver's per-row state and the projector (at its sparse build peak, or
    the grid kernels' blocks) to the budget, and the auto backend is the projector's own."""
    from tomodl.recon.chunks import plan_memory
    from tomodl.recon.projector import (SPARSE_PEAK_BYTES, ParallelProjector, choose_backend,
                                        projector_bytes)

    info = SimpleNamespace(n_angles=37, n_det=29, n_flat=2, n_dark=2, n_rows=400)
    assert budget.per_row_bytes(info, 29, 1, True, refined=True) == \
        budget.per_row_bytes(info, 29, 1, True) + budget.REFINE_BYTES_PER_GRID_PIXEL * 29 ** 2 \
        + budget.REFINE_BYTES_PER_SINO_PIXEL * 29 * 37
    assert projector_bytes(29, 37) == 29 * 29 * 37 * SPARSE_PEAK_BYTES
    assert choose_backend("auto", 4096 ** 2 * 1500) == "grid"
    from unittest import mock

    with mock.patch("tomodl.models.memory.available_ram", return_value=2**20):
        assert choose_backend("auto", 29 * 29 * 37) == "grid"   # its build would not fit
        assert choose_backend("auto", 29 * 29 * 37, cuda=True) == "sparse"
        assert projector_bytes(29, 37) == projector_bytes(29, 37, backend="grid")
    assert projector_bytes(4096, 1500, threads=2) < 2**28          # never the huge matrices
    assert ParallelProjector(29, np.linspace(0, np.pi, 37), 29).backend == \
        choose_backend("auto", 29 * 29 * 37)
    plain = plan_memory(info, ReconConfig(algorithm="fbp+unet", center=13.6, max_memory=2**30))
    refined = plan_memory(info, ReconConfig(algorithm="fbp+unet", center=13.6,
                                            max_memory=2**30, refine=10))
    assert refined.fixed == plain.fixed + projector_bytes(29, 37, threads=budget.cpu_threads(None))
    assert refined.per_row > plain.per_row


@pytest.mark.parametrize("n", [29, 64, 300])
def test_the_denoiser_minimum_gives_whole_slices_or_sane_tiles(n):
    torch = pytest.importorskip("torch")
    from tomodl.models.inference import plan_denoise
    from tomodl.models.registry import create_model

    net = create_model("unet", base_filters=4, depth=2)
    need = budget.denoiser_memory(net, n, torch.float32)
    plan = plan_denoise(net, (3, n, n), torch.device("cpu"), torch.float32,
                        max_memory=need.share(0))                  # the minimum, never less
    assert need.share(0) == need.minimum <= need.share(10**12) == need.wanted
    assert plan.tile == 0 or plan.tile >= budget.MIN_TILE_MARGINS * net.receptive_margin


def test_the_suggested_max_memory_works_and_does_not_move(tmp_path):
    """One budget with the network in it: too little is one error naming the minimum, the
    advice does not move when followed, and exactly the minimum runs (without tiny tiles)."""
    path = write_scan(tmp_path / "wide.h5", np.linspace(0, np.pi, 37, endpoint=False),
                      n_rows=4, n_det=101, center=50.2).path
    weights = save_tiny_unet(tmp_path / "w")
    args = ("recon", path, "--algorithm", "fbp+unet", "--model", weights, "--dtype", "float32",
            "--rotation-axis", 50.2, "--ncore", 1, "--save-format", "h5", "--no-progress",
            "--out-path", tmp_path / "r.h5", "--max-memory")
    need = re.search(r"pass --max-memory (\d+)M ", one_line_error(run(*args, "64K"))).group(1)
    assert f"pass --max-memory {need}M " in one_line_error(run(*args, f"{int(need) - 1}M"))
    res = run(*args, f"{need}M")
    assert res.exit_code == 0, res.output
    assert "too small" not in res.stderr


def test_api_and_command_line_set_up_the_denoiser_alike(scan, tmp_path, caplog):
    """One set-up: the same warnings (filter and sparse factor) and the same memory sizing."""
    pytest.importorskip("torch")
    from tomodl.io import read_dx
    from tomodl.recon.api import recon
    from tomodl.recon.preprocess import minus_log, normalize

    weights = save_tiny_unet(tmp_path / "w", filter_name="hann", sparse_factor=4)
    raw = read_dx(scan.path)
    caplog.set_level("WARNING")
    recon(minus_log(normalize(raw.proj, raw.flat, raw.dark)), raw.theta, 13.6,
          algorithm="fbp+unet", model=str(weights), sparse=2, ncore=1)
    api = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    caplog.clear()
    reconstruct_file(scan.path, ReconConfig(algorithm="fbp+unet", model=str(weights), sparse=2,
                                            center=13.6, save_format="h5", progress=False,
                                            out_path=tmp_path / "r.h5", ncore=1))
    cli = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert api == cli and len(api) == 2, (api, cli)
    assert "sparse factor 4" in api[0] and "filter 'hann'" in api[1]


def test_chunks_todo_rebuilds_the_same_chunks_after_an_interruption():
    full = chunks_todo([(0, 11)], 5, 4)
    assert full == ((5, 9), (9, 13), (13, 16))
    assert chunks_todo([(4, 8), (8, 11)], 5, 4) == full[1:]


def test_peak_memory_does_not_grow_with_the_volume(tmp_path):
    """numpy allocations (tracemalloc) of an 8x longer volume stay those of a few chunks (the
    peak creeps up a little with more chunks: more chances for the stages to peak together)."""
    theta = np.linspace(0, np.pi, 45, endpoint=False)
    peaks = []
    for i, rows in enumerate((12, 12, 96)):                    # the first run warms up
        path = write_scan(tmp_path / f"s{i}.h5", theta, n_rows=rows, n_det=41, center=20.0)
        cfg = ReconConfig(algorithm="fbp", center=20.0, nsino_per_chunk=2, save_format="h5",
                          progress=False, preview=False,   # its strips grow as slices x N
                          out_path=tmp_path / f"r{i}.h5")
        tracemalloc.start()
        reconstruct_file(path.path, cfg)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    extra_slices = 84 * 41 * 41 * 4                             # what keeping them would cost
    assert peaks[2] < peaks[1] + extra_slices / 2, peaks


# -- the file pipeline ----------------------------------------------------------------------
def test_queue_depths_give_identical_volumes(scan, tmp_path):
    vols = []
    for depth in (0, 1, 2):
        cfg = ReconConfig(algorithm="fbp", center=13.6, nsino_per_chunk=3, queue_depth=depth,
                          save_format="h5",
                          out_path=tmp_path / f"d{depth}.h5", progress=False)
        res = reconstruct_file(scan.path, cfg)
        assert res.n_computed == 12 and res.chunk_rows == 3 and res.stages["fbp"] > 0
        vols.append(read_h5(res.path)[0])
    assert all(np.array_equal(vols[0], v) for v in vols[1:])


def test_provenance_records_the_model_and_the_input(scan, tmp_path):
    pytest.importorskip("torch")
    weights = save_tiny_unet(tmp_path / "w", filter_name="hann", sparse_factor=4)
    out = tmp_path / "dl.h5"
    res = run("recon", scan.path, "--algorithm", "fbp+unet", "--model", weights, "--dtype",
              "float32", "--save-format", "h5", "--out-path", out, "--no-progress")
    assert res.exit_code == 0, res.output + res.stderr
    vol, prov = read_h5(out)
    sha = json.loads((weights / "config.json").read_text())["sha256"]
    assert prov["model"] == {"name": "unet", "weights": str(weights.resolve()), "sha256": sha,
                             "dtype": "float32", "trained_sparse_factor": 4,
                             "trained_filter": "hann"}
    assert prov["sparse_factor"] == 4 and prov["algorithm"] == "fbp+unet"
    assert prov["center_source"] == "auto (auto)" and abs(prov["center"] - 13.6) < 0.5
    st = os.stat(scan.path)
    assert prov["input"] == {"file": str(scan.path.resolve()), "size": st.st_size,
                             "mtime": st.st_mtime, "layout": "dxchange"}
    assert prov["command"].startswith("tomodl ") and prov["tomodl_version"]
    assert {"started", "hostname", "user", "rows", "n_angles", "num_gridx"} <= set(prov)
    assert vol.shape == (12, 29, 29) and np.isfinite(vol).all()


def test_nan_rows_fail_with_the_rows_and_leave_nothing_behind(scan, tmp_path):
    """A NaN in the data is found by the chunk that reads it: every rerun would meet it again,
    so the message names the cause and the rows, does not ask for a rerun, and the partial
    output (with its progress record and lock) is removed."""
    from tomodl.io import read_dx, write_dx

    proj, flat, dark, theta = read_dx(scan.path)
    proj[7, 5, 3] = np.nan                                    # detector row 5 -> chunk [4, 6)
    bad = tmp_path / "nan.h5"
    write_dx(bad, proj, flat, dark, theta, theta_units="rad")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "nan_rec.h5"
    args = ("recon", bad, "--rotation-axis", 13.6, "--nsino-per-chunk", 2, "--save-format",
            "h5", "--out-path", out, "--no-progress")
    msg = one_line_error(run(*args))
    assert "NaN" in msg and "(detector rows [4, 6))" in msg and "nothing was written" in msg
    assert "rerun the same command" not in msg and "--start-row/--end-row" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_missing_gpu_is_one_line_before_any_output(scan, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for extra in ((), ("--reconstruction-type", "try")):
        msg = one_line_error(run("recon", scan.path, "--rotation-axis", 13.6, "--device", "cuda",
                                 "--out-path", tmp_path / "r", "--no-progress", *extra))
        assert "no CUDA GPU" in msg and "--device cpu" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.h5"]


@pytest.mark.parametrize("option", [("--center-search-width", "1e9"),
                                    ("--center-search-step", "1e-9"),
                                    ("--center-search-width", "inf")])
def test_try_mode_bounds_the_trial_centres(scan, tmp_path, option):
    msg = one_line_error(run("recon", scan.path, "--reconstruction-type", "try",
                             "--rotation-axis", 13.6, "--out-path", tmp_path / "t", *option))
    assert "at most 500" in msg or "finite, positive" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.h5"]


def test_write_center_bounds_the_trial_centres_before_allocating():
    from tomodl.recon.center import write_center

    sino = np.zeros((8, 1, 9), np.float32)
    with pytest.raises(ValueError, match="gives 2000000000 trial centres; at most 500"):
        write_center(sino, np.linspace(0, 3, 8), "unused", (0, 2, 1e-9))
    with pytest.raises(ValueError, match="finite"):
        write_center(sino, np.linspace(0, 3, 8), "unused", (0, np.inf, 1))


def test_data_warnings_come_once_per_run_not_once_per_chunk(scan, tmp_path, caplog):
    from tomodl.io import read_dx, write_dx

    proj, flat, dark, theta = read_dx(scan.path)
    flat[:, :, 3] = dark[0, :, 3]                      # a dead detector column
    proj[:, :, 20] = 0                                 # a column below the transmission floor
    bad = tmp_path / "dead.h5"
    write_dx(bad, proj, flat, dark, theta, theta_units="rad")
    caplog.set_level("INFO", logger="tomodl")
    reconstruct_file(bad, ReconConfig(algorithm="fbp", center=13.6, nsino_per_chunk=2,
                                      save_format="h5", progress=False,
                                      out_path=tmp_path / "r.h5"))
    warned = [r.msg for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(warned) == sorted(set(warned)) and len(warned) == 2, warned
    assert sum("came 5 more times in this run" in r.getMessage() for r in caplog.records) == 2


def test_disk_full_during_the_run_is_one_line(scan, tmp_path, monkeypatch):
    real, calls = h5py.Dataset.__setitem__, []

    def fill_up(self, key, value):
        calls.append(key)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", fill_up)
    out = tmp_path / "full.h5"
    msg = one_line_error(run("recon", scan.path, "--rotation-axis", 13.6, "--nsino-per-chunk",
                             2, "--save-format", "h5", "--out-path", out, "--no-progress"))
    assert "no space left on device" in msg and "free disk space" in msg, msg
    assert "4 of 12 slices" in msg and msg.endswith("(--no-resume starts again and clears it)")
    assert not out.exists() and out.with_name("full.h5.partial").exists()


def _read_only(directory):
    if os.geteuid() != 0:
        directory.chmod(0o500)
        return lambda: directory.chmod(0o700)
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
        pytest.skip("root without chattr: cannot make a read-only directory")
    return lambda: subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_unwritable_output_directory_is_one_line(scan, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = _read_only(locked)
    try:
        msg = one_line_error(run("recon", scan.path, "--rotation-axis", 13.6, "--save-format",
                                 "h5", "--out-path", locked / "rec.h5", "--no-progress"))
    finally:
        undo()
    assert msg.startswith(f"Error: Cannot create output '{locked}/rec.h5.partial'"), msg
    assert "choose a directory you can write to" in msg
    assert list(locked.iterdir()) == []
    blocker = tmp_path / "afile"
    blocker.write_text("")
    msg = one_line_error(run("recon", scan.path, "--rotation-axis", 13.6, "--out-path",
                             blocker / "rec", "--no-progress"))
    assert "Cannot create output" in msg


def test_missing_input_is_one_line(tmp_path):
    msg = one_line_error(run("recon", tmp_path / "nowhere.h5"))
    assert "nowhere.h5" in msg and "does not exist" in msg
