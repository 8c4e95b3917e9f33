"""camvis-predict throughput at paper size: images per second, end to end, and where the time goes.

Paper settings by default: synthetic 4140 x 6198 images (camvis.data.synth, PNG on disk), 500
depth-balanced patches per image, 5 levels (factors 2..32), patch 128, camvis2's best model
(type_2: shared weights + MLP, hidden 128) with random weights (the time does not depend on
them). Each image runs the whole per-image path of camvis-predict (decode, centres, pyramid,
batches, network, logistic fit); the first image is a warm-up and not counted.

    python benchmarks/bench_predict.py                      # CPU, 3 images (2 timed)
    python benchmarks/bench_predict.py --device cuda --images 11
"""

from __future__ import annotations

NEEDS = """needs: nothing on the CPU (it synthesizes its images); --device cuda needs a CUDA GPU.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camvis import predict  # noqa: E402
from camvis.job.distributed import pick_device  # noqa: E402
from camvis.model import MultiMagnificationNet  # noqa: E402
from camvis.data.synth import synthesize  # noqa: E402

FACTORS = (2, 4, 8, 16, 32)


def paper_model(device: torch.device, patch_size: int, hidden: int) -> predict.Model:
    torch.manual_seed(0)
    net = MultiMagnificationNet(num_levels=len(FACTORS), size_hidden=hidden, share_weights=True, use_mlp=True,
                                patch_size=patch_size).eval().to(device)
    stats = np.tile(np.array([[120.0, 120.0, 120.0, 3.0]], np.float32), (len(FACTORS), 1))
    info = {"factors": list(FACTORS), "patch_size": patch_size, "norm_mean": stats.tolist(),
            "norm_std": np.full_like(stats, 50.0).tolist()}
    return predict.torch_model(net, info, "bench/type_2", device)


def main() -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="images, the first a warm-up (default: 3)")
    parser.add_argument("--size", type=int, nargs=2, default=(4140, 6198), metavar=("H", "W"))
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/predict_<device>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = paper_model(device, args.patch_size, args.hidden)
    network_s: list[float] = []
    run = model.run

    def timed_run(source, indices, batch_size):  # the network's share of each image
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = run(source, indices, batch_size)
        network_s.append(time.perf_counter() - start)
        return out

    object.__setattr__(model, "run", timed_run)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        raw = synthesize(Path(tmp) / "raw", views=1, images_per_view=args.images, size=tuple(args.size), seed=0,
                         progress=False)
        synth_s = time.perf_counter() - start
        items, problems = predict.list_items([], None, str(raw))
        assert not problems, problems
        per_image = []
        for item in items:
            start = time.perf_counter()
            rows, problems = predict.predict_items([item], model, patches=args.patches, batch_size=args.batch_size)
            assert rows and not problems, problems
            per_image.append(time.perf_counter() - start)
            print(f"{item.image.name}: {per_image[-1]:.1f} s (network {network_s[-1]:.1f} s), "
                  f"V = {rows[0]['visibility_m']:.0f} m", flush=True)
    timed, net = per_image[1:] or per_image, network_s[1:] or network_s
    result = {
        "device": str(device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "image_size": list(args.size), "patches": args.patches, "factors": list(FACTORS),
        "patch_size": args.patch_size, "hidden": args.hidden, "batch_size": args.batch_size,
        "images_timed": len(timed), "s_per_image": float(np.median(timed)),
        "images_per_s": float(1 / np.median(timed)), "network_s_per_image": float(np.median(net)),
        "other_s_per_image": float(np.median(timed) - np.median(net)), "synthesis_s": synth_s,
        "torch": torch.__version__,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"predict_{device.type}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
