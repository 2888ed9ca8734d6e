"""Masks: palette PNG writing, reading of index / palette / ARAS RGB colour masks.

Datasets store masks as palette ("P") PNGs whose pixel values are class indices 0-6 and whose
palette carries the class colours, so that readers expecting ARAS RGB colour masks still see
the right colours. Readers accept palette or greyscale index PNGs and RGB colour PNGs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from groundsynth.classes import COLOURS, IGNORE_INDEX, NUM_CLASSES, PALETTE
from groundsynth.errors import MaskError

__all__ = [
    "DEFAULT_PNG_COMPRESS_LEVEL",
    "colourise",
    "decode_colour_mask",
    "encode_mask_png",
    "encode_rgb_png",
    "resolve_png_encoder",
    "pack_rgb",
    "read_mask",
    "validate_index_mask",
]

#: zlib level of the PNGs PIL writes (lossless at every level). Chosen on the figures of
#: ``benchmarks/bench_build.py``: for RGB patches level 1 encodes ~4x faster than PIL's
#: default 6 for files ~12 % larger; palette masks are small and fast at any level.
DEFAULT_PNG_COMPRESS_LEVEL = 1
#: zlib level of palette masks: on blocky land-cover masks level 6 is as fast as 1 and
#: gives files ~3x smaller (bench_build.py).
MASK_PNG_COMPRESS_LEVEL = 6
#: RGB PNG encoders: ``fpng`` (a fast lossless PNG writer, ~15x faster than PIL at level 1
#: for about the same size), ``pil`` (zlib at ``compress_level``), ``auto`` (fpng if installed).
PNG_ENCODERS = ("auto", "fpng", "pil")

_COLOUR_LUT: np.ndarray | None = None


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 array into (...) uint32 keys ``r << 16 | g << 8 | b``."""
    rgb = np.asarray(rgb)
    r = rgb[..., 0].astype(np.uint32)
    r <<= 16
    g = rgb[..., 1].astype(np.uint32)
    g <<= 8
    r |= g
    r |= rgb[..., 2]
    return r


def _colour_lut() -> np.ndarray:
    """A 2**24-entry table from packed colour to class index (IGNORE_INDEX elsewhere), 16 MiB."""
    global _COLOUR_LUT
    if _COLOUR_LUT is None:
        lut = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
        lut[pack_rgb(COLOURS)] = np.arange(NUM_CLASSES, dtype=np.uint8)
        _COLOUR_LUT = lut
    return _COLOUR_LUT


def _describe_colours(keys: np.ndarray, limit: int = 8) -> str:
    cols = [f"({k >> 16 & 255}, {k >> 8 & 255}, {k & 255})" for k in keys[:limit].tolist()]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(cols) + more


def decode_colour_mask(rgb: np.ndarray, source: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Decode an (H, W, 3) ARAS RGB colour mask into class indices, vectorised.

    One table lookup per pixel (no per-class loop). Raises :class:`MaskError` naming
    ``source`` and the unknown colours if any pixel is not a class colour.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4) or rgb.dtype != np.uint8:
        raise MaskError(
            f"{source or 'mask'}: expected an (H, W, 3) uint8 colour mask, "
            f"got shape {rgb.shape} and dtype {rgb.dtype}"
        )
    idx = _colour_lut()[pack_rgb(rgb[..., :3])]
    bad = idx == IGNORE_INDEX
    if bad.any():
        keys = np.unique(pack_rgb(rgb[..., :3])[bad])
        raise MaskError(
            f"{source or 'mask'}: {int(bad.sum())} pixels have colours that are not class colours: "
            f"{_describe_colours(keys)}"
        )
    return idx


def validate_index_mask(mask: np.ndarray, source: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`MaskError` if ``mask`` holds values outside 0..NUM_CLASSES-1."""
    mx = int(mask.max()) if mask.size else 0
    if mx >= NUM_CLASSES:
        vals = np.unique(mask[mask >= NUM_CLASSES])
        raise MaskError(
            f"{source or 'mask'}: values {vals[:8].tolist()} are not class indices "
            f"0..{NUM_CLASSES - 1}"
        )


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask PNG of any supported kind and return (H, W) uint8 class indices.

    Palette ("P") and greyscale ("L") PNGs are read as indices; RGB/RGBA PNGs are decoded
    by colour. Unknown values or colours raise :class:`MaskError` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L"):
                arr = np.asarray(im, dtype=np.uint8)
                if mode == "P" and _has_foreign_palette(im):
                    arr = decode_colour_mask(np.asarray(im.convert("RGB")), path)
            elif mode in ("RGB", "RGBA"):
                return decode_colour_mask(np.asarray(im), path)
            else:
                raise MaskError(f"{path}: unsupported mask image mode {mode!r}")
    except (OSError, SyntaxError) as exc:  # PIL raises OSError for corrupt files
        raise MaskError(f"{path}: cannot read mask ({exc})") from exc
    validate_index_mask(arr, path)
    return arr


def _has_foreign_palette(im: Image.Image) -> bool:
    """True when a palette PNG's first entries are not our class colours (a colour mask saved
    as a palette image by another tool): such a mask is decoded by colour, not by index."""
    pal = im.getpalette()
    if not pal or len(pal) < 3 * NUM_CLASSES:
        return False
    return not np.array_equal(np.asarray(pal[: 3 * NUM_CLASSES], dtype=np.uint8), COLOURS.ravel())


def colourise(mask: np.ndarray) -> np.ndarray:
    """Return the (H, W, 3) ARAS RGB colour image of an index mask."""
    mask = np.asarray(mask)
    validate_index_mask(mask)
    return COLOURS[mask]


def encode_mask_png(mask: np.ndarray, compress_level: int = MASK_PNG_COMPRESS_LEVEL) -> bytes:
    """Encode an (H, W) index mask as a palette PNG carrying the class colours."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise MaskError(f"expected an (H, W) index mask, got shape {mask.shape}")
    validate_index_mask(mask)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    im.putpalette(PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _fpng():
    try:
        import fpng
    except ImportError:
        return None
    return fpng


def resolve_png_encoder(encoder: str) -> str:
    """``auto`` -> ``fpng`` when installed, else ``pil``; validates the name."""
    if encoder not in PNG_ENCODERS:
        raise ValueError(
            f"unknown PNG encoder {encoder!r}; choose one of {', '.join(PNG_ENCODERS)}"
        )
    if encoder == "auto":
        return "fpng" if _fpng() is not None else "pil"
    if encoder == "fpng" and _fpng() is None:
        raise ValueError("PNG encoder 'fpng' is not installed: pip install fpng (or use 'pil')")
    return encoder


def encode_rgb_png(
    image: np.ndarray, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL, encoder: str = "pil"
) -> bytes:
    """Encode an (H, W, 3) uint8 image as a (lossless) PNG with ``encoder`` (see PNG_ENCODERS)."""
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if encoder != "pil" and resolve_png_encoder(encoder) == "fpng":
        return _fpng().from_ndarray(image)
    buf = io.BytesIO()
    Image.frombytes("RGB", (image.shape[1], image.shape[0]), image.tobytes()).save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()
