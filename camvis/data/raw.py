"""Reading and checking camvis2's raw layout, as-is, so real users can drop their data in.

    RAW_DIR/images/{cam}_{pos}_{YYYY-MM-DD}_{HHMM}.{jp2|png|jpg}
    RAW_DIR/images/{stem}_0002_visible.png, {stem}_0001_nonvisible.png   (RGBA, alpha > 1 = region)
    RAW_DIR/depth_maps/{cam}_{pos}.npy   float (H, W, 4): depth in metres (NaN = sky), WGS84 XYZ
    RAW_DIR/visibility.csv               optional (synthetic data): image,view,visibility_m

A view `{cam}_{pos}` is one fold. Labels per pixel: 0 non-visible, 1 visible, 2 unlabelled.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from camvis.errors import CamvisError, RawDataError
from camvis.progress import track

if TYPE_CHECKING:
    from rich.table import Table

LABEL_NONVISIBLE, LABEL_VISIBLE, LABEL_UNLABELLED = 0, 1, 2
IMAGE_SUFFIXES = (".jp2", ".png", ".jpg", ".jpeg")
VISIBLE_SUFFIX = "_0002_visible.png"
NONVISIBLE_SUFFIX = "_0001_nonvisible.png"
NAME_PATTERN = re.compile(r"^(?P<cam>[^_]+)_(?P<pos>[^_]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{4})$")
NAME_FORMAT = "{cam}_{pos}_{YYYY-MM-DD}_{HHMM}"
VISIBILITY_CSV = "visibility.csv"  # RAW_DIR/visibility.csv: image,view,visibility_m


@dataclass(frozen=True)
class RawImage:
    name: str  # file stem
    view: str  # "{cam}_{pos}"
    path: Path
    visible_mask: Path
    nonvisible_mask: Path


@dataclass(frozen=True)
class RawDataset:
    root: Path
    images: tuple[RawImage, ...]  # sorted by name
    views: tuple[str, ...]  # sorted

    def depth_path(self, view: str) -> Path:
        return self.root / "depth_maps" / f"{view}.npy"


@dataclass(frozen=True)
class CheckRow:
    name: str
    view: str
    height: int
    width: int
    labelled_pct: float  # of the image's pixels
    visible_pct: float
    nonvisible_pct: float
    nan_depth_pct: float  # of the view's depth map


@dataclass(frozen=True)
class CheckReport:
    root: Path
    rows: tuple[CheckRow, ...]
    views: tuple[str, ...]
    warnings: tuple[str, ...]  # worth a look, not wrong: single-class images, labels on NaN depth, ...
    visibility_csv: bool

    def table(self) -> "Table":
        from rich.table import Table

        table = Table(title=f"{self.root}: {len(self.rows)} images, {len(self.views)} views")
        longest = max((len(r.name) for r in self.rows), default=5)
        table.add_column("image", no_wrap=True, min_width=longest)  # names never truncated
        table.add_column("view", no_wrap=True)
        table.add_column("H x W", justify="right", no_wrap=True)
        for col in ("labelled %", "visible %", "non-vis. %", "NaN depth %"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(r.name, r.view, f"{r.height} x {r.width}", f"{r.labelled_pct:.1f}",
                          f"{r.visible_pct:.1f}", f"{r.nonvisible_pct:.1f}", f"{r.nan_depth_pct:.1f}")
        return table


# --------------------------------------------------------------------------- layout


def view_of(name: str) -> str | None:
    """`{cam}_{pos}` of an image stem, or None if the stem is not camvis2's name pattern."""
    m = NAME_PATTERN.match(name)
    return f"{m['cam']}_{m['pos']}" if m else None


def scan(raw_dir: str | os.PathLike) -> RawDataset:
    """The layout only (no pixels). RawDataError listing every layout problem found."""
    ds, problems, _ = _scan(Path(raw_dir))
    if problems:
        raise RawDataError(_problems_message(ds.root, problems))
    return ds


def _scan(root: Path) -> tuple[RawDataset, list[str], list[str]]:
    """(complete images, problems, warnings); raises at once only if root is no raw dir at all."""
    images_dir = root / "images"
    if not images_dir.is_dir():
        what = "does not exist" if not root.exists() else "has no images/ folder"
        raise RawDataError(f"{root}: not a camvis2 raw data directory ({what}); expected "
                           f"images/{NAME_FORMAT}.jp2|.png|.jpg with their masks, and depth_maps/{{cam}}_{{pos}}.npy")
    problems: list[str] = []
    warnings: list[str] = []
    stems, masks = _list_images(images_dir, problems, warnings)
    images = _pair_masks(images_dir, stems, masks, problems)
    views = tuple(sorted({img.view for img in images}))
    ds = RawDataset(root=root, images=tuple(images), views=views)
    if not stems and not problems:
        problems.append(f"{images_dir}: no images (.jp2, .png, .jpg)")
    if not (root / "depth_maps").is_dir():
        problems.append(f"{root / 'depth_maps'}: folder missing (one {{cam}}_{{pos}}.npy depth map per view)")
    else:
        for view in views:
            if not ds.depth_path(view).is_file():
                first = next(img.path.name for img in images if img.view == view)
                problems.append(f"{ds.depth_path(view)}: depth map missing for view {view} (needed by {first}, ...)")
    return ds, problems, warnings


def _list_images(folder: Path, problems: list[str], warnings: list[str]
                 ) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """Image files by stem and mask files by stem and kind ("visible", "nonvisible")."""
    stems: dict[str, Path] = {}
    masks: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name.endswith(VISIBLE_SUFFIX):
            masks.setdefault(name[: -len(VISIBLE_SUFFIX)], {})["visible"] = path
        elif name.endswith(NONVISIBLE_SUFFIX):
            masks.setdefault(name[: -len(NONVISIBLE_SUFFIX)], {})["nonvisible"] = path
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in stems:
                problems.append(f"{path}: a second image named {path.stem} (also {stems[path.stem].name})")
            else:
                stems[path.stem] = path
        else:
            warnings.append(f"{path}: ignored (not an image or a mask)")
    return stems, masks


def _pair_masks(folder: Path, stems: dict[str, Path], masks: dict[str, dict[str, Path]],
                problems: list[str]) -> list[RawImage]:
    images = []
    for stem, path in stems.items():
        view = view_of(stem)
        found = masks.get(stem, {})
        if view is None:
            problems.append(f"{path}: name does not follow {NAME_FORMAT}, so its view is unknown")
        for kind, suffix in (("visible", VISIBLE_SUFFIX), ("nonvisible", NONVISIBLE_SUFFIX)):
            if kind not in found:
                problems.append(f"{path}: {kind} mask missing (expected {folder / (stem + suffix)})")
        if view is not None and len(found) == 2:
            images.append(RawImage(stem, view, path, found["visible"], found["nonvisible"]))
    for stem, found in masks.items():
        if stem not in stems:
            for mask in found.values():
                problems.append(f"{mask}: mask without an image (expected {folder / stem}.jp2, .png or .jpg)")
    return sorted(images, key=lambda img: img.name)


# --------------------------------------------------------------------------- pixels


def load_image(img: RawImage) -> np.ndarray:
    """uint8 (H, W, 3)."""
    try:
        with Image.open(img.path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise RawDataError(f"{img.path}: cannot read the image ({e})") from e


def read_mask(path: Path) -> np.ndarray:
    """bool (H, W): alpha > 1 marks the region."""
    try:
        with Image.open(path) as im:
            if "A" not in im.getbands() and "transparency" not in im.info:
                raise RawDataError(f"{path}: mask has no alpha channel (mode {im.mode}); "
                                   "expected RGBA with alpha > 1 marking the region")
            alpha = (im if im.mode in ("RGBA", "LA") else im.convert("RGBA")).getchannel("A")
            return np.asarray(alpha) > 1
    except (OSError, UnidentifiedImageError) as e:
        raise RawDataError(f"{path}: cannot read the mask ({e})") from e


def load_labels(img: RawImage) -> np.ndarray:
    """uint8 (H, W) in {0 non-visible, 1 visible, 2 unlabelled}; overlapping masks are an error."""
    visible, nonvisible = read_mask(img.visible_mask), read_mask(img.nonvisible_mask)
    if visible.shape != nonvisible.shape:
        raise RawDataError(f"{img.nonvisible_mask}: mask is {_hw(nonvisible.shape)}, "
                           f"{img.visible_mask.name} is {_hw(visible.shape)}")
    overlap = int(np.count_nonzero(visible & nonvisible))
    if overlap:
        raise RawDataError(f"{img.path}: {overlap} pixels are in both masks "
                           f"({img.visible_mask.name}, {img.nonvisible_mask.name})")
    return _labels(visible, nonvisible)


def load_depth(ds: RawDataset, view: str) -> np.ndarray:
    """float32 (H, W) metres, NaN = no terrain. Accepts (H, W, C) with depth in channel 0, or (H, W)."""
    path = ds.depth_path(view)
    return depth_metres(path, str(path), RawDataError)


def depth_metres(depth_map: str | os.PathLike | np.ndarray, where: str,
                 error: type[CamvisError] = RawDataError) -> np.ndarray:
    """The one reader of camvis2's depth maps (the store build's and camvis-predict's): float32
    (H, W) metres from an (H, W) or (H, W, C) float array or .npy file, depth in channel 0.
    `error` (naming `where`) when it cannot be read or is not such an array."""
    if isinstance(depth_map, np.ndarray):
        arr = depth_map
    else:
        try:
            arr = np.load(depth_map, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise error(f"{where}: cannot read the depth map ({e})") from e
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] < 1) or arr.dtype.kind != "f":
        raise error(f"{where}: expected a float array (H, W) or (H, W, 4) with depth in metres in "
                    f"channel 0, got {arr.dtype} {arr.shape}")
    return np.array(arr if arr.ndim == 2 else arr[:, :, 0], dtype=np.float32)


def read_visibility(raw_dir: str | os.PathLike) -> dict[str, float] | None:
    """True visibility (m) per image stem from RAW_DIR/visibility.csv, or None if there is none."""
    path = Path(raw_dir) / VISIBILITY_CSV
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "visibility_m"} - set(reader.fieldnames or ())
        if missing:
            raise RawDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                               "expected image,view,visibility_m")
        result = {}
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["visibility_m"])
            except (TypeError, ValueError):
                value = math.nan
            if not (value > 0 and math.isfinite(value)):
                raise RawDataError(f"{path}:{line}: visibility_m must be a positive number of metres, "
                                   f"got {row['visibility_m']!r}")
            result[row["image"]] = value
    return result


# --------------------------------------------------------------------------- check


def check(raw_dir: str | os.PathLike, progress: bool = True) -> CheckReport:
    """Read every file; raise one RawDataError listing every problem (file + what), else a report."""
    reader = RawReader(raw_dir)
    reader.read_all(progress)
    return reader.report()


class RawReader:
    """One pass over a raw dir that decodes each file once, collecting problems as it goes.

    `images()` yields each image whose files are all fine, as (RawImage, rgb uint8 (H, W, 3),
    labels uint8 (H, W), its view's depth float32 (H, W)), view by view (`dataset.views`
    order, a view's images by name); a view's depth map is loaded once for all its images,
    so memory holds one image, its masks and one depth map at a time. Problems (the layout's,
    found at construction, then every file's) are collected, not raised: `raise_problems()`
    raises them as one RawDataError, `report()` gives check()'s report. A RawDataError is
    raised at once only if `raw_dir` is no raw dir at all.
    """

    def __init__(self, raw_dir: str | os.PathLike) -> None:
        self.dataset, self.problems, self.warnings = _scan(Path(raw_dir))
        self.rows: list[CheckRow] = []
        self._started = self._done = False

    def images(self, progress: bool = False
               ) -> Iterator[tuple[RawImage, np.ndarray, np.ndarray, np.ndarray]]:
        if self._started:
            raise RuntimeError("RawReader.images() reads the raw dir once; it was already called")
        self._started = True
        ds = self.dataset
        for view, depth, depth_ok in _views_depth(ds, self.problems):
            nan_pct = float(np.isnan(depth).mean()) * 100 if depth is not None else math.nan
            for img in track([i for i in ds.images if i.view == view], f"checking {view}",
                             enabled=progress, transient=True):
                read = _read_image(img, depth, nan_pct, self.problems, self.warnings)
                if read is None:
                    continue
                rgb, labels, row = read
                del read
                self.rows.append(row)
                if depth_ok and depth is not None:  # else checked, not yielded
                    yield img, rgb, labels, depth
                del rgb, labels  # one image in memory: none held while the next is decoded
            del depth  # one depth map: none held while the next view's is loaded
        _check_visibility_csv(ds, self.problems, self.warnings)
        self._done = True

    def read_all(self, progress: bool = False) -> None:
        """Read (check) whatever images() has not read yet."""
        if not self._started:
            for _ in self.images(progress):
                pass
        elif not self._done:
            raise RuntimeError("RawReader.read_all() after a partial images() pass")

    def raise_problems(self) -> None:
        if self.problems:
            raise RawDataError(_problems_message(self.dataset.root, self.problems))

    def report(self) -> CheckReport:
        """check()'s report once every file was read; RawDataError listing every problem."""
        self.raise_problems()
        if not self._done:
            raise RuntimeError("RawReader.report() before every file was read")
        ds = self.dataset
        return CheckReport(root=ds.root, rows=tuple(sorted(self.rows, key=lambda r: r.name)),
                           views=ds.views, warnings=tuple(self.warnings),
                           visibility_csv=(ds.root / VISIBILITY_CSV).is_file())


def _views_depth(ds: RawDataset, problems: list[str]
                 ) -> Iterator[tuple[str, np.ndarray | None, bool]]:
    """Each view with its depth (None if missing or broken) and whether that depth is fine:
    one depth map in memory at a time."""
    for view in ds.views:
        path = ds.depth_path(view)
        if not path.is_file():  # already reported by _scan
            yield view, None, False
            continue
        try:
            depth = load_depth(ds, view)
        except RawDataError as e:
            problems.append(str(e))
            yield view, None, False
            continue
        n_before = len(problems)
        bad = int(np.count_nonzero(~np.isnan(depth) & ~(np.isfinite(depth) & (depth > 0))))
        if bad:
            problems.append(f"{path}: {bad} depth values are not positive finite metres (use NaN for no terrain)")
        if np.isnan(depth).all():
            problems.append(f"{path}: depth is NaN everywhere (no terrain)")
        yield view, depth, len(problems) == n_before
        del depth


def _read_image(img: RawImage, depth: np.ndarray | None, nan_pct: float, problems: list[str],
                warnings: list[str]) -> tuple[np.ndarray, np.ndarray, CheckRow] | None:
    """(rgb, labels, check row) of an image whose files are fine, else None (problems noted)."""
    n_before = len(problems)
    try:
        with Image.open(img.path) as im:
            im.load()  # decode: a truncated file fails here, not in the middle of a build
            rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        problems.append(f"{img.path}: cannot read the image ({e})")
        return None
    shape = rgb.shape[:2]
    masks = {}
    for path in (img.visible_mask, img.nonvisible_mask):
        try:
            masks[path] = read_mask(path)
        except RawDataError as e:
            problems.append(str(e))
            continue
        if masks[path].shape != shape:
            problems.append(f"{path}: mask is {_hw(masks[path].shape)}, its image {img.path.name} is {_hw(shape)}")
    if depth is not None and depth.shape != shape:
        problems.append(f"{img.path}: image is {_hw(shape)}, the depth map of view {img.view} is {_hw(depth.shape)}")
    if len(problems) > n_before:
        return None
    visible, nonvisible = masks[img.visible_mask], masks[img.nonvisible_mask]
    row = _label_stats(img, visible, nonvisible, depth, nan_pct, problems, warnings)
    if row is None:
        return None
    return rgb, _labels(visible, nonvisible), row


def _labels(visible: np.ndarray, nonvisible: np.ndarray) -> np.ndarray:
    labels = np.full(visible.shape, LABEL_UNLABELLED, np.uint8)
    labels[visible] = LABEL_VISIBLE
    labels[nonvisible] = LABEL_NONVISIBLE
    return labels


def _label_stats(img: RawImage, visible: np.ndarray, nonvisible: np.ndarray, depth: np.ndarray | None,
                 nan_pct: float, problems: list[str], warnings: list[str]) -> CheckRow | None:
    overlap = int(np.count_nonzero(visible & nonvisible))
    if overlap:
        problems.append(f"{img.path}: {overlap} pixels are in both masks ({img.visible_mask.name}, "
                        f"{img.nonvisible_mask.name})")
    n_vis, n_non = int(np.count_nonzero(visible)), int(np.count_nonzero(nonvisible))
    if n_vis + n_non == 0:
        problems.append(f"{img.path}: no labelled pixel (both masks are empty: {img.visible_mask.name}, "
                        f"{img.nonvisible_mask.name})")
    if overlap or n_vis + n_non == 0:
        return None
    if n_vis == 0 or n_non == 0:
        warnings.append(f"{img.path}: only {'non-visible' if n_vis == 0 else 'visible'} pixels are labelled")
    if depth is not None:
        on_nan = int(np.count_nonzero((visible | nonvisible) & np.isnan(depth)))
        if on_nan:
            warnings.append(f"{img.path}: {on_nan} labelled pixels have no depth (NaN); patches skip them")
    n = visible.size
    return CheckRow(name=img.name, view=img.view, height=visible.shape[0], width=visible.shape[1],
                    labelled_pct=100 * (n_vis + n_non) / n, visible_pct=100 * n_vis / n,
                    nonvisible_pct=100 * n_non / n, nan_depth_pct=nan_pct)


def _check_visibility_csv(ds: RawDataset, problems: list[str], warnings: list[str]) -> None:
    try:
        visibility = read_visibility(ds.root)
    except RawDataError as e:
        problems.append(str(e))
        return
    if visibility is None:
        return
    missing = [img.name for img in ds.images if img.name not in visibility]
    if missing:
        warnings.append(f"{ds.root / VISIBILITY_CSV}: no visibility for {len(missing)} images "
                        f"(e.g. {missing[0]})")


def _problems_message(root: Path, problems: list[str]) -> str:
    head = f"{root}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the raw data"
    return head + ":\n" + "\n".join(f"  - {p}" for p in problems)


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} x {shape[1]}"
