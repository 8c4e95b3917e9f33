"""Static int8 quantization (QDQ, onnxruntime) of camvis's ONNX graph: is it faster on the CPU, and
how much does it move the visibility? Issue 24, point 4: adopted behind `camvis-export --quantize
int8` only if it is faster AND changes the median |log10 error| on held-out images by <= 0.01.

1. Accuracy (a trained model; demo-sized so it trains in minutes): the demo's synthetic data and
   store (camvis.cli.demo's SYNTH and BUILD), one job per variant (configs/job.yaml: cat, and
   align with model.align_features=true; fold 1) trained with camvis-train, exported with
   camvis-export twice: as is, and with --quantize int8 (camvis.job.export.quantize_int8:
   onnxruntime.quantization.quantize_static, QDQ, uint8 activations, int8 per-channel weights,
   MinMax, calibrated on 512 of the job's own training patches: batches of its store with its
   fold's normalization, what the network saw; checked on its held-out view's patches). Then
   camvis-predict's path (predict_items, 500 patches) on held-out images with known truth: new
   synthetic scenes (`--heldout-views` x `--heldout-images`, another seed), through the float32
   graph and the int8 one; the median |log10(predicted / true)| of each and their difference.
2. Speed at paper size (as bench_predict's network part): the paper's networks (5 levels, patch
   128, hidden 128, share + MLP, seeded random weights: the time does not depend on them),
   exported to ONNX and quantized the same way, calibrated on patches of a paper-size synthetic
   image (4140 x 6198, cached in the work folder); a batch of `--net-batch` (64) patches, best of
   `--repeats` (3), float32 against int8, with the matmul probe and the load before and after.

    python benchmarks/bench_quantize.py                      # both parts, both variants
    python benchmarks/bench_quantize.py --no-speed           # the accuracy part only (minutes)

The work folder (`--work`, default /tmp/camvis-quantize) keeps the data, store, jobs, bundles, graphs
and the paper-size image between runs: a rerun skips what is there. Results:
benchmarks/results/quantize_cpu.json.
"""

from __future__ import annotations

NEEDS = """needs: the optional extra camvis[onnx] (onnx, onnxruntime, onnxscript), about 3 GB of memory for the
paper-size part; makes everything else itself in --work (synthetic data, store, two trained jobs).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_predict as bp  # noqa: E402: the paper networks, the matmul probe, the load

from camvis.cli.demo import BUILD, SYNTH  # noqa: E402
from camvis.data import store_build  # noqa: E402
from camvis.data.raw import read_visibility  # noqa: E402
from camvis.data.synth import synthesize  # noqa: E402
from camvis.job import export, predict  # noqa: E402
from camvis.errors import PredictError  # noqa: E402
from camvis.job.batches import BatchSource  # noqa: E402

ACCEPT_LOG10 = 0.01  # the bound on the change of the median |log10 error|


def quantize(fp32: Path, out: Path, batches: list) -> dict:
    """camvis's quantization (camvis.job.export.quantize_int8), or the error when it fails."""
    start = time.perf_counter()
    try:
        info = export.quantize_int8(fp32, out, batches)
    except PredictError as e:
        return {"ok": False, "error": str(e)[:500]}
    return {"ok": True, **info, "seconds": time.perf_counter() - start, "fp32_bytes": fp32.stat().st_size,
            "int8_bytes": out.stat().st_size}


# --------------------------------------------------------------------------- 1. accuracy


def demo_data(work: Path) -> Path:
    raw, store = work / "raw", work / "store.zarr"
    if not (raw / "visibility.csv").exists():
        synthesize(raw, progress=False, force=True, **SYNTH)
    store_build.build(raw, store, progress=False, figure=False, **BUILD)  # reused when built alike
    return store


def trained_job(work: Path, store: Path, variant: str, epochs: int) -> Path:
    job = work / "outputs" / "quantize" / variant
    if not (job / "best.pt").exists() or not (job / "scores.json").exists():
        cmd = [sys.executable, "-m", "camvis.cli.train", str(ROOT / "configs" / "job.yaml"), "experiment=quantize",
               f"name={variant}", f"group={variant}", f"data.store={store}", "eval.figures=false",
               f"model.align_features={'true' if variant == 'align' else 'false'}", f"train.max_epochs={epochs}",
               "--outputs", str(work / "outputs")]
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=work)
    return job


def errors(bundle: Path, raw: Path, threads: int, patches: int) -> tuple[np.ndarray, np.ndarray]:
    """(log10 error per held-out image, predicted metres) through the bundle's graph (camvis-predict's path)."""
    model = predict.load_model(bundle, device="cpu", runtime="onnx", threads=threads)
    items, problems = predict.list_items([], None, str(raw))
    assert not problems, problems
    rows, problems = predict.predict_items(items, model, patches=patches, truth=read_visibility(raw))
    assert not problems, problems
    return (np.array([r["log10_error"] for r in rows], np.float64),
            np.array([r["visibility_m"] for r in rows], np.float64))


def accuracy(args: argparse.Namespace, work: Path, threads: int) -> list[dict]:
    store = demo_data(work)
    heldout = work / "heldout"
    if not (heldout / "visibility.csv").exists():
        synthesize(heldout, views=args.heldout_views, images_per_view=args.heldout_images, size=SYNTH["size"],
                   seed=SYNTH["seed"] + 1, progress=False, force=True)
    out = []
    for variant in args.variants:
        job = trained_job(work, store, variant, args.epochs)
        fp32, int8 = work / "bundles" / variant, work / "bundles" / f"{variant}-int8"
        export.export(job, fp32)
        start = time.perf_counter()
        try:  # camvis-export --quantize int8
            q = {"ok": True, **export.export(job, int8, quantize="int8")["onnx"]["quantization"]}
        except PredictError as e:
            q = {"ok": False, "error": str(e)[:500]}
        q["export_s"] = time.perf_counter() - start
        row = {"variant": variant, "job": str(job), "quantization": q,
               "held_out_images": args.heldout_views * args.heldout_images}
        if q["ok"]:
            e32, v32 = errors(fp32, heldout, threads, args.patches)
            e8, v8 = errors(int8, heldout, threads, args.patches)
            ok = np.isfinite(e32) & np.isfinite(e8)
            m32, m8 = float(np.median(np.abs(e32[ok]))), float(np.median(np.abs(e8[ok])))
            row.update({"images_with_truth": int(ok.sum()), "median_abs_log10_error_fp32": m32,
                        "median_abs_log10_error_int8": m8, "change": m8 - m32,
                        "median_abs_log10_int8_over_fp32": float(np.median(np.abs(np.log10(v8[ok] / v32[ok])))),
                        "max_abs_log10_int8_over_fp32": float(np.max(np.abs(np.log10(v8[ok] / v32[ok]))))})
        out.append(row)
        print(json.dumps(row, indent=2), flush=True)
    return out


# --------------------------------------------------------------------------- 2. speed at paper size


def paper_batches(work: Path, n: int, batch: int) -> list:
    """`n` depth-balanced patches of a paper-size synthetic image, made as camvis-predict makes them,
    in batches (functions, as camvis.job.export.quantize_int8 takes them)."""
    raw = work / "paper-raw"
    if not (raw / "visibility.csv").exists():
        synthesize(raw, views=1, images_per_view=1, size=(4140, 6198), seed=0, progress=False, force=True)
    items, _ = predict.list_items([], None, str(raw))
    info = bp.paper_info(128, 128)
    model = predict.torch_model(bp.network("cat", 128, 128), info, "bench", torch.device("cpu"))
    rgb = predict.read_image(items[0].image)
    depth = predict.read_depth(items[0].depth)
    rows, cols = predict.sampled_centres(depth, model.patch_size, n, 0)
    source = BatchSource(predict.image_store(rgb, depth, rows, cols, model), model.factors)
    return [lambda part=part: source.batch(part)[0].numpy() for part in torch.arange(rows.size).split(batch)]


def speed(args: argparse.Namespace, work: Path, threads: int) -> list[dict]:
    folder = work / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    x = torch.randn(args.net_batch, 4 * len(bp.FACTORS), 128, 128, generator=torch.Generator().manual_seed(0))
    out = []
    for variant in args.variants:
        net = bp.network(variant, 128, 128)
        fp32, int8 = folder / f"{variant}.onnx", folder / f"{variant}-int8.onnx"
        if not fp32.exists():
            export.export_onnx(net, fp32, predict.torch_model(net, bp.paper_info(128, 128), variant,
                                                              torch.device("cpu")))
        q = quantize(fp32, int8, paper_batches(work, args.paper_calib_patches, export.CALIBRATION_BATCH))
        row = {"variant": variant, "quantization": q}
        for name, graph in (("fp32", fp32), ("int8", int8)) if q["ok"] else (("fp32", fp32),):
            forward = export.onnx_forward(export._session(graph, None, threads), args.net_batch)
            row[f"{name}_s_per_batch"] = bp.time_network(forward, x, torch.device("cpu"), args.repeats)
            print(f"{variant} {name}: {row[f'{name}_s_per_batch']:.2f} s / {args.net_batch} patches", flush=True)
        if q["ok"]:
            row["int8_speedup"] = row["fp32_s_per_batch"] / row["int8_s_per_batch"]
            p32 = export.onnx_forward(export._session(fp32, None, threads), 16)(x[:16])
            p8 = export.onnx_forward(export._session(int8, None, threads), 16)(x[:16])
            row["max_abs_p_diff_random_inputs"] = float(np.max(np.abs(p32 - p8)))
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/camvis-quantize", help="work folder, reused (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", default=list(bp.VARIANTS), choices=list(bp.VARIANTS))
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of each job (default: 6, the demo's)")
    parser.add_argument("--paper-calib-patches", type=int, default=32,
                        help="calibration patches of the speed part (its graphs are timed, not scored; default: 32)")
    parser.add_argument("--heldout-views", type=int, default=4)
    parser.add_argument("--heldout-images", type=int, default=10, help="held-out images per view")
    parser.add_argument("--patches", type=int, default=500, help="patches per held-out image")
    parser.add_argument("--net-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: camvis.job.predict.cpu_threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quantize_cpu.json"))
    args = parser.parse_args()
    try:
        import onnxruntime
    except ImportError:
        parser.error("needs onnxruntime: pip install 'camvis[onnx]'")
    threads = predict.cpu_threads(args.threads)
    torch.set_num_threads(threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                    "accept": f"int8 faster and |change of median |log10 error|| <= {ACCEPT_LOG10}",
                    "load_before": bp.load()}
    if not args.no_accuracy:
        result["accuracy"] = accuracy(args, work, threads)
    if not args.no_speed:
        result["matmul_probe_gflops"] = bp.matmul_gflops(torch.device("cpu"))
        result["load_before_speed"] = bp.load()
        result["speed"] = speed(args, work, threads)
        result["matmul_probe_gflops_after"] = bp.matmul_gflops(torch.device("cpu"))
    result["load_after"] = bp.load()
    acc, spd = result.get("accuracy", []), result.get("speed", [])
    result["adopt"] = {row["variant"]: bool(
        any(r["variant"] == row["variant"] and r.get("int8_speedup", 0) > 1 for r in spd)
        and row.get("change") is not None and abs(row["change"]) <= ACCEPT_LOG10) for row in acc} if acc and spd else None
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("accuracy", "speed")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
