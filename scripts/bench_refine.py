#!/usr/bin/env python
"""Benchmark of issue 16: FBP, TV, the network and the network refined against the data.

For every case the script runs, on one slice, and times:

* ``fbp``: sparse-view FBP (``tomodl.recon(..., algorithm="fbp")``, shepp filter);
* ``network``: ``algorithm="fbp+resattunet"`` with the shipped default weights (marked
  ``fallback`` where tomodl kept the FBP instead);
* ``refine N``: the network's output refined against the measured projections with ``N``
  iterations (:func:`tomodl.recon.refine.refine` with its default weights, what
  ``tomodl.recon(..., refine=N)`` runs), for each ``--refine N``; timed as network + refinement,
  the refinement on a batch of as many copies of the slice as TV's sweep has weights (per-slice
  time = batch time / batch: sparse products cost much less per slice in a batch, and a volume
  run refines chunks of rows, so both methods are timed in equal batches); each
  ``--refine-variants`` entry (e.g. ``prior=1`` or ``nonneg=0``) adds ``refine N <variant>``
  rows with those keywords of :func:`~tomodl.recon.refine.refine` changed;
* ``tv oracle``: TV (Chambolle-Pock, least squares, non-negative, ``--tv-iters`` iterations,
  :mod:`tomodl.recon.refine`) for each weight of a log-spaced grid; the best PSNR against the
  truth is kept with its weight (an oracle no user has); ``tv fixed``: one fixed weight (the
  solver's default).  The weights run as one batch (one row per weight); TV's time per slice
  is the batch's time over the number of weights.

TV and the refinement share one projector per case, built before the timing starts (its build,
once per scan geometry, is ``build_s`` in the CSV).
Cases: (a) the tooth (``../shared/data/tooth.h5`` row 0, every 4th/10th/20th of 181 angles),
scored against tomodl's full-angle FBP of all 181 angles; (b) the pixel phantoms of
:mod:`tomodl.sim.textures` (fibre_network and low_contrast never used in training; the
default of 2026-12-02 was fine-tuned on the other four families, with phantoms drawn from
other seeds), ``--seeds`` each, ``--size`` px, at
90/36/18 angles over 180 degrees, projected on a 3x finer grid with Poisson noise (no inverse
crime), scored against the truth.  PSNR and SSIM (``tomodl.metrics``) inside the circle of
radius 0.45 N, ``data_range`` = max - min of the reference in that circle (the protocol of
issue 16, which it reproduces: network 28.34 / 25.85 / 19.11 dB on the tooth).

**Invented structure** (where the truth is known; :func:`tomodl.metrics.invented_features`,
with its default settings): the output, smoothed by a Gaussian of
sigma 1 px (so that single noisy pixels do not count), is compared with the *local range* of
the truth, ``[min, max]`` over the 5 x 5 px around each pixel (so that edges displaced by up
to 2 px do not count).  Where it lies outside that range by more than 0.1 ``data_range`` the
output shows a value the truth has nowhere nearby: a pore, grain, streak or crack that is not
there.  Those pixels, inside the circle, form connected features (8-neighbours); features of
at least 4 px are counted (``invented``) and their area summed (``inv_px``, pixels).  Blur and
lost features are not invented structure (PSNR/SSIM see them).

Outputs in ``--out`` (default ``bench_out/refine``): ``table.md``, ``table.csv`` (one row per
case, count and method), ``<case>.png`` (rows: angle counts; columns: reference | FBP | TV |
network | refined, one grey range per figure, invented features outlined in red).
Simulated sinograms are cached in ``--out/cache`` (delete it after changing the simulation).

Examples::

    .venv/bin/python scripts/bench_refine.py --quick          # one seed, 3 TV weights
    .venv/bin/python scripts/bench_refine.py --refine 5 10 20 --out bench_out/refine
    .venv/bin/python scripts/bench_refine.py --quick --refine 60 --refine-variants "" prior=1 \
        nonneg=0 --model runs/wide/best                  # settings and another network
"""
from __future__ import annotations

import argparse
import csv
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCAN = REPO.parent / "shared" / "data" / "tooth.h5"
FAMILIES = ("random_phases", "grains", "dendrites", "fibre_network", "fine_cracks",
            "low_contrast")
#: Flat-field counts per detector pixel; the low-contrast family is scanned at low flux.
FLUX = {"low_contrast": 5.0e3}
DEFAULT_FLUX = 2.0e4
UPSAMPLE = 3
CIRCLE = 0.9            # radius 0.45 N


@dataclass
class Case:
    """One slice to reconstruct: sinogram ``(n_angles, n_det)``, angles, truth or reference."""

    name: str
    n_proj: int
    sino: np.ndarray
    theta: np.ndarray
    center: float
    truth: np.ndarray
    known: bool                      # truth (simulation) or full-angle reference (tooth)
    mask: np.ndarray = field(init=False)
    data_range: float = field(init=False)

    def __post_init__(self) -> None:
        from tomodl.metrics import circle_mask

        self.mask = circle_mask(self.truth.shape, CIRCLE)
        inside = self.truth[self.mask]
        self.data_range = float(inside.max() - inside.min())


# -- cases ------------------------------------------------------------------------------------
def tooth_cases(path: Path, factors) -> List[Case]:
    """Row 0 of the tooth at every ``k``-th angle, with the full-angle FBP as reference."""
    import tomodl

    proj, flat, dark, theta = tomodl.read_dx(path, sino=(0, 1))
    proj = tomodl.minus_log(tomodl.normalize(proj, flat, dark))
    center = float(tomodl.find_center(proj, theta))
    ref = tomodl.recon(proj, theta, center, algorithm="fbp", filter_name="shepp")[0]
    return [Case("tooth", len(theta[::k]), proj[::k, 0], np.asarray(theta[::k]), center, ref,
                 False) for k in factors]


def sim_cases(families, seeds, counts, n: int, cache: Path) -> List[Case]:
    """Held-out texture phantoms; sinograms cached in ``cache`` (deterministic per seed)."""
    from tomodl.sim.textures import downsample, make_texture, sparse_sinogram

    cache.mkdir(parents=True, exist_ok=True)
    cases = []
    for fam in families:
        for seed in seeds:
            fine, truth = None, None
            for m in counts:
                theta = np.linspace(0, np.pi, m, endpoint=False)
                flux = FLUX.get(fam, DEFAULT_FLUX)
                f = cache / f"{fam}_s{seed}_n{n}_a{m}_f{flux:g}_u{UPSAMPLE}.npz"
                if f.is_file():
                    z = np.load(f)
                    truth, sino = z["truth"], z["sino"]
                else:
                    if fine is None:
                        idx = FAMILIES.index(fam) if fam in FAMILIES else 99
                        fine = make_texture(fam, n, rng=[seed, idx], upsample=UPSAMPLE)
                        truth = downsample(fine, UPSAMPLE).astype(np.float32)
                    sino = sparse_sinogram(fine, theta, n, UPSAMPLE, rng=[seed, m, 7], flux=flux)
                    tmp = f.with_suffix(".tmp.npz")
                    np.savez(tmp, truth=truth, sino=sino)
                    os.replace(tmp, f)
                cases.append(Case(f"{fam}-s{seed}", m, sino, theta, n / 2.0, truth, True))
    return cases


# -- methods ----------------------------------------------------------------------------------
def timed(fn: Callable[..., np.ndarray], *args, **kw):
    """``(image (N, N) float32, seconds)`` of one call ``fn(*args, **kw)``."""
    t0 = time.perf_counter()
    out = np.asarray(fn(*args, **kw), dtype=np.float32)
    return out.reshape(out.shape[-2:]), time.perf_counter() - t0


def recon(case: Case, algorithm: str, copies: int = 1, **kw) -> np.ndarray:
    """``tomodl.recon`` of the case's one slice (run on ``copies`` identical rows)."""
    import tomodl

    stack = np.repeat(case.sino[:, None, :], copies, axis=1)
    return tomodl.recon(stack, case.theta, case.center, algorithm=algorithm,
                        filter_name="shepp", **kw)[0]


def load_seconds() -> float:
    """Seconds to load the shipped weights (included in every network call's time)."""
    from tomodl.models.inference import load_denoiser

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        load_denoiser("resattunet", n_angles=36)
        times.append(time.perf_counter() - t0)
    return times[-1]


def solvers():
    """``(tv_reconstruct, refine, projector_for)`` of :mod:`tomodl.recon.refine`, or Nones."""
    try:
        from tomodl.recon import refine as mod
    except ImportError:
        return None, None, None
    return (getattr(mod, "tv_reconstruct", None), getattr(mod, "refine", None),
            getattr(mod, "projector_for", None))


def case_projector(case: Case, projector_for: Optional[Callable]):
    """One projector per case geometry, built (and its matrices made) before any timing."""
    if projector_for is None:
        return None, 0.0
    t0 = time.perf_counter()
    n = case.truth.shape[-1]
    proj = projector_for(n, case.theta, case.sino.shape[-1], np.array([case.center]), "cpu")
    proj.forward(np.zeros((n, n), np.float32))
    proj.adjoint(np.zeros((case.theta.size, case.sino.shape[-1]), np.float32))
    return proj, time.perf_counter() - t0


def tv_default_weight(tv: Callable) -> Optional[float]:
    """The solver's own default weight, if it declares one."""
    for name in ("weight", "lam", "tv_weight"):
        p = inspect.signature(tv).parameters.get(name)
        if p is not None and isinstance(p.default, (int, float)):
            return float(p.default)
    return None


def run_tv(tv: Callable, case: Case, weights, iters: int, projector=None) -> np.ndarray:
    """TV reconstructions of the case for all ``weights`` as one batch: ``(len(weights), N, N)``.

    The sinogram is repeated once per weight (one row each), so the weight sweep costs one
    batched solve; the time per slice is the batch's time over ``len(weights)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    stack = np.repeat(case.sino[:, None, :], w.size, axis=1)
    return np.asarray(tv(stack, case.theta, case.center, weight=w, iterations=iters,
                         projector=projector))


def run_methods(case: Case, args, tools) -> List[dict]:
    """All methods on one case: a list of result rows (image under key ``img``).

    ``refine N`` runs :func:`tomodl.recon.refine.refine` on the network's output; its time
    is the network's plus the refinement's.  TV and refinement share one projector per case.
    """
    tv, refine, projector_for = tools
    proj, build = case_projector(case, projector_for) if (tv or refine) else (None, 0.0)
    rows = []
    fbp, t = timed(recon, case, "fbp")
    rows.append(dict(method="fbp", img=fbp, time_s=t))
    net, t_net = timed(recon, case, "fbp+resattunet", model=args.model)
    rows.append(dict(method="network", img=net, time_s=t_net,
                     note="fallback (FBP kept)" if np.array_equal(net, fbp) else ""))
    batch = tv_batch(tv, args)
    for n_it, variant in (refine_methods(args) if refine is not None else []):
        kw = variant_kwargs(variant)
        rounds = kw.pop("rounds", 1)
        t0 = time.perf_counter()
        if rounds > 1:      # the whole pipeline (FBP, network, rounds) on the batch
            img = np.asarray(recon(case, "fbp+resattunet", batch, model=args.model,
                                   refine=n_it, refine_rounds=rounds))
            t = (time.perf_counter() - t0) / batch
        else:
            img = np.asarray(refine(np.repeat(net[None], batch, 0),
                                    np.repeat(case.sino[:, None, :], batch, 1), case.theta,
                                    case.center, iterations=n_it, projector=proj, **kw))[0]
            t = t_net + (time.perf_counter() - t0) / batch
        rows.append(dict(method=refine_label(n_it, variant), img=img, time_s=t))
    if tv is not None and args.tv_weights:
        rows.extend(tv_rows(tv, case, args, proj))
    for r in rows:
        r["build_s"] = build
    return rows


def refine_methods(args) -> List[tuple]:
    """``(iterations, variant)`` of every refine row, in table order."""
    return [(n, v) for n in args.refine for v in args.refine_variants]


def refine_label(n_it: int, variant: str) -> str:
    return f"refine {n_it}" + (f" {variant}" if variant else "")


def variant_kwargs(variant: str) -> dict:
    """``"prior=1,nonneg=0"`` -> ``{"prior": 1.0, "nonneg": False}`` (``""``: the defaults);
    ``rounds=R`` (network passes, through ``tomodl.recon``) takes no other key."""
    kw = {}
    for item in filter(None, variant.split(",")):
        key, _, value = item.partition("=")
        if key not in ("prior", "weight", "nonneg", "rounds"):
            raise SystemExit(f"--refine-variants: unknown key {key!r} (prior, weight, nonneg, "
                             "rounds)")
        kw[key] = (bool(int(value)) if key == "nonneg" else int(value) if key == "rounds"
                   else float(value))
    if kw.get("rounds", 1) > 1 and len(kw) > 1:
        raise SystemExit("--refine-variants: rounds=R cannot be combined with other keys")
    return kw


def tv_fixed_weight(tv: Callable, args) -> Optional[float]:
    """The ``tv fixed`` row's weight: ``--tv-fixed`` or the solver's default."""
    return args.tv_fixed if args.tv_fixed is not None else tv_default_weight(tv)


def tv_weights(tv: Callable, args) -> List[float]:
    """The TV weights of one case's batch: the grid and the fixed weight."""
    fixed = tv_fixed_weight(tv, args)
    return sorted(set(args.tv_weights) | ({fixed} if fixed is not None else set()))


def tv_batch(tv: Optional[Callable], args) -> int:
    """Slices per solve in TV's weight sweep; the refinement is timed on a batch of as many
    (copies of the slice), so that both per-slice times come from equal batches."""
    return len(tv_weights(tv, args)) if tv is not None and args.tv_weights else 1


def tv_rows(tv: Callable, case: Case, args, projector=None) -> List[dict]:
    """``tv oracle`` (best PSNR over the weight grid) and ``tv fixed`` rows."""
    from tomodl.metrics import psnr

    fixed = tv_fixed_weight(tv, args)
    weights = tv_weights(tv, args)
    t0 = time.perf_counter()
    imgs = run_tv(tv, case, weights, args.tv_iters, projector)
    t = (time.perf_counter() - t0) / len(weights)
    trials = [dict(img=img, time_s=t, weight=w,
                   psnr=psnr(img, case.truth, data_range=case.data_range, mask=case.mask))
              for w, img in zip(weights, imgs)]
    grid = [r for r in trials if r["weight"] in args.tv_weights] or trials
    best = max(grid, key=lambda r: r["psnr"])
    edge = len(grid) > 1 and best["weight"] in (min(args.tv_weights), max(args.tv_weights))
    out = [dict(method="tv oracle", img=best["img"], time_s=t, weight=best["weight"],
                note="at grid edge" if edge else "")]
    if fixed is not None:
        r = next(r for r in trials if r["weight"] == fixed)
        out.append(dict(method="tv fixed", img=r["img"], time_s=t, weight=fixed))
    return out


# -- scores -----------------------------------------------------------------------------------
def invented(img: np.ndarray, case: Case):
    """Invented features of ``img`` against the case's truth, inside its circle:
    ``(labels, count, area)`` (:func:`tomodl.metrics.invented_features`)."""
    from tomodl.metrics import invented_features

    return invented_features(img, case.truth, data_range=case.data_range, mask=case.mask)


def score(rows: List[dict], case: Case) -> None:
    """Add PSNR, SSIM and the invented-structure counts to each row, in place."""
    from tomodl.metrics import psnr, ssim

    for r in rows:
        r["psnr"] = psnr(r["img"], case.truth, data_range=case.data_range, mask=case.mask)
        r["ssim"] = ssim(r["img"], case.truth, data_range=case.data_range, mask=case.mask)
        if case.known:
            r["inv_labels"], r["invented"], r["inv_px"] = invented(r["img"], case)



# -- outputs ----------------------------------------------------------------------------------
CSV_FIELDS = ("case", "n_proj", "method", "weight", "psnr", "ssim", "time_s", "invented",
              "inv_px", "build_s", "note")


def write_csv(rows: List[dict], path: Path, fields=CSV_FIELDS) -> None:
    """One line per case, angle count and method (atomic); columns ``fields``."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r.get(k), float) else r.get(k, ""))
                        for k in fields})
    os.replace(tmp, path)


def write_markdown(lines: List[str], path: Path) -> str:
    """Write ``lines`` to ``path`` atomically; return the text."""
    md = "\n".join(lines) + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(md, encoding="utf-8")
    os.replace(tmp, path)
    return md


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def summary(rows: List[dict], methods: List[str]) -> List[str]:
    """Markdown: per (group, angle count), each method's mean PSNR/SSIM/time/invented."""
    out = ["| cases | angles | method | PSNR (dB) | SSIM | time/slice (s) | x network time "
           "| invented (n / px) | TV weight | beats net (PSNR & SSIM) | worse than FBP |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["group"], r["n_proj"]) for r in rows}, key=lambda g: (g[0], -g[1]))
    for grp, m in groups:
        sel = [r for r in rows if r["group"] == grp and r["n_proj"] == m]
        net = {r["case"]: r for r in sel if r["method"] == "network"}
        fbp = {r["case"]: r for r in sel if r["method"] == "fbp"}
        t_net = _mean(net.values(), "time_s")
        for meth in methods:
            rs = [r for r in sel if r["method"] == meth]
            if not rs:
                continue
            beats = sum(r["psnr"] > net[r["case"]]["psnr"] and r["ssim"] > net[r["case"]]["ssim"]
                        for r in rs)
            worse = sum(r["psnr"] < fbp[r["case"]]["psnr"] or r["ssim"] < fbp[r["case"]]["ssim"]
                        for r in rs)
            inv = (f"{_mean(rs, 'invented'):.1f} / {_mean(rs, 'inv_px'):.0f}"
                   if "invented" in rs[0] else "-")
            wts = sorted({f"{r['weight']:.3g}" for r in rs if r.get("weight") is not None})
            out.append(f"| {grp} ({len(rs)}) | {m} | {meth} | {_mean(rs, 'psnr'):.2f} | "
                       f"{_mean(rs, 'ssim'):.3f} | {_mean(rs, 'time_s'):.2f} | "
                       f"{_mean(rs, 'time_s') / t_net:.2f} | {inv} | {' '.join(wts) or '-'} | "
                       f"{beats}/{len(rs)} | {worse}/{len(rs)} |")
    return out


def crop_box(case: Case, margin: int = 30):
    """The sample's bounding box (reference above 30 % of its peak) plus ``margin`` px."""
    from scipy.ndimage import gaussian_filter

    ref = gaussian_filter(np.where(case.mask, case.truth, 0.0), 2.0)
    ys, xs = np.nonzero(ref > 0.3 * ref.max())
    if ys.size == 0:
        return slice(None), slice(None)
    h, w = ref.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def save_figure(case_rows: Dict[int, List[dict]], cases: Dict[int, Case], path: Path,
                methods: List[str]) -> None:
    """Rows = angle counts; columns = reference | methods; one grey range; invented in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(case_rows, reverse=True)
    first = cases[counts[0]]
    lo, hi = np.percentile(first.truth[first.mask], (0.5, 99.5))
    box = crop_box(first)
    ncol = 1 + len(methods)
    fig, axes = plt.subplots(len(counts), ncol, figsize=(3.2 * ncol, 3.3 * len(counts)),
                             squeeze=False)
    for i, m in enumerate(counts):
        c, by = cases[m], {r["method"]: r for r in case_rows[m]}
        panels = [("truth" if c.known else "full-angle FBP", c.truth, None)]
        panels += [(k, by[k]["img"], by[k]) for k in methods if k in by]
        for j, (title, img, r) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(np.where(c.mask, img, lo)[box], cmap="gray", vmin=lo, vmax=hi,
                      interpolation="nearest")
            if r is not None:
                if r.get("inv_labels") is not None and r["invented"]:
                    ax.contour(r["inv_labels"][box] > 0, levels=[0.5], colors="r",
                               linewidths=0.5)
                w = f" w={r['weight']:.2g}" if r.get("weight") is not None else ""
                inv = f", inv {r['invented']}" if "invented" in r else ""
                title = (f"{title}{w}\n{r['psnr']:.2f} dB, {r['ssim']:.3f}{inv}, "
                         f"{r['time_s']:.1f}s")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
        axes[i, 0].set_ylabel(f"{m} angles")
        for j in range(len(panels), ncol):
            axes[i, j].axis("off")
    fig.suptitle(f"{first.name}: grey range [{lo:.3g}, {hi:.3g}] /px", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "refine")
    ap.add_argument("--quick", action="store_true",
                    help="one seed, 3 TV weights (for iterating)")
    ap.add_argument("--scan", type=Path, default=DEFAULT_SCAN)
    ap.add_argument("--tooth-factors", type=int, nargs="*", default=[4, 10, 20])
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="default 0 1 (quick: 0)")
    ap.add_argument("--counts", type=int, nargs="*", default=[90, 36, 18],
                    help="angles over 180 degrees of the simulated scans")
    ap.add_argument("--size", type=int, default=256, help="simulated slice size, px")
    ap.add_argument("--refine", type=int, nargs="*", default=[5, 10, 20], metavar="N")
    ap.add_argument("--refine-variants", nargs="*", default=[""], metavar="K=V[,K=V]",
                    help="refine settings tried beside each N ('' = the defaults; keys prior, "
                    "weight, nonneg), e.g. '' prior=1 nonneg=0")
    ap.add_argument("--model", default=None,
                    help="network of the 'network' rows: a released name or a weights folder "
                    "(default: the shipped default)")
    ap.add_argument("--tv-weights", type=float, nargs="*", default=None,
                    help="oracle grid of relative weights (default 0.003 0.01 0.03 0.1 0.3; "
                    "quick: 0.01 0.03 0.1)")
    ap.add_argument("--tv-fixed", type=float, default=None,
                    help="fixed TV weight (default: the solver's own default)")
    ap.add_argument("--tv-iters", type=int, default=300)
    ap.add_argument("--no-tv", action="store_true", help="skip TV")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1]
    if args.tv_weights is None:
        args.tv_weights = [0.01, 0.03, 0.1] if args.quick else [0.003, 0.01, 0.03, 0.1, 0.3]
    if args.no_tv:
        args.tv_weights = []
    return args


def method_order(args, refine_ok: bool, tv_ok: bool) -> List[str]:
    """Column order of tables and figures."""
    tv = ["tv oracle", "tv fixed"] if tv_ok and args.tv_weights else []
    return ["fbp"] + tv + ["network"] + ([refine_label(n, v) for n, v in refine_methods(args)]
                                          if refine_ok else [])


def main(argv=None) -> None:
    """Run every case, write the tables and figures, print the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load0, t_start = os.getloadavg(), time.perf_counter()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"({os.cpu_count()} CPUs)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tools = solvers()
    tv, refine = tools[0], tools[1]
    methods = method_order(args, refine is not None, tv is not None)
    args.load_s = load_seconds()
    print(f"refine: {getattr(refine, '__name__', 'not available')}; TV solver: "
          f"{getattr(tv, '__name__', 'not available')}; methods: {methods}", flush=True)
    cases = []
    if args.tooth_factors and args.scan.is_file():
        cases += tooth_cases(args.scan, args.tooth_factors)
    elif args.tooth_factors:
        print(f"no scan at {args.scan}: tooth skipped")
    cases += sim_cases(args.families, args.seeds, args.counts, args.size, args.out / "cache")
    recon(cases[0], "fbp")                      # first-call costs (imports, threads) untimed
    recon(cases[0], "fbp+resattunet", model=args.model)
    all_rows: List[dict] = []
    by_case: Dict[str, Dict[int, List[dict]]] = {}
    for case in cases:
        t0 = time.perf_counter()
        rows = run_methods(case, args, tools)
        score(rows, case)
        for r in rows:
            r.update(case=case.name, n_proj=case.n_proj,
                     group="tooth" if not case.known else "sim: " + case.name.rsplit("-s", 1)[0])
        all_rows += rows
        by_case.setdefault(case.name, {})[case.n_proj] = rows
        print(f"{case.name} {case.n_proj:3d} angles ({time.perf_counter() - t0:.0f} s): " +
              ", ".join(f"{r['method']} {r['psnr']:.2f}/{r['ssim']:.3f}" for r in rows),
              flush=True)
        if len(by_case[case.name]) == len([c for c in cases if c.name == case.name]):
            save_figure(by_case[case.name], {c.n_proj: c for c in cases if c.name == case.name},
                        args.out / f"{case.name}.png", methods)
    finish(all_rows, methods, args, load0, time.perf_counter() - t_start)


def finish(rows: List[dict], methods: List[str], args, load0, elapsed: float) -> None:
    """Write ``table.csv`` and ``table.md`` (per family, all simulations, the tooth)."""
    write_csv(rows, args.out / "table.csv")
    sims = [dict(r, group="sim: all") for r in rows if r["group"].startswith("sim")]
    load1 = os.getloadavg()
    text = [f"# bench_refine ({'quick' if args.quick else 'full'}): {elapsed:.0f} s; load "
            f"average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs)",
            "", f"TV: {args.tv_iters} iterations, oracle grid "
            f"{' '.join(f'{w:.3g}' for w in args.tv_weights) or '-'}; simulated "
            f"{args.size} px, seeds {args.seeds}; times are wall seconds per slice on a noisy "
            "machine: compare the ratio column (x network time). Network and refine times include "
            f"loading the weights once per call ({args.load_s:.2f} s, measured at the start).",
            ""]
    text += summary(rows + sims, methods)
    edge = [f"{r['case']}@{r['n_proj']} (w={r['weight']:.3g})" for r in rows
            if r["method"] == "tv oracle" and r.get("note")]
    notes = [f"{r['case']}@{r['n_proj']}" for r in rows if r.get("note", "").startswith("fall")]
    text += ["", "TV oracle at the edge of its weight grid: " + (", ".join(edge) or "none"),
             "network fell back to the FBP: " + (", ".join(notes) or "none")]
    print(write_markdown(text, args.out / "table.md"))
    print(f"wrote {args.out}/table.md, table.csv and one PNG per case")


if __name__ == "__main__":
    main()
