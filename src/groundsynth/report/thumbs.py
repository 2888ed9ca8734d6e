"""Small embedded images of the report: thumbnails of samples, bounded copies of plot files.

Every image the report embeds goes through here so that the page stays small whatever the
size of the runs: sample images become JPEG thumbnails of at most :data:`THUMB_PX` pixels a
side, maps palette PNGs of the same size (nearest-neighbour, so class edges stay exact), and
plot files written by other stages are re-encoded when larger than :data:`MAX_FILE_BYTES`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from groundsynth.classes import COLOURS

__all__ = ["MAX_FILE_BYTES", "MAX_FILE_PX", "THUMB_PX", "map_thumb", "photo_thumb", "plot_file"]

log = logging.getLogger(__name__)

#: Longest side of a sample thumbnail, in pixels.
THUMB_PX = 128
#: JPEG quality of image thumbnails.
JPEG_QUALITY = 82
#: Plot files larger than this are re-encoded (downscaled to :data:`MAX_FILE_PX`).
MAX_FILE_BYTES = 160_000
#: Longest side of a re-encoded plot file, in pixels.
MAX_FILE_PX = 1100

#: Class colours, then grey for every other value (nodata, ignore).
NODATA_GREY = (200, 200, 200)
_PALETTE = np.asarray(COLOURS, dtype=np.uint8).reshape(-1).tolist() + list(NODATA_GREY) * (
    256 - len(COLOURS)
)


def _fit(im: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """``im`` shrunk so that its longer side is at most ``size`` (never enlarged)."""
    if max(im.size) <= size:
        return im
    scale = size / max(im.size)
    return im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample=resample
    )


def photo_thumb(rgb: np.ndarray, size: int = THUMB_PX) -> tuple[str, bytes]:
    """(mime type, bytes) of a JPEG thumbnail of an (H, W, 3) uint8 image."""
    im = _fit(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), size, Image.BOX)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "image/jpeg", buf.getvalue()


def map_thumb(mask: np.ndarray, size: int = THUMB_PX) -> tuple[str, bytes]:
    """(mime type, bytes) of a palette-PNG thumbnail of an (H, W) class-index mask, in the
    class colours (any other value, such as nodata, in grey)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    im = Image.fromarray(mask, mode="P")
    im.putpalette(_PALETTE)
    im = _fit(im, size, Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "image/png", buf.getvalue()


def plot_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[str, bytes]:
    """(mime type, bytes) of an image file to embed: as is when small, else downscaled and
    re-encoded: PNG if that fits in ``max_bytes``, else WebP, shrunk until it fits."""
    data = path.read_bytes()
    if len(data) <= max_bytes:
        return "image/png", data
    with Image.open(io.BytesIO(data)) as src:
        im = _fit(src.convert("RGB"), MAX_FILE_PX, Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    if buf.tell() <= max_bytes:
        return "image/png", buf.getvalue()
    quality = 85
    while True:  # lossy, smaller and smaller until it fits (plots get there at once)
        buf = io.BytesIO()
        im.save(buf, format="WEBP", quality=quality, method=4)
        if buf.tell() <= max_bytes or max(im.size) <= THUMB_PX:
            break
        quality = max(40, quality - 15)
        im = im.resize((max(1, im.width * 3 // 4), max(1, im.height * 3 // 4)), Image.LANCZOS)
    log.info("report: %s re-encoded from %d to %d bytes", path, len(data), buf.tell())
    return "image/webp", buf.getvalue()
