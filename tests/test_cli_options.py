# SPDX-License-Identifier: BSD-3-Clause
"""Issue 11: the same option names in every sub-command, old spellings as hidden aliases, and
one ``--set KEY=VALUE`` parser."""
import json

import h5py
import pytest
from click.testing import CliRunner

from tomodl.cli import main

SMALL = ["--size", "33", "--slices", "2", "--angles", "24", "--no-progress"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res):
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def _help_options(*command):
    """Option names in ``tomodl COMMAND --help`` (the left column only)."""
    text = run(*command, "--help").output
    return {word.rstrip(",") for line in text.splitlines() if line.startswith("  -")
            for word in line.split()[:3] if word.startswith("--")}


@pytest.mark.parametrize("command", [("recon",), ("simulate", "foam"), ("simulate", "pairs"),
                                     ("train",), ("evaluate",)])
def test_every_command_names_its_output_out_path_and_hides_old_spellings(command):
    shown = _help_options(*command)
    assert "--out-path" in shown, shown
    assert not shown & {"--out", "--filter", "--center"}, shown
    if command == ("simulate", "pairs"):
        assert "--fbp-filter" in shown
    if command == ("simulate", "foam"):
        assert "--rotation-axis" in shown
        assert "[OPTIONS] OUT" not in run(*command, "--help").output


def _center(path):
    with h5py.File(path, "r") as f:
        return json.loads(f["/tomodl_sim"].attrs["metadata"])["geometry"]["center"]


def test_simulate_new_names_and_old_spellings_give_the_same_files(tmp_path):
    new, old = tmp_path / "new.h5", tmp_path / "old.h5"
    assert run("simulate", "foam", "--out-path", new, "--rotation-axis", 15.5, *SMALL
               ).exit_code == 0
    assert run("simulate", "foam", old, "--center", 15.5, *SMALL).exit_code == 0
    assert _center(new) == _center(old) == 15.5
    with h5py.File(new, "r") as a, h5py.File(old, "r") as b:
        assert (a["/exchange/data"][()] == b["/exchange/data"][()]).all()
    msg = one_line_error(run("simulate", "foam", *SMALL))
    assert "--out-path" in msg
    msg = one_line_error(run("simulate", "foam", tmp_path / "a.h5", "--out-path",
                             tmp_path / "b.h5", *SMALL))
    assert "two outputs" in msg
    for args in (["--out-path", tmp_path / "p1.h5", "--fbp-filter", "hann"],
                 ["--out", tmp_path / "p2.h5", "--filter", "hann"]):
        res = run("simulate", "pairs", new, old, *args, "--sparse", 4, "--no-progress")
        assert res.exit_code == 0, res.output
    for name in ("p1.h5", "p2.h5"):
        with h5py.File(tmp_path / name, "r") as f:
            assert json.loads(f.attrs["metadata"])["filter_name"] == "hann"


@pytest.mark.parametrize("command", [
    ("simulate", "foam", "--out-path", "x.h5", "--set", "n_layers"),
    ("train", "--set", "n_layers", "--data", "p.h5"),
    ("evaluate", "--profile-precision", "--profile-arg", "n_layers"),
])
def test_one_set_parser_one_message(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = one_line_error(run(*command))
    assert "override 'n_layers' is not of the form KEY=VALUE" in msg


def test_set_values_are_toml_literals_everywhere(tmp_path):
    out = tmp_path / "l.h5"
    res = run("simulate", "foam", "--out-path", out, "--family", "layered", "--set",
              "n_layers=2", "--set", "fill_range=[0.2, 1.5]", *SMALL)
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        params = json.loads(f["/tomodl_sim"].attrs["metadata"])["params"]
    assert params["n_layers"] == 2 and params["fill_range"] == [0.2, 1.5]
