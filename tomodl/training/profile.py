# SPDX-License-Identifier: BSD-3-Clause
"""Peak memory and training time in fp32 and amp, for both networks: the paper's Table 2.

Each configuration (network x precision) runs in a fresh Python process, so its peak memory is
its own: on CUDA ``torch.cuda.max_memory_allocated`` (the paper's "video memory"), on the CPU
the process's peak resident set (``VmHWM``), reported both in total and above the resident
set measured just before the first step (the training working set: activations, gradients,
optimizer state).  The time is that of ``steps`` optimizer steps after ``warmup`` untimed ones,
on random ``(batch, 1, size, size)`` crops (the values do not change the cost).

Run: ``tomodl evaluate --profile-precision`` or ``python -m tomodl.training.profile``.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

ARCHS = ("resattunet", "unet")
PRECISION_LEVELS = {"fp32": "O0", "amp": "O2"}   # the paper's Apex names, for the table


@dataclass(frozen=True)
class ProfileSpec:
    """One measurement: network, precision and the size of the work."""

    arch: str
    precision: str
    size: int = 256
    batch: int = 2
    steps: int = 10
    warmup: int = 2
    model_args: Dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int = 0


def _rss_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def measure(spec: ProfileSpec) -> Dict[str, Any]:
    """Run the measurement in this process (call it in a fresh one: see :func:`profile`)."""
    import torch

    from tomodl.backend import resolve_device
    from tomodl.models import create_model

    if spec.threads:
        torch.set_num_threads(spec.threads)
    dev = resolve_device(spec.device)
    torch.manual_seed(0)
    model = create_model(spec.arch, **spec.model_args).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-7)
    amp = spec.precision == "amp"
    dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and dev.type == "cuda")
    x = torch.rand(spec.batch, 1, spec.size, spec.size, device=dev)
    y = torch.rand_like(x)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=amp):
            pred = model(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    base_kib = _rss_kib("VmRSS")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(spec.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(spec.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    out = {**asdict(spec), "device": str(dev), "seconds": seconds,
           "seconds_per_step": seconds / spec.steps, "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["memory"] = "cuda max_memory_allocated"
    else:
        out["peak_mib"] = _rss_kib("VmHWM") / 1024
        out["working_mib"] = (_rss_kib("VmHWM") - base_kib) / 1024
        out["memory"] = "peak RSS (VmHWM)"
    return out


def profile(specs: Sequence[ProfileSpec]) -> List[Dict[str, Any]]:
    """Measure each spec in its own fresh Python process; return the result dicts."""
    results = []
    for spec in specs:
        cmd = [sys.executable, "-m", "tomodl.training.profile", "--child", json.dumps(asdict(spec))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"profiling {spec.arch}/{spec.precision} failed: "
                               f"{proc.stderr.strip().splitlines()[-1:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def _saving(a: float, b: float) -> str:
    return f"{100.0 * (a - b) / a:.2f}%" if a > 0 else "n/a"


def table2_markdown(results: Sequence[Dict[str, Any]]) -> str:
    """The paper's Table 2: per network, memory and time in fp32 (O0) and amp (O2), savings."""
    by = {(r["arch"], r["precision"]): r for r in results}
    mem = "working_mib" if "working_mib" in results[0] else "peak_mib"
    r0 = results[0]
    lines = [f"Device {r0['device']}, {r0['batch']} x {r0['size']}x{r0['size']} crops, "
             f"{r0['steps']} steps, memory = {r0['memory']}"
             + (" above the pre-training RSS" if mem == "working_mib" else "") + "", "",
             "| Model | fp32 (O0) memory MiB | fp32 time s | amp (O2) memory MiB | amp time s "
             "| memory saving | time saving |", "|---|---|---|---|---|---|---|"]
    for arch in dict.fromkeys(r["arch"] for r in results):
        a, b = by.get((arch, "fp32")), by.get((arch, "amp"))
        if a is None or b is None:
            continue
        lines.append(f"| {arch} | {a[mem]:.0f} | {a['seconds']:.3f} | {b[mem]:.0f} | "
                     f"{b['seconds']:.3f} | {_saving(a[mem], b[mem])} | "
                     f"{_saving(a['seconds'], b['seconds'])} |")
    return "\n".join(lines) + "\n"


def write_table2(results: Sequence[Dict[str, Any]], out: Path) -> Path:
    """Write ``table2.md`` and ``table2.csv`` (one row per measurement) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table2.md").write_text("# Mixed precision: memory and time (paper Table 2)\n\n"
                                   + table2_markdown(results))
    keys = sorted({k for r in results for k in r})
    with open(out / "table2.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()}
                     for r in results])
    return out / "table2.md"


def _main(argv: Sequence[str]) -> None:
    if len(argv) == 2 and argv[0] == "--child":
        print(json.dumps(measure(ProfileSpec(**json.loads(argv[1])))))
        return
    specs = [ProfileSpec(a, p) for a in ARCHS for p in PRECISION_LEVELS]
    print(table2_markdown(profile(specs)))


if __name__ == "__main__":
    _main(sys.argv[1:])
