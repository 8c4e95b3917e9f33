"""Reference fixtures made by camvis2's own code (issue 11): tests/data/camvis2/*.npz.

    python benchmarks/camvis2_reference/make_fixtures.py CAMVIS2_CHECKOUT [--out tests/data/camvis2]

Makes a small synthetic raw dir with ODD image sizes (203 x 311, so round(H / f) and
int(round(h / f)) hit their ties) with camvis.data.synth, then runs camvis2's
`data/make_dataset.py` (process_metadata: its sampling; process_data: its level sizes, Lanczos-4
RGB, ln depth with nearest resize) and `model/dataset.py` (MultiMagnificationPatches: its
statistics and `__getitem__`) on it, unchanged: only the module constants (paths, image shape,
patch size 16 and 30 patches per image, to keep the fixtures small) are set from here. CI does
not run this; tests/data/test_camvis2.py compares camvis's `camvis2` preprocessing with its output.
make_model_fixture.py (run after this) feeds the batches written here to camvis2's model.

Needs opencv-python-headless, pandas, torch. camvis2 imports tqdm and torchvision.transforms
(Normalize only); where they are missing, stand-ins are installed: tqdm as a pass-through, and
Normalize as torchvision's own tensor rule, `tensor.clone().sub_(mean[:, None, None]).div_(std[:, None,
None])` (torchvision/transforms/_functional_tensor.py: normalize).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

SHAPE = (203, 311)
FACTORS = (2, 4, 8, 16, 32)
PATCH_SIZE = 16
PATCH_NUMBER = 30
SEED = 42  # camvis2's make_dataset seeds numpy with 42 at import
BATCH_PER_IMAGE = 3  # patches of each image whose __getitem__ output is kept


def _stand_ins() -> None:
    """tqdm and torchvision.transforms.Normalize where they are not installed (see the docstring)."""
    import torch

    try:
        import tqdm  # noqa: F401
    except ImportError:
        class _Bar:
            def __init__(self, iterable=None, **_):
                self.iterable = iterable

            def __iter__(self):
                return iter(self.iterable)

            def set_description(self, *_):
                pass

            def update(self, *_):
                pass

        sys.modules["tqdm"] = types.SimpleNamespace(tqdm=_Bar)  # type: ignore[assignment]
    try:
        import torchvision.transforms  # noqa: F401
    except (ImportError, RuntimeError):
        class Normalize:
            def __init__(self, mean, std):
                self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

            def __call__(self, tensor):
                mean = torch.as_tensor(self.mean, dtype=tensor.dtype)[:, None, None]
                std = torch.as_tensor(self.std, dtype=tensor.dtype)[:, None, None]
                return tensor.clone().sub_(mean).div_(std)

        transforms = types.ModuleType("torchvision.transforms")
        transforms.Normalize = Normalize  # type: ignore[attr-defined]
        sys.modules["torchvision"] = types.SimpleNamespace(transforms=transforms)  # type: ignore[assignment]
        sys.modules["torchvision.transforms"] = transforms


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_raw(root: Path) -> Path:
    """camvis's synthetic data, plus `.jp2` links for camvis2 (cv2.imread reads the PNG inside)."""
    from camvis.data import synth

    raw = synth.synthesize(root / "raw", views=2, images_per_view=2, size=SHAPE, seed=3, progress=False)
    for png in sorted((raw / "images").glob("*_*_*_????.png")):
        (png.with_suffix(".jp2")).symlink_to(png.name)
    return raw


def run_camvis2(checkout: Path, raw: Path, processed: Path) -> dict[str, np.ndarray]:
    _stand_ins()
    make = _load(checkout / "data" / "make_dataset.py", "camvis2_make_dataset")
    make.IMAGES_PATH, make.DEPTHS_PATH, make.OUTPUTS_PATH = str(raw / "images"), str(raw / "depth_maps"), str(processed)
    make.IMAGE_SHAPE, make.DEMAGNIFICATION_FACTORS = SHAPE, FACTORS
    make.PATCH_SIZE, make.PATCH_NUMBER = PATCH_SIZE, PATCH_NUMBER
    make.np.random.seed(SEED)  # as at its import: the fixture does not depend on import order
    metadata = make.process_metadata()
    make.process_data(metadata)

    dataset = _load(checkout / "model" / "dataset.py", "camvis2_dataset")
    dataset.PATCH_SIZE = PATCH_SIZE
    ds = dataset.MultiMagnificationPatches(str(processed), list(FACTORS), random_seed=SEED)
    out: dict[str, np.ndarray] = {
        "factors": np.array(FACTORS), "image_shape": np.array(SHAPE), "patch_size": np.array(PATCH_SIZE),
        "seed": np.array(SEED), "patch_number": np.array(PATCH_NUMBER),
        "norm_mean": ds.data["mean"].numpy(), "norm_std": ds.data["std"].numpy(),
        "images": np.array(sorted(metadata["source_image"].unique())),
    }
    for column in ("h_canvas", "w_canvas", "label", "depth", "image_index", "depth_index"):
        out[f"meta_{column}"] = metadata[column].to_numpy()
    for f in FACTORS:  # dataset.py divided the images by 255 in place; camvis2 stored integers
        out[f"images_x{f}"] = np.rint(ds.data[f"images_x{f}"].numpy() * 255).astype(np.uint8)
        out[f"depths_x{f}"] = ds.data[f"depths_x{f}"].numpy().astype(np.float32)
    for path in sorted(raw.rglob("*")):  # the tests rebuild this raw dir with synth and check it is the same
        if path.is_file() and not path.is_symlink():
            out[f"sha256_{path.relative_to(raw).as_posix()}"] = np.array(hashlib.sha256(path.read_bytes()).hexdigest())
    chosen = np.concatenate([np.flatnonzero(metadata["image_index"].to_numpy() == i)[:BATCH_PER_IMAGE]
                             for i in range(len(out["images"]))])
    out["batch_index"] = chosen
    out["batch_x"] = np.stack([ds[int(k)][0].numpy() for k in chosen]).astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a MeteoSwiss/camvis2 checkout (data/, model/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/data/camvis2")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_raw(Path(tmp))
        processed = Path(tmp) / "processed"
        processed.mkdir()
        fixture = run_camvis2(args.checkout.resolve(), raw, processed)
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / "reference.npz", **fixture)
    print(f"wrote {args.out / 'reference.npz'} ({(args.out / 'reference.npz').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
