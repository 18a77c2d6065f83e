# SPDX-License-Identifier: BSD-3-Clause
"""Kill ``python -m tomodl recon`` with SIGKILL mid-volume, rerun it, and compare bit for bit.

Also: the auto-found centre is reused, finished chunks are not recomputed, ``--no-resume``
starts again, other settings are refused with ``--resume`` and start again without it, and a
second run on an output being written is refused (lock file).
"""
import hashlib
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tomodl.cli import main
from tomodl.io import read_volume as read_back_volume

N_ROWS = 64
OUT_NAME = {"h5": "rec.h5", "tiff": "rec_tiff", "zarr": "rec.zarr"}


def run(*args):
    """``tomodl ARGS`` in-process; ``recon`` runs plain FBP unless ``--algorithm`` is given (the
    default algorithm, fbp+resattunet, is tested in test_releases.py)."""
    args = [str(a) for a in args]
    if args and args[0] == "recon" and "--algorithm" not in args:
        args[1:1] = ["--algorithm", "fbp"]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "foam.h5"
    res = run("simulate", "foam", path, "--size", 64, "--slices", N_ROWS, "--angles", 45,
              "--seed", 2, "--no-progress")
    assert res.exit_code == 0, res.output
    return path


def read_volume(fmt, path):
    return read_back_volume(path, fmt)


def progress(out):
    """The progress record of ``out``: (slices done, centre), or (0, None) before it exists."""
    try:
        record = json.loads(out.with_name(out.name + ".progress.json").read_text())
    except (FileNotFoundError, ValueError):
        return 0, None
    return sum(b - a for a, b in record["done"]), record["provenance"]["center"]


def recon_cmd(args):
    """``python -m tomodl -v recon ARGS``, plain FBP unless ``--algorithm`` is given."""
    args = [str(a) for a in args]
    algorithm = [] if "--algorithm" in args else ["--algorithm", "fbp"]
    return [sys.executable, "-m", "tomodl", "-v", "recon", *algorithm, *args]


def run_and_kill(args, out, at_least):
    """Start ``python -m tomodl -v recon ARGS`` and SIGKILL it once ``at_least`` slices are
    recorded as done; return the slices done when it died."""
    proc = subprocess.Popen(recon_cmd(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if progress(out)[0] >= at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{err}"
    assert not out.exists()                     # nothing under the final name
    return progress(out)


def rerun(args):
    proc = subprocess.run(recon_cmd(args),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def computed(log):
    """(already written, computed) slices from the rerun's plan line."""
    m = re.search(r"(\d+) of \d+ slices already written, computing (\d+) in", log)
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("fmt, kills", [("h5", 2), ("tiff", 1), ("zarr", 1)])
def test_sigkill_and_rerun_gives_the_uninterrupted_volume(scan, tmp_path, fmt, kills):
    common = ["--nsino-per-chunk", 2, "--save-format", fmt, "--no-progress"]
    ref = tmp_path / ("ref_" + OUT_NAME[fmt])
    res = run("recon", scan, "--out-path", ref, *common)
    assert res.exit_code == 0, res.stderr
    reference = read_volume(fmt, ref)
    ref_center = float(re.search(r"Rotation axis \(found\) ([\d.]+)", res.output).group(1))

    before = (scan.stat().st_mtime_ns, hashlib.sha256(scan.read_bytes()).hexdigest())
    out = tmp_path / OUT_NAME[fmt]
    args = [scan, "--out-path", out, *common]   # the same command every time (auto resume)
    done, center = run_and_kill(args, out, at_least=4)
    assert 4 <= done < N_ROWS and center == pytest.approx(ref_center, abs=0.006)
    if kills == 2:
        done2, _ = run_and_kill(args + ["--resume"], out, at_least=done + 4)
        assert done2 > done
        done = done2
    log = rerun(args)
    assert computed(log) == (done, N_ROWS - done)   # finished chunks were not recomputed
    assert "reusing the rotation axis" in log
    assert f"({done} were already done)" in log
    np.testing.assert_array_equal(read_volume(fmt, out), reference)
    from tomodl.recon.preview import preview_path      # the default quick look (issue 14)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ref.name, out.name, preview_path(ref).name, preview_path(out).name])
    assert (scan.stat().st_mtime_ns, hashlib.sha256(scan.read_bytes()).hexdigest()) == before


def test_no_resume_and_changed_settings_start_again(scan, tmp_path, monkeypatch):
    from tomodl.recon import stages

    real, calls = stages.reconstruct_chunk, []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "r.h5"
    args = ["recon", scan, "--rotation-axis", 31.5, "--nsino-per-chunk", 8, "--save-format",
            "h5", "--out-path", out, "--no-progress"]
    monkeypatch.setattr(stages, "reconstruct_chunk", dies_on_third)
    assert run(*args).exit_code != 0                   # Ctrl-C after 2 chunks
    assert progress(out)[0] == 16
    monkeypatch.setattr(stages, "reconstruct_chunk", real)
    res = run(*args, "--resume", "--fbp-filter", "hann")
    assert res.exit_code == 2 and "different settings (provenance keys ['filter_name'])" \
        in res.stderr
    assert progress(out)[0] == 16                      # the refusal kept the partial output
    res = run(*args, "--no-resume")
    assert res.exit_code == 0 and f"reconstructed {N_ROWS} of {N_ROWS} slices" in res.output
    out.unlink()
    monkeypatch.setattr(stages, "reconstruct_chunk", dies_on_third)
    calls.clear()
    run(*args)
    monkeypatch.setattr(stages, "reconstruct_chunk", real)
    res = run(*args, "--fbp-filter", "hann")           # auto: other settings, start again
    assert res.exit_code == 0 and f"reconstructed {N_ROWS} of {N_ROWS}" in res.output


def test_a_second_run_on_the_same_output_is_refused(scan, tmp_path):
    from tomodl.io.atomic import OutputLock

    out = tmp_path / "busy.h5"
    lock = OutputLock(out)                  # as held by a running tomodl process
    try:
        res = run("recon", scan, "--rotation-axis", 31.5, "--save-format", "h5", "--out-path",
                  out, "--no-progress")
    finally:
        lock.release()
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "is being written by another process" in res.stderr
    assert not out.exists() and not out.with_name("busy.h5.partial").exists()
