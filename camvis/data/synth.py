"""Synthetic fog scenes written in camvis2's raw layout (the embedded default data set).

Per view: a procedural terrain seen from a webcam, a ground plane in the foreground and
ridges at increasing distance (depths from ~10 m to ~100 km, sky = NaN). Per image: a
visibility V (log-uniform), Koschmieder's extinction beta = -ln(0.05) / V, transmission
t = exp(-beta d) and the observed image I = J t + A (1 - t) plus sensor noise, with J the
clear-scene radiance and A the airlight. Labels are an annotator's: visible where
d < V / LABEL_BAND, non-visible where d > V * LABEL_BAND, unlabelled in between and on the
sky. The true V of every image goes to RAW_DIR/visibility.csv.

Everything is vectorized numpy over row strips, so the paper's 4140 x 6198 images are
made with memory for about one image at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from camvis import __version__
from camvis import atomic_folder
from camvis.data.raw import NONVISIBLE_SUFFIX, VISIBILITY_CSV, VISIBLE_SUFFIX
from camvis.errors import ConfigError
from camvis.io import disk_full_as_error, format_bytes
from camvis.progress import progress_bar
from camvis.bookkeeping.replace_guard import Marker, check_replaceable, check_writable_into, json_object

PAPER_SIZE = (4140, 6198)
CONTRAST_THRESHOLD = 0.05
"""Koschmieder: V is the distance where a black object's contrast falls to 5%."""
LABEL_BAND = 1.25
"""Pixels with depth within this factor of V stay unlabelled, as an annotator would leave them."""
IMAGE_FORMATS = ("png", "jpg", "jp2")
CAMS = (1148, 1206, 1233, 1307, 1340, 1383, 1412, 1480)
POSITIONS_PER_CAM = 4
MAX_VIEWS = len(CAMS) * POSITIONS_PER_CAM
VISIBLE_COLOUR = (0, 255, 0)  # camvis2's annotation colours: green in front of V ...
NONVISIBLE_COLOUR = (255, 0, 255)  # ... magenta behind it
_STRIP_ROWS = 256
_FEASIBLE_QUANTILE = 0.01  # V is kept where >= 1% of the terrain is labelled on each side
SYNTH = Marker("a data set made by camvis-data synth", "camvis-data synth", True, "synth.json",
               lambda path: json_object(path / "synth.json").get("generator") == "camvis.data.synth")
"""What camvis-data synth --force may replace (camvis.bookkeeping.replace_guard)."""
_EARTH_A, _EARTH_E2 = 6378137.0, 6.69437999014e-3  # WGS84


@dataclass(frozen=True)
class Ridge:
    distance: float  # forward distance of the ridge's foot (m)
    depth_gain: float  # the crest lies at distance * (1 + depth_gain)
    crest: np.ndarray  # (W,) image row of the crest per column
    low: np.ndarray  # (3,) colour at the foot
    high: np.ndarray  # (3,) colour of the upper face
    snow_line: float  # share of the face height above which it is snow (> 1: none)


@dataclass(frozen=True)
class Scene:
    view: str
    size: tuple[int, int]
    focal: float  # pixels
    horizon: float  # image row of the horizon (camera looks level)
    height: float  # camera height above the ground plane (m)
    ridges: tuple[Ridge, ...]  # nearest first
    field_a: np.ndarray  # (3,) the two ground colours
    field_b: np.ndarray
    table: np.ndarray  # value-noise lattice shared by all textures of the view
    origin: np.ndarray  # camera position, WGS84 ECEF (m)
    enu: np.ndarray  # (3, 3) columns: east, north, up in ECEF
    heading: float  # radians from north


# --------------------------------------------------------------------------- naming


def view_names(views: int) -> list[str]:
    """`{cam}_{pos}` per view; cameras take turns so that small sets span several of them."""
    n_cams = math.ceil(views / POSITIONS_PER_CAM)
    return [f"{CAMS[i % n_cams]}_{i // n_cams + 1}" for i in range(views)]


def image_names(view: str, n: int, rng: np.random.Generator) -> list[str]:
    """n distinct `{view}_{YYYY-MM-DD}_{HHMM}`: fog-season days 2018-2021, daytime, 10-min steps."""
    first = dt.date(2018, 1, 1)
    days = [first + dt.timedelta(days=k) for k in range((dt.date(2022, 1, 1) - first).days)]
    days = [d for d in days if d.month in (10, 11, 12, 1, 2, 3)]
    slots = 66  # 07:00 .. 17:50
    picks = np.sort(rng.choice(len(days) * slots, size=n, replace=False))
    names = []
    for p in picks.tolist():
        minutes = 7 * 60 + 10 * (p % slots)
        names.append(f"{view}_{days[p // slots]:%Y-%m-%d}_{minutes // 60:02d}{minutes % 60:02d}")
    return names


# --------------------------------------------------------------------------- scene


def make_scene(view: str, size: tuple[int, int], rng: np.random.Generator) -> Scene:
    """Random terrain of one view, defined in image fractions so every size shows the same scene."""
    h, w = size
    vfov = math.radians(rng.uniform(45.0, 58.0))
    focal = h / (2 * math.tan(vfov / 2))
    horizon = h * rng.uniform(0.58, 0.65)
    n_ridges = int(rng.integers(4, 7))
    distances = np.geomspace(rng.uniform(400, 900), rng.uniform(45e3, 65e3), n_ridges)
    heights = np.linspace(0.05, 0.34, n_ridges) + rng.uniform(-0.01, 0.01, n_ridges)
    ridges = tuple(_make_ridge(k, n_ridges, float(distances[k]), float(heights[k]), horizon, size, rng)
                   for k in range(n_ridges))
    lat, lon = math.radians(rng.uniform(46.0, 47.6)), math.radians(rng.uniform(6.0, 10.2))
    return Scene(view=view, size=(h, w), focal=focal, horizon=horizon,
                 height=float(rng.uniform(3.0, 6.0)), ridges=ridges,
                 field_a=np.array([0.16, 0.30, 0.08]) * rng.uniform(0.85, 1.15, 3),
                 field_b=np.array([0.36, 0.32, 0.16]) * rng.uniform(0.85, 1.15, 3),
                 table=rng.uniform(-1.0, 1.0, (256, 256)).astype(np.float32),
                 origin=_ecef(lat, lon, rng.uniform(400.0, 2500.0)), enu=_enu_axes(lat, lon),
                 heading=float(rng.uniform(0, 2 * math.pi)))


def _make_ridge(k: int, n: int, distance: float, height: float, horizon: float,
                size: tuple[int, int], rng: np.random.Generator) -> Ridge:
    h, w = size
    u = (np.arange(w) + 0.5) / w
    profile = np.zeros(w)
    for freq, amp in ((rng.uniform(0.5, 2), 1.0), (rng.uniform(2, 6), 0.5), (rng.uniform(6, 20), 0.2)):
        profile += amp * np.sin(2 * math.pi * freq * u + rng.uniform(0, 2 * math.pi))
    profile /= np.abs(profile).max()
    crest = horizon - h * (height + rng.uniform(0.02, 0.06) * profile)
    near, far = np.array([0.10, 0.20, 0.07]), np.array([0.38, 0.37, 0.36])  # forest .. bare rock
    mix = k / max(n - 1, 1)
    low = (near * (1 - mix) + far * mix) * rng.uniform(0.85, 1.15, 3)
    high = (np.array([0.26, 0.34, 0.14]) * (1 - mix) + np.array([0.50, 0.47, 0.44]) * mix)
    return Ridge(distance=distance, depth_gain=float(rng.uniform(0.25, 0.6)), crest=crest,
                 low=low, high=high * rng.uniform(0.9, 1.1, 3),
                 snow_line=float(rng.uniform(0.7, 0.95)) if distance > 15e3 else 2.0)


def render_rows(scene: Scene, r0: int, r1: int, xyz: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Depth (metres, NaN = sky), clear-scene radiance J in [0, 1] and, if asked, ECEF XYZ of rows r0..r1."""
    h, w = scene.size
    f, cam_h = scene.focal, scene.height
    v = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
    xn = ((np.arange(w) + 0.5 - w / 2) / f)[None, :]
    yn = (scene.horizon - v) / f  # up is positive
    with np.errstate(divide="ignore"):
        z = np.broadcast_to(np.where(yn < 0, cam_h / -yn, np.inf), (r1 - r0, w)).copy()
    surface = np.where(np.isfinite(z), 0, -1)  # -1 sky, 0 ground, k + 1 ridge k
    height_share = np.zeros_like(z)
    for k, ridge in enumerate(scene.ridges):
        foot = scene.horizon + cam_h * f / ridge.distance  # row where the ground reaches the ridge
        crest = ridge.crest[None, :]
        share = np.clip((foot - v) / (foot - crest), 0.0, 1.0)
        zr = ridge.distance * (1 + ridge.depth_gain * share)
        cover = (v >= crest) & (zr < z)
        z[cover], surface[cover], height_share[cover] = zr[cover], k + 1, share[cover]
    depth = z * np.sqrt(1 + xn**2 + yn**2)
    depth[surface < 0] = np.nan
    colour = _colour(scene, surface, height_share, z, xn, v)
    points = _xyz(scene, xn, yn, z, surface < 0) if xyz else None
    return depth.astype(np.float32), colour, points


def _colour(scene: Scene, surface: np.ndarray, share: np.ndarray, z: np.ndarray,
            xn: np.ndarray, v: np.ndarray) -> np.ndarray:
    """J per pixel: textured fields on the ground, forest/rock/snow on the ridges, blue sky."""
    out = np.empty(surface.shape + (3,), np.float32)
    xn_full = np.broadcast_to(xn, surface.shape)
    sky = surface < 0
    out[sky] = np.array([0.45, 0.62, 0.90], np.float32)
    ground = surface == 0
    if ground.any():
        zg, xg = z[ground], xn_full[ground] * z[ground]
        footprint = zg / scene.focal * np.sqrt(np.maximum(1.0, zg / scene.height))  # mean of both axes
        fields = _fractal(scene.table, xg, zg, footprint, (90.0, 30.0))
        detail = _fractal(scene.table, xg, zg, footprint, (6.0, 2.0, 0.7, 0.25), seed=3)
        mix = np.clip(0.5 + 1.5 * fields, 0, 1)[:, None]
        out[ground] = (scene.field_a * (1 - mix) + scene.field_b * mix) * (1 + 0.45 * detail)[:, None]
    for k, ridge in enumerate(scene.ridges):
        mask = surface == k + 1
        if not mask.any():
            continue
        s = share[mask]
        xm = xn_full[mask] * ridge.distance
        ym = (ridge.crest.mean() - np.broadcast_to(v, surface.shape)[mask]) / scene.focal * ridge.distance
        footprint = np.full_like(s, ridge.distance / scene.focal)
        big = _fractal(scene.table, xm, ym, footprint, (2500.0, 800.0, 250.0), seed=7 + k)
        fine = _fractal(scene.table, xm, ym, footprint, (80.0, 25.0, 8.0, 2.5), seed=11 + k)
        mix = np.clip(s + 0.8 * big, 0, 1)[:, None]
        col = ridge.low * (1 - mix) + ridge.high * mix
        snow = (s + 0.8 * big) > ridge.snow_line
        col[snow] = np.array([0.82, 0.85, 0.90])
        out[mask] = col * ((0.75 + 0.3 * s) * (1 + 0.4 * fine))[:, None]
    return np.clip(out, 0.0, 1.0)


def _fractal(table: np.ndarray, x: np.ndarray, y: np.ndarray, footprint: np.ndarray,
             wavelengths: tuple[float, ...], seed: int = 0) -> np.ndarray:
    """Value-noise octaves (wavelengths in metres), roughly in [-1, 1]. An octave fades out where
    a pixel covers more than a quarter of its wavelength: far terrain gets smooth, not aliased."""
    total = np.zeros_like(x)
    for i, lam in enumerate(wavelengths):
        weight = np.clip(lam / footprint / 2 - 1, 0.0, 1.0)
        active = np.flatnonzero(weight)  # fine octaves matter only near the camera: skip the rest
        offset = 31.7 * (seed + i)
        total[active] += weight[active] * _value_noise(table, x[active] / lam + offset,
                                                       y[active] / lam + 1.618 * offset)
    return total / math.sqrt(len(wavelengths))


def _value_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth bilinear interpolation of a periodic random lattice."""
    n = table.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = x0.astype(np.int64) % n, y0.astype(np.int64) % n
    ix1, iy1 = (ix + 1) % n, (iy + 1) % n
    top = table[iy, ix] + (table[iy, ix1] - table[iy, ix]) * fx
    bottom = table[iy1, ix] + (table[iy1, ix1] - table[iy1, ix]) * fx
    return top + (bottom - top) * fy


def _xyz(scene: Scene, xn: np.ndarray, yn: np.ndarray, z: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """WGS84 ECEF coordinates of every pixel's terrain point (NaN on the sky)."""
    z = np.where(sky, np.nan, z)
    right, up = xn * z, yn * z
    sin_h, cos_h = math.sin(scene.heading), math.cos(scene.heading)
    east, north = z * sin_h + right * cos_h, z * cos_h - right * sin_h
    local = np.stack([east, north, np.broadcast_to(up, z.shape)], axis=-1)
    return scene.origin + local @ scene.enu.T


def _ecef(lat: float, lon: float, alt: float) -> np.ndarray:
    n = _EARTH_A / math.sqrt(1 - _EARTH_E2 * math.sin(lat) ** 2)
    return np.array([(n + alt) * math.cos(lat) * math.cos(lon), (n + alt) * math.cos(lat) * math.sin(lon),
                     (n * (1 - _EARTH_E2) + alt) * math.sin(lat)])


def _enu_axes(lat: float, lon: float) -> np.ndarray:
    sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
    return np.array([[-sl, -sp * cl, cp * cl], [cl, -sp * sl, cp * sl], [0.0, cp, sp]])


# --------------------------------------------------------------------------- fog and labels


def beta_of(visibility: float) -> float:
    """Extinction coefficient (1/m) of a meteorological optical range (Koschmieder)."""
    return -math.log(CONTRAST_THRESHOLD) / visibility


def visibility_bounds(depth: np.ndarray) -> tuple[float, float]:
    """V range for which at least 1% of the terrain is labelled visible and 1% non-visible."""
    finite = depth[np.isfinite(depth)]
    lo, hi = np.quantile(finite, [_FEASIBLE_QUANTILE, 1 - _FEASIBLE_QUANTILE])
    return float(lo) * LABEL_BAND * 1.05, float(hi) / (LABEL_BAND * 1.05)


def draw_visibility(vis_range: tuple[float, float], bounds: tuple[float, float],
                    rng: np.random.Generator) -> float:
    """Log-uniform V over vis_range, restricted to the view's bounds where they overlap."""
    lo, hi = max(vis_range[0], bounds[0]), min(vis_range[1], bounds[1])
    if lo >= hi:  # the terrain cannot show both classes inside vis_range: honour vis_range
        lo, hi = vis_range
    return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.6g}")  # the CSV's exact value


def label_masks(depth: np.ndarray, visibility: float) -> tuple[np.ndarray, np.ndarray]:
    """(visible, non-visible) boolean masks; the band around V and the sky stay unlabelled."""
    with np.errstate(invalid="ignore"):
        return depth < visibility / LABEL_BAND, depth > visibility * LABEL_BAND


def fog(clear: np.ndarray, depth: np.ndarray, visibility: float, airlight: np.ndarray,
        rng: np.random.Generator, read_noise: float = 0.008, shot_noise: float = 0.012) -> np.ndarray:
    """I = J t + A (1 - t) with t = exp(-beta d) (0 on the sky), plus read and shot noise; uint8."""
    t = np.exp(-beta_of(visibility) * np.nan_to_num(depth, nan=np.inf))[..., None]
    image = clear * t + airlight * (1 - t)
    sigma = np.sqrt(read_noise**2 + shot_noise**2 * image)
    image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def synthesize(out_dir: str | os.PathLike, *, views: int = 4, images_per_view: int = 6,
               size: tuple[int, int] = (192, 288), vis_range: tuple[float, float] = (100.0, 50000.0),
               seed: int = 0, image_format: str = "png", progress: bool = True,
               force: bool = False) -> Path:
    """Write a synthetic data set in camvis2's raw layout to out_dir and return out_dir.

    Files are made in a hidden scratch folder inside out_dir (`.synth.tmp-<host>-<pid>`) and
    moved into place at the end, so an interrupted run leaves no half data set; a killed run's
    scratch folder is reaped by the next one (camvis.atomic_folder), and a full disk is a
    DiskFullError. An existing data set in out_dir is a ConfigError unless force=True (it is
    then replaced). Same seed, same bytes.
    """
    _check_args(views, images_per_view, size, vis_range, seed, image_format)
    out = Path(out_dir)
    existing = [out / p for p in ("images", "depth_maps", VISIBILITY_CSV, "synth.json") if (out / p).exists()]
    if existing and not force:
        raise ConfigError(f"{out}: already holds a raw data set ({existing[0].name}); "
                          "choose another directory or pass force=True (--force)")
    if existing:  # --force replaces only a data set that synth made
        check_replaceable(out, kind=SYNTH, error=ConfigError)
    else:  # nothing to replace: still never into a job folder, an experiment or a store
        check_writable_into(out, command="camvis-data synth", error=ConfigError)
    with disk_full_as_error(out):
        out.mkdir(parents=True, exist_ok=True)
    scratch_of = out / "synth"  # names the scratch folder; never a final path itself
    atomic_folder.remove_stale(scratch_of)
    with atomic_folder.scratch_dir(scratch_of, f"at least {format_bytes(_depth_bytes(views, size))}",
                             target=out) as tmp:
        rows = _write_all(tmp, views, images_per_view, size, vis_range, seed, image_format, progress)
        _write_csv(tmp / VISIBILITY_CSV, rows)
        params = {"generator": "camvis.data.synth", "camvis_version": __version__, "seed": seed, "views": views,
                  "images_per_view": images_per_view, "size": list(size), "vis_range": list(vis_range),
                  "image_format": image_format, "label_band": LABEL_BAND,
                  "contrast_threshold": CONTRAST_THRESHOLD}
        (tmp / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name in ("synth.json", "images", "depth_maps", VISIBILITY_CSV):  # the marker first, the CSV last: done
            os.replace(tmp / name, out / name)
    return out


def _depth_bytes(views: int, size: tuple[int, int]) -> int:
    """What the depth maps alone take: a lower bound of the space a data set needs."""
    return views * (128 + size[0] * size[1] * 4 * np.dtype(np.float32).itemsize)


def _check_args(views: int, images_per_view: int, size: tuple[int, int], vis_range: tuple[float, float],
                seed: int, image_format: str) -> None:
    problems = []
    if not 1 <= views <= MAX_VIEWS:
        problems.append(f"views must be in 1..{MAX_VIEWS}, got {views}")
    if images_per_view < 1:
        problems.append(f"images_per_view must be >= 1, got {images_per_view}")
    if len(size) != 2 or min(size) < 32:
        problems.append(f"size must be (height, width), both >= 32, got {tuple(size)}")
    lo, hi = vis_range
    if not (0 < lo < hi < math.inf):
        problems.append(f"vis_range must be (min, max) metres with 0 < min < max, got {tuple(vis_range)}")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if image_format not in IMAGE_FORMATS:
        problems.append(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if problems:
        raise ConfigError("synthesize: " + "; ".join(problems))


def _write_all(root: Path, views: int, images_per_view: int, size: tuple[int, int],
               vis_range: tuple[float, float], seed: int, image_format: str,
               progress: bool) -> list[tuple[str, str, float]]:
    (root / "images").mkdir()
    (root / "depth_maps").mkdir()
    rows: list[tuple[str, str, float]] = []
    with progress_bar("synthesizing views and images", views * (1 + images_per_view),
                      enabled=progress) as advance:
        for i, view in enumerate(view_names(views)):
            rng = np.random.default_rng([seed, i])
            scene = make_scene(view, size, rng)
            depth, clear = _write_view(scene, root / "depth_maps" / f"{view}.npy")
            advance()
            bounds = visibility_bounds(depth)
            for j, name in enumerate(image_names(view, images_per_view, rng)):
                image_rng = np.random.default_rng([seed, i, j + 1])
                rows.append((name, view, _write_image(root / "images", name, depth, clear, vis_range,
                                                      bounds, image_format, image_rng)))
                advance()
    return rows


def _strips(height: int) -> Iterator[tuple[int, int]]:
    for r0 in range(0, height, _STRIP_ROWS):
        yield r0, min(r0 + _STRIP_ROWS, height)


def _write_view(scene: Scene, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Depth map (H, W, 4) float32 written strip by strip; returns depth and J (uint8) for the images.

    Plain writes, not a memory map: stores into a mapped sparse file allocate disk blocks on
    first touch, and a full disk then kills the process with SIGBUS instead of raising ENOSPC."""
    h, w = scene.size
    depth = np.empty((h, w), np.float32)
    clear = np.empty((h, w, 3), np.uint8)  # 8 bits are plenty: fog and noise come on top
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (h, w, 4)}
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)  # the header np.save writes
        for r0, r1 in _strips(h):
            d, j, xyz = render_rows(scene, r0, r1, xyz=True)
            depth[r0:r1], clear[r0:r1] = d, np.round(j * 255)
            strip = np.empty((r1 - r0, w, 4), np.float32)  # C order: rows follow each other
            strip[..., 0], strip[..., 1:] = d, xyz
            out.write(strip.data)
    return depth, clear


def _write_image(folder: Path, name: str, depth: np.ndarray, clear: np.ndarray,
                 vis_range: tuple[float, float], bounds: tuple[float, float], image_format: str,
                 rng: np.random.Generator) -> float:
    """One foggy image and its two masks; returns its visibility."""
    visibility = draw_visibility(vis_range, bounds, rng)
    gain = rng.uniform(0.75, 1.15)  # daylight varies
    airlight = (rng.uniform(0.55, 0.9) * rng.uniform(0.97, 1.03, 3)).astype(np.float32)
    image = np.empty(clear.shape, np.uint8)
    for r0, r1 in _strips(depth.shape[0]):
        j = clear[r0:r1].astype(np.float32) * np.float32(gain / 255)
        image[r0:r1] = fog(np.clip(j, 0, 1), depth[r0:r1], visibility, airlight, rng)
    _save_image(Image.fromarray(image), folder / f"{name}.{image_format}", image_format)
    del image
    visible, nonvisible = label_masks(depth, visibility)
    _save_mask(visible, VISIBLE_COLOUR, folder / f"{name}{VISIBLE_SUFFIX}")
    _save_mask(nonvisible, NONVISIBLE_COLOUR, folder / f"{name}{NONVISIBLE_SUFFIX}")
    return visibility


def _save_image(image: Image.Image, path: Path, image_format: str) -> None:
    if image_format == "png":
        image.save(path, format="PNG", compress_level=1)
    elif image_format == "jpg":
        image.save(path, format="JPEG", quality=92)
    else:  # lossy like the webcams' own JPEG 2000
        image.save(path, format="JPEG2000", irreversible=True, quality_mode="rates", quality_layers=[8])


def _save_mask(region: np.ndarray, colour: tuple[int, int, int], path: Path) -> None:
    rgba = np.zeros(region.shape + (4,), np.uint8)
    rgba[region] = (*colour, 255)
    Image.fromarray(rgba).save(path, format="PNG", compress_level=6)


def _write_csv(path: Path, rows: list[tuple[str, str, float]]) -> None:
    lines = ["image,view,visibility_m"] + [f"{n},{v},{vis:.6g}" for n, v, vis in sorted(rows)]
    path.write_text("\n".join(lines) + "\n")
