"""camvis-predict at paper size: a roofline per runtime and variant, and images per second end to end.

Paper settings by default: synthetic 4140 x 6198 PNG images (camvis.data.synth), 500 depth-balanced
patches per image, 5 levels (factors 2..32), patch 128, hidden 128, shared weights + MLP, "cat"
(type_2) and "align" (type_1), random weights (time does not depend on them).

1. Peak: a float32 matmul probe (torch, 2048 x 2048, the same threads), best of 3, in GFLOP/s.
2. Network, per runtime and variant: a batch of `--net-batch` normalized patches, forward only,
   best of `--repeats`; GFLOP/s = forward FLOPs (camvis.model.training_flops: 2 per multiply-add of
   convs and matmuls) / time, and its share of the probe. Runtimes: torch eager (contiguous),
   torch channels_last (what --runtime torch runs on the CPU), onnxruntime (the bundle's graph,
   exported and checked here; what --runtime auto runs on the CPU).
3. End to end (`--e2e-variant`, `--e2e-runtime`, default cat / onnx): camvis.job.predict.predict_items
   over `--images` images (the read-ahead thread, batches across images), the first one a warm-up;
   then the per-image parts timed one by one on one image: decode (+ SHA-256), centres, pyramid,
   batches (crops + normalization), network, fit.

    python benchmarks/bench_predict.py                         # CPU, threads from the allocation/cores
    python benchmarks/bench_predict.py --device cuda --runtimes torch --images 11
    python benchmarks/bench_predict.py --variants cat --runtimes onnx --images 3 --cache /tmp/camvis-bench

The load average of the machine is recorded before and after (the development machine is shared).
"""

from __future__ import annotations

NEEDS = """needs: nothing on the CPU (it synthesizes its images); --device cuda needs a CUDA GPU.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camvis.data.synth import synthesize  # noqa: E402
from camvis.job import export, inputs, loaded_model, predict  # noqa: E402
from camvis.job import visibility as vis  # noqa: E402
from camvis.job.batches import BatchSource  # noqa: E402
from camvis.model import MultiMagnificationNet, training_flops  # noqa: E402

FACTORS = (2, 4, 8, 16, 32)
VARIANTS = {"cat": False, "align": True}


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]] if Path("/proc/loadavg").exists() else []


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first warms up
        sync(device)
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def paper_info(hidden: int, patch: int) -> dict:
    stats = np.tile(np.array([[120.0, 120.0, 120.0, 3.0]], np.float32), (len(FACTORS), 1))
    return {"factors": list(FACTORS), "patch_size": patch, "norm_mean": stats.tolist(),
            "norm_std": np.full_like(stats, 50.0).tolist()}


def network(variant: str, hidden: int, patch: int) -> MultiMagnificationNet:
    torch.manual_seed(0)
    return MultiMagnificationNet(num_levels=len(FACTORS), size_hidden=hidden, share_weights=True, use_mlp=True,
                                 align_features=VARIANTS[variant], patch_size=patch).eval()


def runtimes(variant: str, args: argparse.Namespace, device: torch.device, folder: Path) -> dict:
    """{runtime name: Model} of one variant."""
    info = paper_info(args.hidden, args.patch_size)
    models = {}
    if "eager" in args.runtimes:
        net = network(variant, args.hidden, args.patch_size).to(device)

        def eager(x, net=net):
            with torch.inference_mode():
                return torch.sigmoid(net(x.to(device))).float().reshape(-1).cpu().numpy()

        models["torch-eager"] = eager
    if "torch" in args.runtimes:
        models["torch-channels_last" + ("-bf16" if device.type == "cuda" else "")] = loaded_model.torch_model(
            network(variant, args.hidden, args.patch_size), info, f"bench/{variant}", device).forward
    if "onnx" in args.runtimes and device.type == "cpu":
        net = network(variant, args.hidden, args.patch_size)
        model = loaded_model.torch_model(net, info, f"bench/{variant}", torch.device("cpu"))
        path = folder / f"{variant}.onnx"
        start = time.perf_counter()
        export.export_onnx(net, path, model)
        print(f"{variant}: ONNX export + check {time.perf_counter() - start:.1f} s", flush=True)
        session = export._session(path, None, predict.cpu_threads(args.threads))
        models["onnxruntime"] = export.onnx_forward(session, args.net_batch)
    return models


def time_network(forward, x: torch.Tensor, device: torch.device, repeats: int) -> float:
    forward(x[:2])  # warm-up (graph optimization, allocator)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        forward(x)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def model_for(variant: str, runtime: str, args: argparse.Namespace, device: torch.device, folder: Path
              ) -> predict.Model:
    """A predict.Model of a variant as camvis-predict runs it (onnx: through a real bundle-free graph)."""
    info = paper_info(args.hidden, args.patch_size)
    model = loaded_model.torch_model(network(variant, args.hidden, args.patch_size), info, f"bench/{variant}", device)
    if runtime != "onnx" or device.type != "cpu":
        return model
    path = Path(args.e2e_graph) if args.e2e_graph else folder / f"{variant}.onnx"
    if not path.exists():
        export.export_onnx(model.network, path, model)
    session = export._session(path, None, predict.cpu_threads(args.threads))
    forward = export.onnx_forward(session, max(1, export.ONNX_ACTIVATION // (args.hidden * args.patch_size ** 2)))
    return replace(model, forward=forward, network=None,
                   runtime="onnxruntime-cpu" + (f" ({path.name})" if args.e2e_graph else ""))


def end_to_end(args: argparse.Namespace, device: torch.device, folder: Path) -> dict:
    start = time.perf_counter()
    raw = Path(args.cache or folder) / f"raw-{args.size[0]}x{args.size[1]}-{args.images}"
    if not (raw / "visibility.csv").exists():  # synthesis is slow at paper size: --cache keeps them
        synthesize(raw, views=1, images_per_view=args.images, size=tuple(args.size), seed=0, progress=False,
                   force=True)
    synth_s = time.perf_counter() - start
    model = model_for(args.e2e_variant, args.e2e_runtime, args, device, folder)
    if args.e2e_runtime == "none":  # everything but the network: what the per-image path costs around it
        model = replace(model, forward=lambda x: np.full(len(x), 0.5, np.float32), network=None, runtime="none")
    items, problems = predict.list_items([], None, str(raw))
    assert not problems, problems
    forward, network_s = model.forward, []

    def timed(x):
        sync(device)
        t0 = time.perf_counter()
        out = forward(x)
        sync(device)
        network_s.append(time.perf_counter() - t0)
        return out

    model = replace(model, forward=timed)
    predict.predict_items(items[:1], model, patches=args.patches, batch_size=args.batch_size)  # warm-up
    network_s.clear()
    start = time.perf_counter()
    rows, problems = predict.predict_items((items[1:] or items) * args.passes, model, patches=args.patches,
                                           batch_size=args.batch_size)
    wall = time.perf_counter() - start
    assert rows and not problems, problems
    n = len(rows)
    parts = breakdown(items[0], model, args)
    return {"variant": args.e2e_variant, "runtime": model.runtime, "images_timed": n, "s_per_image": wall / n,
            "images_per_s": n / wall, "network_s_per_image": sum(network_s) / n,
            "other_s_per_image_overlapped": wall / n - sum(network_s) / n,
            "parts_s_one_image_serial": parts, "synthesis_s": synth_s}


def breakdown(item: predict.Item, model: predict.Model, args: argparse.Namespace) -> dict:
    """Each part of one image's path, timed alone (no read-ahead): where the time goes."""
    t = {}
    start = time.perf_counter()
    rgb, _ = inputs.read_image_file(item.image)
    t["decode_and_digest"] = time.perf_counter() - start
    depth = predict.read_depth(item.depth)
    start = time.perf_counter()
    rows, cols = predict.sampled_centres(depth, model.patch_size, args.patches, 0)
    t["centres"] = time.perf_counter() - start  # camvis-predict draws them once per view, not per image
    start = time.perf_counter()
    source = BatchSource(predict.image_store(rgb, depth, rows, cols, model), model.factors, model.device)
    t["pyramid"] = time.perf_counter() - start
    idx = torch.arange(rows.size)
    xs, start = [], time.perf_counter()
    for part in idx.split(args.batch_size):
        xs.append(source.batch(part)[0])
    t["batches"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = np.concatenate([model.forward(x) for x in xs])
    t["network"] = time.perf_counter() - start
    start = time.perf_counter()
    vis.estimate(depth[rows, cols], scores)
    t["fit"] = time.perf_counter() - start
    return t


def main() -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="end-to-end images, the first a warm-up (default: 3)")
    parser.add_argument("--size", type=int, nargs=2, default=(4140, 6198), metavar=("H", "W"))
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256, help="camvis-predict's --batch-size (default: 256)")
    parser.add_argument("--net-batch", type=int, default=64, help="patches per timed forward (default: 64)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--runtimes", nargs="+", default=["eager", "torch", "onnx"],
                        choices=["eager", "torch", "onnx"])
    parser.add_argument("--e2e-variant", default="cat", choices=list(VARIANTS))
    parser.add_argument("--e2e-runtime", default="onnx", choices=["torch", "onnx", "none"],
                        help="none: no network (p = 0.5), the time of the rest of the path alone")
    parser.add_argument("--e2e-graph", default=None,
                        help="the ONNX graph --e2e-runtime onnx runs, e.g. an int8 one of benchmarks/bench_quantize.py "
                             "(/tmp/camvis-quantize/paper/cat-int8.onnx; default: the float32 graph exported here)")
    parser.add_argument("--passes", type=int, default=1,
                        help="the timed images predicted this many times over in one run (an archive: many "
                             "images per view, read and decoded each time; default: 1)")
    parser.add_argument("--no-roofline", action="store_true", help="end to end only")
    parser.add_argument("--no-e2e", action="store_true", help="the roofline only")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: camvis.job.predict.cpu_threads)")
    parser.add_argument("--cache", default=None,
                        help="folder that keeps the synthesized images between runs (default: none, made anew)")
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/predict_<device>.json)")
    args = parser.parse_args()
    threads = predict.cpu_threads(args.threads)
    torch.set_num_threads(threads)
    device = loaded_model.device_for(args.device)
    load_before = load()
    peak = matmul_gflops(device)
    print(f"matmul probe: {peak:.1f} GFLOP/s ({threads} threads), load {load_before}", flush=True)
    result: dict = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": threads,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "image_size": list(args.size), "patches": args.patches, "factors": list(FACTORS),
                    "patch_size": args.patch_size, "hidden": args.hidden, "batch_size": args.batch_size,
                    "net_batch": args.net_batch, "matmul_probe_gflops": peak, "network": [],
                    "torch": torch.__version__, "load_before": load_before}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = torch.randn(args.net_batch, 4 * len(FACTORS), args.patch_size, args.patch_size,
                        generator=torch.Generator().manual_seed(0))
        for variant in [] if args.no_roofline else args.variants:
            flops = training_flops(network(variant, args.hidden, args.patch_size))[0]
            for name, forward in runtimes(variant, args, device, folder).items():
                seconds = time_network(forward, x, device, args.repeats)
                gflops = flops * args.net_batch / seconds / 1e9
                row = {"variant": variant, "runtime": name, "s_per_batch": seconds,
                       "s_per_500_patches": seconds * 500 / args.net_batch, "gflops": gflops,
                       "share_of_matmul_probe": gflops / peak, "forward_gflop_per_patch": flops / 1e9}
                result["network"].append(row)
                print(f"{variant:5s} {name:22s} {seconds:7.2f} s / {args.net_batch} patches  "
                      f"{gflops:6.1f} GFLOP/s = {gflops / peak:.0%} of the probe", flush=True)
        result["matmul_probe_gflops_after_network"] = matmul_gflops(device)  # the load moves: probe again
        print(f"matmul probe after the network runs: {result['matmul_probe_gflops_after_network']:.1f} GFLOP/s",
              flush=True)
        if not args.no_e2e:
            result["end_to_end"] = end_to_end(args, device, folder)
            print(json.dumps(result["end_to_end"], indent=2), flush=True)
    result["load_after"] = load()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"predict_{device.type}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
