"""camvis2's own model on camvis2's own batches (issue 11): tests/data/camvis2/model.npz.

    python benchmarks/camvis2_reference/make_model_fixture.py CAMVIS2_CHECKOUT [--out tests/data/camvis2]

Runs after make_fixtures.py: it reads the batches camvis2's `MultiMagnificationPatches` made
(reference.npz: `batch_x`, 12 patches of 16 px at factors 2..32) and feeds them to camvis2's
`model/model.py` MultiMagnificationNet, unchanged, in each of its eight variants (type_1..type_8),
in eval mode. Saved per variant: the state_dict as numpy arrays (`{type}:{key}`, exactly what
camvis2's `torch.save(net.state_dict())` would hold) and its logits and sigmoid probabilities
(camvis2's `F.sigmoid` of the output). tests/job/test_camvis2_checkpoint.py loads these weights
into camvis's model and compares its outputs on the same batches and on camvis's own.

Two settings keep the fixture small (~0.6 MB) and are the only departures from the paper model:
- size_hidden 16 = the patch size: camvis2 pads an aligned encoding by size_hidden / 4, which
  only fits the next level when size_hidden equals the patch size;
- camvis2's ConvEncoder hard-codes 7 blocks (128 px -> 1 px); a 16 px patch takes 4, so blocks
  5-7 of every ConvEncoder are replaced by nn.Identity after construction (its forward calls
  them in order: the first four blocks then pass through). camvis builds log2(P) blocks.
Weights are torch's seeded default init, BatchNorm's affine parameters are drawn at random
(seeded), and its running statistics are those of the batches themselves (one train-mode pass,
dropout off, cumulative average): eval-mode BatchNorm then keeps activations near unit scale,
so the logits differ from patch to patch as a trained model's do (with the default init they
are nearly constant, and a test on them would see little of the inputs).
Needs torch only (camvis2's model.py imports nothing else). CI does not run this.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
from pathlib import Path

import numpy as np

SIZE_HIDDEN = 16
SEED = 0
# camvis2's README table: type_1..type_8 = (use_mlp, share_weights, align_features) in this order.
VARIANTS = {f"type_{k}": dict(zip(("use_mlp", "share_weights", "align_features"), flags))
            for k, flags in enumerate(itertools.product((True, False), repeat=3), start=1)}


def load_camvis2_model(checkout: Path):
    spec = importlib.util.spec_from_file_location("camvis2_model", checkout / "model" / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_net(camvis2, flags: dict[str, bool], num_levels: int, patch_size: int, seed: int, x):
    """camvis2's MultiMagnificationNet for `patch_size` px patches, seeded, BatchNorm calibrated on
    `x`, in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = camvis2.MultiMagnificationNet(num_levels=num_levels, num_channels=4, size_hidden=SIZE_HIDDEN, **flags)
    blocks = patch_size.bit_length() - 1  # log2(P): P px -> 1 px
    for module in net.modules():
        if isinstance(module, camvis2.ConvEncoder):
            for k in range(blocks + 1, 8):
                setattr(module, f"conv_block{k}", nn.Identity())
    norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in norms:
            module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen))
            module.bias.copy_(0.5 * torch.randn(module.num_features, generator=gen))
            module.momentum = None  # cumulative: the running statistics become those of x
        dropouts = [m for m in net.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
        for module in dropouts:
            module.p = 0.0
        net.train()(x)
        for module in dropouts:
            module.p = 0.5
        for module in norms:
            module.momentum = 0.1  # torch's default, as camvis2 built it
    return net.eval()


def run(checkout: Path, reference: Path) -> dict[str, np.ndarray]:
    import torch

    camvis2 = load_camvis2_model(checkout)
    ref = np.load(reference)
    x = torch.from_numpy(ref["batch_x"])
    num_levels, patch_size = len(ref["factors"]), int(ref["patch_size"])
    out: dict[str, np.ndarray] = {
        "size_hidden": np.array(SIZE_HIDDEN), "patch_size": np.array(patch_size), "num_levels": np.array(num_levels),
        "seed": np.array(SEED), "batch_x_sha256": np.array(hashlib.sha256(ref["batch_x"].tobytes()).hexdigest()),
        "model_py_sha256": np.array(hashlib.sha256((checkout / "model" / "model.py").read_bytes()).hexdigest()),
    }
    for k, (name, flags) in enumerate(VARIANTS.items()):
        net = make_net(camvis2, flags, num_levels, patch_size, SEED + 10 * k, x)
        with torch.no_grad():
            logits = net(x).reshape(len(x))  # (B, 1, 1, 1), or (B, 1) with the MLP
        out[f"{name}:logits"] = logits.numpy()
        out[f"{name}:probs"] = torch.sigmoid(logits).numpy()
        for key, value in net.state_dict().items():
            out[f"{name}:{key}"] = value.numpy()
    return out


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parents[2] / "tests/data/camvis2"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a MeteoSwiss/camvis2 checkout (model/model.py)")
    parser.add_argument("--reference", type=Path, default=here / "reference.npz", help="made by make_fixtures.py")
    parser.add_argument("--out", type=Path, default=here)
    args = parser.parse_args(argv)
    fixture = run(args.checkout.resolve(), args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "model.npz"
    np.savez_compressed(target, **fixture)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
