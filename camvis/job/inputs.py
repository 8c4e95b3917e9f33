"""Files a user hands to camvis-predict, read defensively: each bad one is one PredictError line.

- Only regular files are opened (os.stat first; then O_NONBLOCK and fstat, so a FIFO swapped in
  between still never blocks); empty files and files over a size bound are refused unread.
- Names that are not UTF-8 are refused (they could not be written to the CSV or shown faithfully);
  `shown(path)` prints any name on one line.
- Images: a pixel cap (`DEFAULT_MAX_PIXELS`, camvis-predict --max-pixels) checked on the header,
  before any pixel is decoded; converted to 8-bit RGB as camvis2's reader (cv2.imread with no
  flags) does: 16-bit samples >> 8 (never clipped), grey replicated to 3 channels, alpha dropped
  (not composited), palettes expanded; float and 32-bit integer images are refused.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import numpy as np

from camvis.errors import PredictError

DEFAULT_MAX_PIXELS = 100_000_000  # ~4x a paper image (4140 x 6198 = 25.7 MP); RGB 300 MB decoded
BYTES_PER_PIXEL = 8               # the largest encoding camvis reads: 16-bit RGBA, uncompressed
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def shown(path: str | os.PathLike) -> str:
    """The path on one line, bytes that are not UTF-8 as \\xNN escapes."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def check_name(path: str | os.PathLike) -> None:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise PredictError(f"{shown(path)}: the file name is not UTF-8; rename it to predict it") from None


def read_regular(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a regular, non-empty file of at most `limit` bytes; never opens anything else."""
    name = shown(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise PredictError(f"{name}: the {what} is not a regular file (a folder, FIFO, device or socket); "
                               "not opened")
        if st.st_size == 0:
            raise PredictError(f"{name}: the {what} is empty (0 bytes)")
        if st.st_size > limit:
            raise PredictError(f"{name}: the {what} is {st.st_size} bytes, more than the {limit} allowed")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped since the stat
                raise PredictError(f"{name}: the {what} is not a regular file; not read")
            return fh.read(limit + 1)
    except OSError as e:
        raise PredictError(f"{name}: cannot read the {what} ({e.strerror or e})") from e


def check_regular(path: str | os.PathLike, what: str) -> None:
    """A regular, non-empty file (for files read by a library: a depth map is memory-mapped)."""
    name = shown(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise PredictError(f"{name}: cannot read the {what} ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise PredictError(f"{name}: the {what} is not a regular file (a folder, FIFO, device or socket); not opened")
    if st.st_size == 0:
        raise PredictError(f"{name}: the {what} is empty (0 bytes)")


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) of an encoded image, by the rules above; `name` labels the errors."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise PredictError(f"{name}: {w} x {h} = {w * h:,} pixels, more than the cap of "
                                       f"{max_pixels:,} (--max-pixels); not decoded")
                return to_rgb(im, name)
    except PredictError:
        raise
    except Image.DecompressionBombError as e:  # beyond Pillow's own limit, before its size is known
        raise PredictError(f"{name}: more pixels than the cap of {max_pixels:,} (--max-pixels) and Pillow's "
                           f"limit ({e}); not decoded") from e
    except MemoryError as e:
        raise PredictError(f"{name}: not enough memory to decode the image") from e
    except Exception as e:  # a malformed file raises anything from OSError to struct.error or SyntaxError
        raise PredictError(f"{name}: cannot read the image ({type(e).__name__}: {e})") from e


def to_rgb(im: object, name: str) -> np.ndarray:
    """8-bit RGB as cv2.imread(path) gives (in RGB order), or a PredictError."""
    mode = im.mode  # type: ignore[attr-defined]
    if mode in SIXTEEN_BIT or mode == "I":
        grey = np.asarray(im)
        if grey.size and (grey.min() < 0 or grey.max() > 0xFFFF):
            raise PredictError(f"{name}: 32-bit integer samples (mode {mode}); expected an 8- or 16-bit image")
        grey = (grey.astype(np.uint32) >> 8).astype(np.uint8)  # OpenCV's 16-to-8-bit rule
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        raise PredictError(f"{name}: floating-point samples (mode F); expected an 8- or 16-bit image")
    with warnings.catch_warnings():  # a palette's transparency is dropped, as cv2 drops it: no warning
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(im.convert("RGB"))  # type: ignore[attr-defined]  # 16-bit RGB is already >> 8


def read_image_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """(uint8 (H, W, 3), SHA-256 of the file): the digest is of the very bytes decoded."""
    import hashlib

    check_name(path)
    data = read_regular(path, max(max_pixels, 1) * BYTES_PER_PIXEL + (1 << 20), "image")
    return decode_image(data, shown(path), max_pixels), hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's content (streamed), None if it cannot be read as a regular file."""
    import hashlib

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        digest = hashlib.sha256()
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None
