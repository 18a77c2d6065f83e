"""Copy a trained run's best weights into the package as a release (fp16 safetensors).

The release folder ``tomodl/weights/<name>/`` gets ``model.safetensors`` (float16: half the
size, loaded back as float32) and ``config.json`` with the training provenance of the run and a
``release`` record that says which scans the weights serve (tomodl.models.releases):

    python scripts/release_weights.py runs/cpu-resattunet-mixed/best --name resattunet \\
        --angles 10 300 --min-angles 10 --description "..." --metrics results/metrics.json

Run it once per released model; the repository keeps every committed version of these ~16 MB
files, so only commit weights that replace the release on purpose.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("best", type=Path, help="weights folder of a run (runs/<name>/best)")
    ap.add_argument("--name", required=True, help="release folder name, e.g. resattunet")
    ap.add_argument("--angles", type=int, nargs=2, required=True, metavar=("LO", "HI"),
                    help="projections per half turn of the training inputs")
    ap.add_argument("--min-angles", type=int, default=None,
                    help="below this the network is skipped (measured to hurt real data)")
    ap.add_argument("--max-angles", type=int, default=None,
                    help="above this the scan is dense and keeps its FBP")
    ap.add_argument("--caution-below", type=int, default=None,
                    help="below this the network is applied with a warning")
    ap.add_argument("--no-auto", action="store_true",
                    help="never chosen automatically: only used when named (--model NAME)")
    ap.add_argument("--description", default="")
    ap.add_argument("--metrics", type=Path, default=None, help="JSON of measured results")
    a = ap.parse_args()

    import torch

    from tomodl.models.weights import load_weights, save_weights

    model, cfg = load_weights(a.best)
    meta = cfg.extra.get("pairs_metadata", {})
    factors = meta.get("sparse_factors") or ([cfg.sparse_factor] if cfg.sparse_factor else [])
    release = {"name": a.name, "sparse_factors": factors, "angles": list(a.angles),
               "min_angles": a.min_angles, "description": a.description,
               "source_sha256": cfg.sha256, "auto": not a.no_auto}
    for key in ("max_angles", "caution_below"):
        if getattr(a, key) is not None:
            release[key] = getattr(a, key)
    if a.metrics is not None:
        release["metrics"] = json.loads(a.metrics.read_text(encoding="utf-8"))
    extra = dict(cfg.extra)
    if "pairs_metadata" in extra:      # keep the contract, drop the per-scan list (paths)
        extra["pairs_metadata"] = {k: v for k, v in extra["pairs_metadata"].items()
                                   if k not in ("sources", "centers", "seeds")}
    out = save_weights(model, REPO / "tomodl" / "weights" / a.name, arch=cfg.arch,
                       model_args=cfg.model_args, normalization=cfg.normalization,
                       sparse_factor=cfg.sparse_factor, filter_name=cfg.filter_name,
                       training_data=cfg.training_data, dtype=torch.float16, extra=extra,
                       release=release, overwrite=True)
    size = (out / "model.safetensors").stat().st_size
    print(f"released {cfg.arch} as {out} ({size / 1e6:.1f} MB, sha256 "
          f"{json.loads((out / 'config.json').read_text())['sha256'][:16]}...)")


if __name__ == "__main__":
    main()
