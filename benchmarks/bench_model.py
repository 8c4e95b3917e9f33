"""Training-step throughput of MultiMagnificationNet (forward + backward + Adam step).

The paper configuration by default: 5 levels, hidden 128, patch 128, shared weights + MLP,
"cat" (type_2) and "align" (type_1), at batch 32 and 256. Reports samples/s and model FLOP/s,
where model FLOPs = samples/s x camvis.model.flops_per_sample (measured forward + backward
FLOPs of convs and matmuls, 2 per multiply-add; the optimizer step is not counted).

    python benchmarks/bench_model.py                                   # CPU, fp32 (slow: ~minutes on 2 cores)
    python benchmarks/bench_model.py --device cuda --peak-tflops 989   # bf16 autocast + channels_last

On the CPU a batch whose autograd activations would not fit in the available memory is
skipped (estimated on the meta device, without running it): batch 256 needs ~50 GiB.
"""

from __future__ import annotations

NEEDS = """needs: nothing on the CPU; --device cuda needs a CUDA GPU and torch's CUDA build.
"""

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from camvis.model import MultiMagnificationNet, find_architecture, flops_per_sample

GROUPS = {"cat": False, "align": True}
MEMORY_HEADROOM = 0.8  # skip a CPU run whose estimated activations exceed this share of free memory


@dataclass
class Result:
    group: str
    architecture: str
    batch: int
    device: str
    precision: str
    status: str  # "ok" or why it did not run
    step_s: float | None = None
    samples_per_s: float | None = None
    gflop_per_sample: float | None = None
    model_tflop_s: float | None = None
    peak_share: float | None = None
    activations_gib: float | None = None
    peak_memory_gib: float | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument("--groups", nargs="+", choices=tuple(GROUPS), default=list(GROUPS))
    p.add_argument("--levels", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (cuDNN autotune, allocator)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default: 2 on cpu, 20 on cuda)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s for the precision used (e.g. 989 for H100 SXM bf16 dense)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory-check", action="store_true", help="run CPU batches even if they look too big")
    p.add_argument("--json", type=Path, default=None, help="also write the results here (atomically)")
    return p.parse_args(argv)


def activation_gib(model: MultiMagnificationNet, batch: int) -> float:
    """Bytes autograd saves for one forward, counted on the meta device (nothing is computed)."""
    probe = copy.deepcopy(model).to(device="meta").train()
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t
        return t

    x = torch.zeros(batch, model.num_levels * model.num_channels, model.patch_size, model.patch_size, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probe(x)
    return sum(t.numel() * t.element_size() for t in saved.values()) / 2**30


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                steps: int, cuda: bool) -> float:
    """Seconds for `steps` training steps: forward, BCE loss, backward, Adam step."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_one(args: argparse.Namespace, group: str, batch: int) -> Result:
    cuda = args.device == "cuda"
    flags = {"share_weights": True, "use_mlp": True, "align_features": GROUPS[group]}
    model = MultiMagnificationNet(args.levels, size_hidden=args.hidden, patch_size=args.patch_size, **flags)
    result = Result(group, find_architecture(**flags).name, batch, args.device,
                    "bf16 autocast, channels_last" if cuda else "fp32", status="ok",
                    gflop_per_sample=flops_per_sample(model) / 1e9, activations_gib=activation_gib(model, batch))
    if not cuda and not args.no_memory_check and result.activations_gib > MEMORY_HEADROOM * available_gib():
        result.status = f"skipped: needs ~{result.activations_gib:.0f} GiB, {available_gib():.0f} GiB free"
        return result
    device = torch.device(args.device)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (batch, args.levels * model.num_channels, args.patch_size, args.patch_size)
    x = torch.randn(shape, device=device, generator=gen).contiguous(memory_format=memory_format)
    y = torch.randint(0, 2, (batch,), device=device, generator=gen).float()
    try:
        train_steps(model, optimizer, x, y, args.warmup, cuda)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        iters = args.iters or (20 if cuda else 2)
        seconds = train_steps(model, optimizer, x, y, iters, cuda)
    except torch.OutOfMemoryError:
        result.status = "out of memory"
        return result
    result.step_s = seconds / iters
    result.samples_per_s = batch / result.step_s
    result.model_tflop_s = result.samples_per_s * result.gflop_per_sample / 1e3
    if args.peak_tflops:
        result.peak_share = result.model_tflop_s / args.peak_tflops
    if cuda:
        result.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
    return result


def table(results: list[Result], args: argparse.Namespace) -> Table:
    name = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    t = Table(title=f"MultiMagnificationNet training step: {args.levels} levels, hidden {args.hidden}, "
                    f"patch {args.patch_size}, share + MLP, {name}, torch {torch.__version__}")
    for col in ("group", "arch", "batch", "precision", "s/step", "samples/s", "GFLOP/sample",
                "model TFLOP/s", "of peak", "activations GiB", "peak mem GiB", "status"):
        t.add_column(col)
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    for r in results:
        t.add_row(r.group, r.architecture, str(r.batch), r.precision, fmt(r.step_s, ".3f"),
                  fmt(r.samples_per_s, ".1f"), fmt(r.gflop_per_sample, ".2f"), fmt(r.model_tflop_s, ".3f"),
                  fmt(r.peak_share, ".1%"), fmt(r.activations_gib, ".1f"), fmt(r.peak_memory_gib, ".1f"), r.status)
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    console = Console(width=200)
    results = []
    for group in args.groups:
        for batch in args.batch_sizes:
            results.append(bench_one(args, group, batch))
            r = results[-1]
            console.print(f"{group} batch {batch}: {r.status}"
                          + (f", {r.samples_per_s:.1f} samples/s, {r.model_tflop_s:.3f} TFLOP/s" if r.step_s else ""))
    console.print(table(results, args))
    if args.json:
        from camvis.io import write_json
        write_json(args.json, {"argv": sys.argv[1:], "torch": torch.__version__,
                               "load_average": os.getloadavg()[0], "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
