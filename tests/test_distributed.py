# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl recon --workers/--scheduler``: 2 Dask worker processes on loopback give the
single-process volume bit for bit, also when a worker is killed mid-run; a failing chunk is
one line and the rerun finishes."""
import json
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save_tiny_unet, write_scan

from tomodl.cli import main

pytest.importorskip("distributed")
pytest.importorskip("torch")

N_ROWS = 16


def run(*args):
    """``tomodl ARGS`` in-process; ``recon`` runs plain FBP unless ``--algorithm`` is given (the
    default algorithm, fbp+resattunet, is tested in test_releases.py)."""
    args = [str(a) for a in args]
    if args and args[0] == "recon" and "--algorithm" not in args:
        args[1:1] = ["--algorithm", "fbp"]
    return CliRunner().invoke(main, args)


def read_h5(path):
    with h5py.File(path, "r") as f:
        return f["/exchange/data"][()], json.loads(f.attrs["provenance"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A scan, tiny random U-Net weights, and the single-process reference volume."""
    tmp = tmp_path_factory.mktemp("dist")
    scan = write_scan(tmp / "scan.h5", np.linspace(0, np.pi, 41, endpoint=False),
                      n_rows=N_ROWS, n_det=33, center=16.2)
    weights = save_tiny_unet(tmp / "w", filter_name="shepp")
    common = ["--algorithm", "fbp+unet", "--model", weights, "--dtype", "float32",
              "--nsino-per-chunk", 4, "--save-format", "h5", "--no-progress"]
    res = run("recon", scan.path, "--out-path", tmp / "single.h5", *common)
    assert res.exit_code == 0, res.stderr
    return scan.path, common, *read_h5(tmp / "single.h5")


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={
                          "dashboard": False, "dashboard_address": "127.0.0.1:0"}) as lc, \
            Client(lc) as client:
        yield lc.scheduler_address, client


def _same_settings(a, b):
    keep = ("command", "started")
    return {k: v for k, v in a.items() if k not in keep} == \
        {k: v for k, v in b.items() if k not in keep}


def test_two_local_workers_give_the_single_process_volume(data, tmp_path):
    scan, common, ref, ref_prov = data
    out = tmp_path / "two.h5"
    res = run("-v", "recon", scan, "--workers", 2, "--out-path", out, *common)
    assert res.exit_code == 0, res.stderr
    assert "Dask: 2 workers at tcp://127.0.0.1:" in res.stderr
    vol, prov = read_h5(out)
    np.testing.assert_array_equal(vol, ref)
    assert _same_settings(prov, ref_prov)


def _killer(marker):
    def patch():
        import os
        import signal

        from tomodl.recon import stages

        real = stages.reconstruct_chunk

        def die_once(*a, **k):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)      # the worker process dies mid-chunk
            return real(*a, **k)

        stages.reconstruct_chunk = die_once

    return patch


def _failing(on):
    """Make every chunk raise on the workers (``on=True``), or undo it."""
    def patch():
        from tomodl.recon import stages

        real = getattr(stages, "_unpatched", stages.reconstruct_chunk)

        def fail(*a, **k):
            raise RuntimeError("simulated fault on this worker")

        stages._unpatched = real
        stages.reconstruct_chunk = fail if on else real

    return patch


def test_killed_worker_is_replaced_and_the_volume_is_unchanged(data, cluster, tmp_path):
    address, client = cluster
    scan, common, ref, _ = data
    marker = tmp_path / "killed"
    client.run(_killer(str(marker)))
    out = tmp_path / "killed.h5"
    res = run("recon", scan, "--scheduler", address, "--out-path", out, *common)
    assert res.exit_code == 0, res.stderr
    assert marker.exists()                                  # a worker did die
    np.testing.assert_array_equal(read_h5(out)[0], ref)
    cached = client.run(lambda dask_worker: list(dask_worker.plugins["tomodl"].denoisers))
    sha = read_h5(out)[1]["model"]["sha256"]
    assert any(keys == [sha] for keys in cached.values())    # loaded once, kept per worker


def test_failing_chunk_is_one_line_and_the_rerun_finishes(data, cluster, tmp_path):
    address, client = cluster
    scan, common, ref, _ = data
    out = tmp_path / "fail.h5"
    args = ("recon", scan, "--scheduler", address, "--out-path", out, *common)
    client.run(_failing(True))
    try:
        res = run(*args)
    finally:
        client.run(_failing(False))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert re.search(r"Error: Rows \[\d+, \d+\) failed in a Dask worker: RuntimeError: "
                     r"simulated fault on this worker; \d+ of 16 slices are kept in '.*"
                     r"fail.h5.partial'; fix the cause and rerun the same command to "
                     r"continue \(--no-resume starts again and clears it\)$",
                     res.stderr.strip()), res.stderr
    assert not out.exists()
    res = run(*args)
    assert res.exit_code == 0, res.stderr
    np.testing.assert_array_equal(read_h5(out)[0], ref)


def test_unreachable_scheduler_is_one_line_before_any_output(data, tmp_path, monkeypatch):
    from tomodl.recon import distributed

    monkeypatch.setattr(distributed, "SCHEDULER_TIMEOUT", "1s")
    scan, common, _, _ = data
    out = tmp_path / "r.h5"
    res = run("recon", scan, "--scheduler", "tcp://127.0.0.1:1", "--out-path", out, *common)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "cannot connect to the Dask scheduler 'tcp://127.0.0.1:1'" in res.stderr
    assert list(tmp_path.iterdir()) == []                    # no partial output, no lock
