#!/usr/bin/env python
"""Benchmark of issue 13: should a candidate network replace the default of ``fbp+resattunet``?

Compares FBP and named networks (``--model NAME=SPEC``, SPEC a shipped release name such as
``resattunet`` or a weights folder such as ``runs/wide/best``; the first is the reference,
normally today's default) on three groups of data:

a. **held-out foam phantoms**, ``data/heldout_xK.h5`` (``scripts/make_training_data.py``: scans
   of phantoms never trained on, 1 in K of 1200 angles): PSNR and SSIM of FBP and every model
   against the labels, by :func:`tomodl.training.evaluate.evaluate` (what ``tomodl evaluate``
   runs; float protocol, whole image, the layout of ``docs/results.md``'s factor table).
b. **the tooth** (``../shared/data/tooth.h5`` row 0, every 4th/10th/20th of 181 angles), scored
   against tomodl's full-angle FBP of all 181 angles (``scripts/bench_refine.py``'s protocol:
   circle of radius 0.45 N, ``data_range`` = max - min of the reference inside it).
b2. **tomo77** (``../shared/data/tomo77``, a real nanoCT scan of nanoporous gold from another
   beamline, already -log), rows ``--tomo77-rows`` at every 10th/20th/40th of its 451 angles
   (46/23/12), each against its own full-angle FBP, same protocol as the tooth: a sample
   unlike any training phantom.
c. **simulated texture phantoms** (:mod:`tomodl.sim.textures`, ``--size`` px, ``--seeds``, at
   ``--counts`` angles over 180 degrees, projected on a 3x finer grid with Poisson noise: the
   no-inverse-crime cases of ``bench_refine.py``, same seeds and noise), scored against the
   truth in the same circle: the families held out of the candidate's training
   (``--held-out``: fibre_network, low_contrast) and, labelled apart, the families it was
   trained on, with phantoms it never saw (``--trained``; seeds drawn as
   ``rng=[seed, family index]``, which no training file uses).

For every case of (b) and (c) and every method: PSNR, SSIM, **invented structure** where the
truth is known (:func:`tomodl.metrics.invented_features`: number and area of connected
features the truth has nowhere nearby) and the **consistency check** of ``tomodl recon``
(:func:`tomodl.check`, every angle set aside once: held-out residual of the FBP and of the
network, lower = more consistent).  Then, for each model as if it were the default (the
algorithm ``fbp+resattunet`` with no ``--model``), whether the default would have kept the
FBP, decided by the package's own rules: :func:`tomodl.models.releases.fallback_reason` (the
weights' validated range of projections per half turn) and
:func:`tomodl.recon.check.fallback_reason` (the network less consistent than the FBP; what a
file run does where the check runs).  The decision is *right* iff FBP is truly better than the
network against the truth (higher PSNR); on the tooth "truth" is the full-angle FBP.

Outputs in ``--out`` (default ``bench_out/default``): ``summary.md`` (also printed),
``rows.csv`` (one row per case, angle count and method), figures ``heldout_foam.png``,
``tooth.png``, ``tomo77.png`` (first row) and ``sim_<family>.png`` (first seed; rows: angle
counts; columns: truth or reference | FBP | models, one grey range per figure, invented
features outlined in red).
Simulated sinograms are cached in ``--cache`` (default ``bench_out/sim_cache``, shared by runs;
file names as in ``bench_refine.py``'s cache, so either serves both; delete it after changing
the simulation).  Defaults (seeds 0 1 2, all 96 held-out foam slices per factor, two models):
13 min wall on a 2-core machine at load 2-2.5, one torch thread, with an empty cache (held-out
foam 418 s, tooth 33 s, sinograms 240 s, simulated cases 83 s), about 9 min with it filled.

Examples::

    .venv/bin/python scripts/bench_default.py --quick --model old=resattunet \\
        --model new=resattunet-x20                      # smoke test, a few minutes
    .venv/bin/python scripts/bench_default.py --model old=resattunet --model new=runs/wide/best
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = ("fibre_network", "low_contrast")
TRAINED = ("random_phases", "grains", "dendrites", "fine_cracks")
HELDOUT_FACTORS = (4, 10, 20, 40, 80, 120)
FBP = "fbp"


def bench_refine():
    """``scripts/bench_refine.py`` as a module (its cases, protocol and figure)."""
    spec = importlib.util.spec_from_file_location("bench_refine",
                                                  REPO / "scripts" / "bench_refine.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_refine"] = mod          # its dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod


BR = bench_refine()


# -- models -----------------------------------------------------------------------------------
def load_models(items: List[str]) -> Dict[str, object]:
    """``{name: Denoiser}`` from ``NAME=SPEC`` items (a shipped release name or a folder)."""
    from tomodl.models.inference import load_denoiser
    from tomodl.models.releases import release_folder
    from tomodl.models.weights import read_config

    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec or name in out or name == FBP:
            raise SystemExit(f"--model {item!r}: expected a new NAME=SPEC, e.g. old=resattunet")
        folder = release_folder(spec) or Path(spec)
        out[name] = load_denoiser(read_config(folder).arch, folder)
    return out


# -- (a) held-out foam phantoms ---------------------------------------------------------------
def heldout_rows(models, args) -> tuple:
    """Rows of ``tomodl evaluate`` on each ``heldout_xK.h5`` and the example slices."""
    import h5py

    from tomodl.training.evaluate import FBP as EVAL_FBP, evaluate, image_scores

    rows, examples = [], {}
    folders = {name: d.source for name, d in models.items()}
    for k in args.heldout_factors:
        path = args.data / f"heldout_x{k}.h5"
        if not path.is_file():
            print(f"no {path}: skipped", flush=True)
            continue
        t0 = time.perf_counter()
        res = evaluate(str(path), folders, splits=("test",), max_slices=args.heldout_slices,
                       device="cpu", dtype="float32")
        with h5py.File(path, "r") as f:
            m = int(f["test"]["n_angles"][0])
        # the images scored: evaluate() reads whole chunks of 8, so it may score more than
        # max_slices (e.g. 8 for 2)
        scored = len(res.scores[(EVAL_FBP, "test")])
        for meth in res.methods:
            rows.append(dict(group="held-out foam", case=f"heldout_x{k}", n_proj=m,
                             method=FBP if meth == EVAL_FBP else meth,
                             psnr=res.mean(meth, "test", "float_psnr"),
                             ssim=res.mean(meth, "test", "float_ssim"),
                             psnr8=res.mean(meth, "test", "8bit_psnr"),
                             n_images=scored))
        ex = res.examples["test"]
        case = BR.Case(f"held-out foam, slice {res.n_images['test'] // 2}", m, None, None,
                       0.0, ex["label"], True)
        erows = [dict(method=FBP if meth == EVAL_FBP else meth, img=ex[meth], time_s=0.0,
                      **_example_scores(image_scores, ex[meth], ex["label"], case))
                 for meth in res.methods]
        examples[m] = (case, erows)
        print(f"heldout_x{k} ({m} angles, {scored} slices, "
              f"{time.perf_counter() - t0:.0f} s): " +
              ", ".join(f"{r['method']} {r['psnr']:.2f}/{r['ssim']:.3f}" for r in rows[-len(
                  res.methods):]), flush=True)
    return rows, examples


def _example_scores(image_scores, img, label, case) -> dict:
    from tomodl.metrics import invented_features

    sc = image_scores(img, label, None)
    labels, n, px = invented_features(img, label, data_range=case.data_range, mask=case.mask)
    return dict(psnr=sc["float_psnr"], ssim=sc["float_ssim"], inv_labels=labels, invented=n,
                inv_px=px)


# -- (b, c) cases with sinograms --------------------------------------------------------------
def run_case(case, models, args, default_cfg) -> List[dict]:
    """FBP and every model on one case: images, scores, check, the default's decision."""
    import tomodl
    from tomodl.metrics import invented_features, psnr, ssim
    from tomodl.models.releases import angles_per_half_turn
    from tomodl.models.releases import fallback_reason as release_fallback
    from tomodl.errors import TomodlError
    from tomodl.recon.check import fallback_reason as check_fallback

    tomo = case.sino[:, None, :]
    kw = dict(filter_name="shepp", ncore=args.threads, device="cpu")
    n180 = angles_per_half_turn(case.theta)
    rows = []
    t0 = time.perf_counter()
    fbp_img = np.asarray(tomodl.recon(tomo, case.theta, case.center, algorithm=FBP, **kw))[0]
    rows.append(dict(method=FBP, img=fbp_img, time_s=time.perf_counter() - t0))
    for name, den in models.items():
        alg = f"fbp+{den.arch}"
        t0 = time.perf_counter()
        img = np.asarray(tomodl.recon(tomo, case.theta, case.center, algorithm=alg, model=den,
                                      **kw))[0]
        t_net = time.perf_counter() - t0
        try:
            res = tomodl.check(tomo, case.theta, case.center, algorithm=alg, model=den, **kw)
        except TomodlError as err:       # too few angles to set any aside: no check
            print(f"{case.name}@{case.n_proj}: no check ({err})", flush=True)
            res = None
        why = release_fallback(den.config, n180) and "release range"
        why = why or (check_fallback(res, default_cfg) and "check")
        rows.append(dict(method=name, img=img, time_s=t_net, fallback=why or "",
                         check=np.nan if res is None else float(np.median(res.network)),
                         check_s=time.perf_counter() - t0 - t_net))
        rows[0]["check"] = np.nan if res is None else float(np.median(res.fbp))
    for r in rows:
        r["psnr"] = psnr(r["img"], case.truth, data_range=case.data_range, mask=case.mask)
        r["ssim"] = ssim(r["img"], case.truth, data_range=case.data_range, mask=case.mask)
        if case.known:
            r["inv_labels"], r["invented"], r["inv_px"] = invented_features(
                r["img"], case.truth, data_range=case.data_range, mask=case.mask)
    for r in rows[1:]:
        r["fbp_better"] = rows[0]["psnr"] > r["psnr"]
        r["right"] = bool(r["fallback"]) == r["fbp_better"]
        r["default_psnr"] = rows[0]["psnr"] if r["fallback"] else r["psnr"]
    return rows


def run_cases(cases, group_of, models, args, figure_of) -> List[dict]:
    """Run every case; one figure per ``figure_of(case)`` name (None: no figure)."""
    from tomodl.recon.config import ReconConfig

    default_cfg = ReconConfig()          # the default algorithm with the shipped weights
    out, figs = [], {}
    for case in cases:
        t0 = time.perf_counter()
        rows = run_case(case, models, args, default_cfg)
        for r in rows:
            r.update(group=group_of(case), case=case.name, n_proj=case.n_proj)
        out += rows
        print(f"{case.name} {case.n_proj:3d} angles ({time.perf_counter() - t0:.1f} s): " +
              ", ".join(f"{r['method']} {r['psnr']:.2f}/{r['ssim']:.3f}"
                        f"{' inv ' + str(r['invented']) if 'invented' in r else ''}"
                        f" chk {r['check']:.3f}{' FALLBACK' if r.get('fallback') else ''}"
                        for r in rows), flush=True)
        fig = figure_of(case)
        if fig is not None:
            figs.setdefault(fig, {})[case.n_proj] = (case, rows)
    for fig, by_count in figs.items():
        save_figure(by_count, args.out / f"{fig}.png", [FBP] + list(models))
    for r in out:                        # images are not kept past the figures
        r.pop("img", None), r.pop("inv_labels", None)
    return out


def save_figure(by_count, path: Path, methods: List[str]) -> None:
    """``bench_refine``'s figure: rows = angle counts, columns = reference | methods."""
    BR.save_figure({m: rows for m, (_, rows) in by_count.items()},
                   {m: case for m, (case, _) in by_count.items()}, path, methods)
    print(f"wrote {path}", flush=True)


def tomo77_cases(path: Path, factors, rows) -> list:
    """Rows of the tomo77 scan (already -log) at every ``k``-th angle, against the full-angle
    FBP; the centre found on the full scan (``tomodl.find_center``)."""
    import h5py

    import tomodl

    with h5py.File(path, "r") as f:
        proj = np.asarray(f["/exchange/data"][:, list(rows), :], dtype=np.float32)
        theta = np.deg2rad(np.asarray(f["/exchange/theta"][()], dtype=np.float64))
    center = float(tomodl.find_center(proj, theta))
    ref = tomodl.recon(proj, theta, center, algorithm="fbp", filter_name="shepp")
    return [BR.Case(f"tomo77-r{r}", len(theta[::k]), proj[::k, i], np.asarray(theta[::k]),
                    center, ref[i], False) for i, r in enumerate(rows) for k in factors]


def sim_group(case) -> str:
    fam = case.name.rsplit("-s", 1)[0]
    return ("held-out family: " if fam in HELD_OUT else "trained family, new seeds: ") + fam


# -- outputs ----------------------------------------------------------------------------------
CSV_FIELDS = ("group", "case", "n_proj", "method", "psnr", "ssim", "psnr8", "n_images",
              "invented", "inv_px", "check", "fallback", "fbp_better", "right", "default_psnr",
              "time_s", "check_s")


def write_csv(rows: List[dict], path: Path) -> None:
    """One line per case, angle count and method (atomic)."""
    BR.write_csv(rows, path, CSV_FIELDS)


_mean = BR._mean


def heldout_table(rows: List[dict], methods: List[str]) -> List[str]:
    """Markdown: per factor, PSNR (gain over FBP) / SSIM of every method (float protocol)."""
    out = ["| 1 in | angles | slices | " + " | ".join(f"{m} PSNR / SSIM" for m in methods) + " |",
           "|---" * (len(methods) + 3) + "|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["method"]: r for r in rows if r["case"] == case}
        f = by[FBP]
        gain = {m: "" if m == FBP else f" ({by[m]['psnr'] - f['psnr']:+.2f})" for m in by}
        cells = [f"{by[m]['psnr']:.2f}{gain[m]} / {by[m]['ssim']:.4f}" for m in methods
                 if m in by]
        out.append(f"| {case.split('_x')[1]} | {f['n_proj']} | {f['n_images']} | "
                   + " | ".join(cells) + " |")
    return out


def case_table(rows: List[dict], methods: List[str]) -> List[str]:
    """Markdown: per (group, angle count, method) means, check, fallbacks, against the first."""
    ref = methods[1] if len(methods) > 1 else None
    out = [f"| cases | angles | method | PSNR (dB) | SSIM | invented (n / px) | check score | "
           f"PSNR vs {ref} (wins) | default keeps FBP | keep/apply right | PSNR as default |",
           "|---" * 11 + "|"]
    groups = sorted({(r["group"], r["n_proj"]) for r in rows},
                    key=lambda g: (not g[0].startswith(("tooth", "tomo77")), "trained" in g[0],
                                  g[0], -g[1]))
    for grp, m in groups:
        sel = [r for r in rows if r["group"] == grp and r["n_proj"] == m]
        base = {r["case"]: r for r in sel if r["method"] == ref}
        for meth in methods:
            rs = [r for r in sel if r["method"] == meth]
            if not rs:
                continue
            inv = (f"{_mean(rs, 'invented'):.1f} / {_mean(rs, 'inv_px'):.0f}"
                   if "invented" in rs[0] else "-")
            vs, dec = "-", ["-", "-", "-"]
            if meth != FBP and meth != ref and base:
                d = [r["psnr"] - base[r["case"]]["psnr"] for r in rs]
                vs = f"{np.mean(d):+.2f} ({sum(x > 0 for x in d)}/{len(d)})"
            if meth != FBP:
                dec = [f"{sum(bool(r['fallback']) for r in rs)}/{len(rs)}",
                       f"{sum(r['right'] for r in rs)}/{len(rs)}",
                       f"{_mean(rs, 'default_psnr'):.2f}"]
            chk = np.median([r["check"] for r in rs])
            out.append(f"| {grp} ({len(rs)}) | {m} | {meth} | {_mean(rs, 'psnr'):.2f} | "
                       f"{_mean(rs, 'ssim'):.3f} | {inv} | {chk:.3f} | {vs} | "
                       + " | ".join(dec) + " |")
    return out


def pooled(rows: List[dict]) -> List[dict]:
    """Extra rows pooling the held-out families and the trained families (per angle count)."""
    out = []
    for key, label in (("held-out family", "held-out families: all"),
                       ("trained family", "trained families, new seeds: all")):
        sel = [r for r in rows if r["group"].startswith(key)]
        if len({r["group"] for r in sel}) > 1:
            out += [dict(r, group=label) for r in sel]
    return out


# -- main -------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", dest="models", action="append", metavar="NAME=SPEC",
                    help="a network to compare, repeatable; the first is the reference "
                    "(default: old=resattunet)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "default")
    ap.add_argument("--cache", type=Path, default=REPO / "bench_out" / "sim_cache",
                    help="simulated sinograms, kept between runs")
    ap.add_argument("--quick", action="store_true",
                    help="seed 0, two trained families, 8 held-out foam slices (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="default 0 1 2 (quick: 0)")
    ap.add_argument("--size", type=int, default=256, help="simulated slice size, px")
    ap.add_argument("--counts", type=int, nargs="*", default=[90, 36, 18],
                    help="angles over 180 degrees of the simulated scans")
    ap.add_argument("--held-out", nargs="*", default=list(HELD_OUT), metavar="FAMILY")
    ap.add_argument("--trained", nargs="*", default=None, metavar="FAMILY",
                    help=f"default {' '.join(TRAINED)} (quick: the first two)")
    ap.add_argument("--data", type=Path, default=REPO / "data", help="folder of heldout_xK.h5")
    ap.add_argument("--heldout-factors", type=int, nargs="*", default=list(HELDOUT_FACTORS))
    ap.add_argument("--heldout-slices", type=int, default=None,
                    help="first N slices of each held-out file (default 0: all; quick: 8)")
    ap.add_argument("--scan", type=Path, default=BR.DEFAULT_SCAN)
    ap.add_argument("--tooth-factors", type=int, nargs="*", default=[4, 10, 20])
    ap.add_argument("--tomo77", type=Path, default=REPO.parent / "shared" / "data" / "tomo77" /
                    "tomo77_minuslog.h5")
    ap.add_argument("--tomo77-rows", type=int, nargs="*", default=[31, 36, 41, 46])
    ap.add_argument("--tomo77-factors", type=int, nargs="*", default=[10, 20, 40])
    ap.add_argument("--skip-tomo77", action="store_true")
    ap.add_argument("--skip-heldout", action="store_true")
    ap.add_argument("--skip-tooth", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("-v", "--verbose", action="store_true", help="tomodl's warnings too")
    args = ap.parse_args(argv)
    args.models = args.models or ["old=resattunet"]
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.trained is None:
        args.trained = list(TRAINED[:2] if args.quick else TRAINED)
    if args.heldout_slices is None:
        args.heldout_slices = 8 if args.quick else 0
    return args


def main(argv=None) -> None:
    """Run the groups, write the CSV, the figures and the summary."""
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tomodl").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    load0, t_start = os.getloadavg(), time.perf_counter()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"({os.cpu_count()} CPUs); torch threads {args.threads}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    models = load_models(args.models)
    methods = [FBP] + list(models)
    print("models: " + ", ".join(f"{n} = {d.source}" for n, d in models.items()), flush=True)
    times, held, rows = {}, [], []
    if not args.skip_heldout:
        t0 = time.perf_counter()
        held, examples = heldout_rows(models, args)
        if examples:
            save_figure(examples, args.out / "heldout_foam.png", methods)
        times["held-out foam"] = time.perf_counter() - t0
    if not args.skip_tooth:
        t0 = time.perf_counter()
        if args.scan.is_file():
            cases = BR.tooth_cases(args.scan, args.tooth_factors)
            rows += run_cases(cases, lambda c: "tooth (vs full-angle FBP)", models, args,
                              lambda c: "tooth")
        else:
            print(f"no scan at {args.scan}: tooth skipped", flush=True)
        times["tooth"] = time.perf_counter() - t0
    if not args.skip_tomo77:
        t0 = time.perf_counter()
        if args.tomo77.is_file():
            cases = tomo77_cases(args.tomo77, args.tomo77_factors, args.tomo77_rows)
            first = f"tomo77-r{args.tomo77_rows[0]}"
            rows += run_cases(cases, lambda c: "tomo77 (real; vs full-angle FBP)", models, args,
                              lambda c: "tomo77" if c.name == first else None)
        else:
            print(f"no scan at {args.tomo77}: tomo77 skipped", flush=True)
        times["tomo77"] = time.perf_counter() - t0
    if not args.skip_sim:
        t0 = time.perf_counter()
        fams = list(args.held_out) + list(args.trained)
        cases = BR.sim_cases(fams, args.seeds, args.counts, args.size, args.cache)
        times["sinograms"] = time.perf_counter() - t0
        first = f"-s{args.seeds[0]}"
        rows += run_cases(cases, sim_group, models, args,
                          lambda c: "sim_" + c.name[:-len(first)] if c.name.endswith(first)
                          else None)
        times["sim"] = time.perf_counter() - t0 - times["sinograms"]
    finish(held, rows, methods, args, load0, time.perf_counter() - t_start, times)


def finish(held, rows, methods, args, load0, elapsed: float, times) -> None:
    """Write ``rows.csv`` and ``summary.md`` and print the summary."""
    write_csv(held + rows, args.out / "rows.csv")
    load1 = os.getloadavg()
    refs = "; ".join(args.models)
    text = [f"# bench_default ({'quick' if args.quick else 'full'}): {elapsed:.0f} s wall "
            f"({', '.join(f'{k} {v:.0f} s' for k, v in times.items())}); load average "
            f"{load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs, "
            f"{args.threads} torch thread(s))", "", f"Models: {refs}.  Simulated: {args.size} px,"
            f" seeds {args.seeds}, {args.counts} angles.", ""]
    if held:
        text += ["## Held-out foam phantoms (float protocol, whole image; mean over the slices "
                 "scored, the first of each file)", "", *heldout_table(held, methods), ""]
    if rows:
        text += ["## Tooth and simulated texture phantoms", "",
                 "Means per case; check score: median held-out residual of `tomodl.check` "
                 "(lower = more consistent); 'default keeps FBP': the model as the default "
                 "would fall back to the FBP (release range or check); 'right': that decision "
                 "agrees with the truth (FBP's PSNR above the network's); 'PSNR as default': "
                 "what the default would give (FBP where it falls back).", "",
                 *case_table(rows + pooled(rows), methods), ""]
        fired = [f"{r['method']}: {r['case']}@{r['n_proj']} ({r['fallback']}, "
                 f"{'right' if r['right'] else 'WRONG'})" for r in rows if r.get("fallback")]
        wrong = [f"{r['method']}: {r['case']}@{r['n_proj']} (network {r['psnr']:.2f} < FBP)"
                 for r in rows if r.get("fallback") == "" and not r["right"]]
        text += ["Default fell back to the FBP: " + ("; ".join(fired) or "never"),
                 "", "Network kept although FBP was better: " + ("; ".join(wrong) or "never")]
    print(BR.write_markdown(text, args.out / "summary.md"))
    print(f"wrote {args.out}/summary.md, rows.csv and the figures")


if __name__ == "__main__":
    main()
