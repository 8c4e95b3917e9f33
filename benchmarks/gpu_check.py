"""One-shot GPU check (issue 15): everything in camvis that needs CUDA, in one script, one JSON.

    make gpu-check                                    # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --reduced --out /tmp/gpu_check.json   # CPU smoke (what the test runs)

Parts, each a key of the JSON with "status" ("ok", "failed: ...", "skipped: ..."):
  gpu_tests  -- `pytest -m gpu` (the tests marked gpu)
  training   -- bf16 autocast + channels_last training of the paper configuration (5 levels 2..32,
                patch 128, hidden 128, cat with shared weights + MLP, batch 256) with the batches built
                from a device pyramid inside the timed loop (data loading included): samples/s, model
                TFLOP/s (camvis.model.flops_per_sample) and its share of the GPU's bf16 dense peak
                (read from the device name); eager, eager + fused Adam, torch.compile, and both
  batch_path -- BatchSource on the GPU against the CPU kernel: ms/batch, and the same values
  nccl       -- all_reduce over 2 NCCL ranks (where 2 GPUs exist): bus bandwidth
  verdict    -- the training variant jobs use on this GPU model and torch version (train.compile and
                train.fused_adam "auto"; camvis.job.speedups): the fastest if it beats eager by 3 %,
                written to $CAMVIS_CACHE_DIR/speedups/ (not with --no-verdict, --reduced or without CUDA)
Sized to finish within 8 minutes on one GPU. Without CUDA every part is "skipped: no CUDA";
`--reduced` then also runs the training and batch-path code on the CPU at toy sizes
("cpu_smoke"), so that the script cannot rot between GPU sessions.
"""

from __future__ import annotations

NEEDS = """needs: a CUDA GPU and torch's CUDA build (--reduced runs a CPU smoke instead).
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_batches import synthetic_store  # noqa: E402

from camvis.job import speedups  # noqa: E402
from camvis.job.batches import BatchSource  # noqa: E402
from camvis.model import MultiMagnificationNet, flops_per_sample  # noqa: E402

NO_CUDA = "skipped: no CUDA"
PARTS = ("gpu_tests", "training", "verdict", "batch_path", "nccl")
BF16_DENSE_TFLOPS = {  # vendor datasheets, dense (no sparsity), by a substring of the device name
    "B200": 2250.0, "H200": 989.0, "GH200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H800": 989.0,
    "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "A10G": 70.0, "A10": 125.0,
    "L4": 121.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0,
}
PAPER = {"levels": 5, "factors": (2, 4, 8, 16, 32), "patch": 128, "hidden": 128, "batch": 256,
         "image_shape": (4140, 6198), "images": 4}
TOY = {"levels": 3, "factors": (2, 4, 8), "patch": 16, "hidden": 8, "batch": 16,
       "image_shape": (96, 144), "images": 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per variant (after warm-up)")
    p.add_argument("--reduced", action="store_true", help="toy sizes; on the CPU also run the CPU smoke")
    p.add_argument("--no-tests", action="store_true", help="leave out pytest -m gpu")
    p.add_argument("--no-verdict", action="store_true",
                   help="do not record which training variant jobs should use on this GPU (camvis.job.speedups)")
    return p.parse_args(argv)


def peak_tflops(name: str) -> float | None:
    """The bf16 dense peak of a device, from its name (longest matching key first), or None."""
    for key in sorted(BF16_DENSE_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return BF16_DENSE_TFLOPS[key]
    return None


def guarded(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A part's figures with status "ok", or its failure in one line: the other parts still run."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **part()}
    except Exception as e:  # noqa: BLE001 -- one failing part must not hide the others' figures
        result = {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


# --------------------------------------------------------------------------- parts


def gpu_tests() -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exit {run.returncode}: {lines[-1] if lines else run.stderr[-200:]}")
    return {"summary": lines[-1] if lines else ""}


def _model(sizes: dict, device: torch.device) -> MultiMagnificationNet:
    torch.manual_seed(0)
    model = MultiMagnificationNet(sizes["levels"], size_hidden=sizes["hidden"], share_weights=True,
                                  use_mlp=True, align_features=False, patch_size=sizes["patch"])
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def _source(sizes: dict, device: torch.device) -> BatchSource:
    store = synthetic_store(sizes["images"], 2, sizes["image_shape"], sizes["factors"], sizes["patch"], 20_000)
    return BatchSource(store, sizes["factors"], device)


def train_variant(sizes: dict, device: torch.device, steps: int, *, compile_model: bool = False,
                  fused: bool = False) -> dict[str, Any]:
    """samples/s of `steps` training steps, batches built inside the timed loop (after 3 warm-up steps)."""
    source = _source(sizes, device)
    model = _model(sizes, device)
    flops = flops_per_sample(model)
    net = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(source.labels), (sizes["batch"],), generator=gen) for _ in range(steps + 3)]
    batches = [b.to(device) for b in batches]
    start = time.perf_counter()
    for i, (_, x, y, _) in enumerate(source.iter_batches(batches, channels_last=cuda)):
        if i == 3:  # warm-up done (compilation, cudnn.benchmark's search)
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    samples_per_s = steps * sizes["batch"] / (time.perf_counter() - start)
    return {"samples_per_s": round(samples_per_s, 1), "model_tflop_s": round(samples_per_s * flops / 1e12, 3),
            "gflop_per_sample": round(flops / 1e9, 2), "loss": float(loss.detach())}


def training(sizes: dict, device: torch.device, steps: int, with_compile: bool = True) -> dict[str, Any]:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variants: dict[str, Callable[[], dict]] = {
        "eager": lambda: train_variant(sizes, device, steps),
        "eager_fused_adam": lambda: train_variant(sizes, device, steps, fused=device.type == "cuda"),
    }
    if with_compile:
        variants["compiled"] = lambda: train_variant(sizes, device, steps, compile_model=True)
        variants["compiled_fused_adam"] = lambda: train_variant(sizes, device, steps, compile_model=True,
                                                                fused=device.type == "cuda")
    results = {name: guarded(run) for name, run in variants.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    for r in results.values():
        if peak and "model_tflop_s" in r:
            r["share_of_bf16_peak"] = round(r["model_tflop_s"] / peak, 4)
    ok = {k: v for k, v in results.items() if "samples_per_s" in v}
    return {"device": name, "bf16_dense_peak_tflops": peak, "sizes": {k: list(v) if isinstance(v, tuple) else v
                                                                      for k, v in sizes.items()},
            "variants": results, "fastest": max(ok, key=lambda k: ok[k]["samples_per_s"]) if ok else None}


def batch_path(sizes: dict, device: torch.device, n_batches: int = 10) -> dict[str, Any]:
    """The device's batches against the CPU kernel's: ms/batch each, and the largest difference."""
    store = synthetic_store(sizes["images"], 2, sizes["image_shape"], sizes["factors"], sizes["patch"], 20_000)
    on_device, on_cpu = BatchSource(store, sizes["factors"], device), BatchSource(store, sizes["factors"], "cpu")
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, len(on_cpu.labels), (sizes["batch"],), generator=gen) for _ in range(n_batches)]
    times = {}
    for label, source in (("device", on_device), ("cpu", on_cpu)):
        idx = [b.to(source.device) for b in batches]
        for _ in source.iter_batches(idx[:1]):  # warm-up
            pass
        start = time.perf_counter()
        for _ in source.iter_batches(idx):
            pass
        if source.device.type == "cuda":
            torch.cuda.synchronize(source.device)
        times[label] = (time.perf_counter() - start) / n_batches * 1e3
    x_dev = on_device.batch(batches[0].to(device))[0].cpu()
    x_cpu = on_cpu.batch(batches[0])[0]
    return {"device_ms_per_batch": round(times["device"], 2), "cpu_ms_per_batch": round(times["cpu"], 2),
            "cpu_uses_kernel": on_cpu.uses_kernel, "max_abs_difference": float((x_dev - x_cpu).abs().max())}


def _nccl_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", rank))
    x = torch.ones(64 * 2**20, device="cuda")  # 256 MiB of float32
    for _ in range(3):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 10
    for _ in range(n):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / n
    if rank == 0:  # a ring all_reduce moves 2 (N-1)/N of the buffer per rank: bus bandwidth
        Path(out).write_text(json.dumps({"all_reduce_ms": round(seconds * 1e3, 2),
                                         "bus_gb_s": round(x.nbytes * 2 * 0.5 / seconds / 1e9, 1)}))
    dist.destroy_process_group()


def nccl(out_dir: Path) -> dict[str, Any]:
    if torch.cuda.device_count() < 2:
        return {"status": "skipped: needs 2 GPUs", "gpus": torch.cuda.device_count()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = out_dir / "nccl.json"
    torch.multiprocessing.spawn(_nccl_worker, args=(port, str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def verdict(training_result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Record the training part's verdict for the jobs on this GPU model and torch version."""
    if args.no_verdict:
        return {"status": "skipped: --no-verdict"}
    if args.reduced:  # toy sizes say nothing about the paper configuration's speed
        return {"status": "skipped: --reduced"}
    found = speedups.verdict_from_training(training_result, training_result.get("device") or "unknown")
    if found is None:
        return {"status": "skipped: eager training was not measured"}
    path = speedups.write_verdict(found)
    return {"path": str(path), "picked": found["picked"], "chosen": found["chosen"]}


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "host": socket.gethostname(),
                              "reduced": args.reduced}
    sizes = TOY if args.reduced else PAPER
    steps = min(args.steps, 3) if args.reduced else args.steps
    if not cuda:
        report.update({part: {"status": NO_CUDA} for part in PARTS})
        if args.reduced:  # the same code at toy sizes on the CPU (compile left out: minutes on a CPU)
            cpu = torch.device("cpu")
            report["cpu_smoke"] = {"training": guarded(lambda: training(TOY, cpu, steps, with_compile=False)),
                                   "batch_path": guarded(lambda: batch_path(TOY, cpu, 2))}
        return report
    device = torch.device("cuda", 0)
    report["gpu_tests"] = {"status": "skipped: --no-tests"} if args.no_tests else guarded(gpu_tests)
    report["training"] = guarded(lambda: training(sizes, device, steps))
    report["verdict"] = guarded(lambda: verdict(report["training"], args))
    report["batch_path"] = guarded(lambda: batch_path(sizes, device))
    report["nccl"] = guarded(lambda: nccl(args.out.parent))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = run(args)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)  # never a half-written result under the final name
    for part in PARTS:
        print(f"{part:11s} {report[part].get('status')}")
    print(f"wrote {args.out}")
    return 0 if all(not str(report[p].get("status", "")).startswith("failed") for p in PARTS) else 1


if __name__ == "__main__":
    sys.exit(main())
