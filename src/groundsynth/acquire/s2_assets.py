"""Sentinel-2 L2A STAC items: which asset holds a band, and how its numbers become reflectance.

Band names are the product's (``B02`` ... ``B12``, ``B8A``, ``SCL``); ``red``, ``nir`` and
the other common names are accepted too. An asset is found by key (Earth Search v0 items use
``B04``, ``SCL``; v1 items use ``red``, ``scl``), else by its ``eo:bands`` name or common name.
Only GeoTIFF assets are used (the ``*-jp2`` twins of v1 items are skipped).

Radiometry. Every output holds **reflectance × 10000 as uint16, 0 = nodata** (the convention
of Sentinel-2 products before processing baseline 04.00). An asset's DN is turned into
reflectance with ``DN × scale + offset``:

- ``scale`` is the asset's ``raster:bands`` scale, else 1/10000;
- ``offset``: 0 when the item says the BOA offset was already applied
  (``earthsearch:boa_offset_applied`` / ``sentinel:boa_offset_applied`` true; Earth Search's
  maintainers call that flag the truth when ``raster:bands`` disagrees); else the asset's
  ``raster:bands`` offset when non-zero; else −1000 × scale (``BOA_ADD_OFFSET`` −1000) when the
  processing baseline is 04.00 or later (item property ``s2:processing_baseline`` /
  ``sentinel:processing_baseline``, else the ``_Nxxyy_`` field of ``s2:product_uri``, else an
  acquisition on or after 2022-01-25, logged as an assumption); else 0.

Which rule applied is recorded per scene (``offset_source``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from groundsynth.errors import InputError

__all__ = [
    "BAND_ALIASES",
    "COMMON_NAMES",
    "QUANTIFICATION",
    "BandAsset",
    "Radiometry",
    "check_bands",
    "find_asset",
    "normalise_band",
    "processing_baseline",
    "radiometry",
]

log = logging.getLogger(__name__)

#: DN per unit reflectance of every output raster (reflectance × 10000).
QUANTIFICATION = 10000.0
#: Product band -> Earth Search v1 asset key / ``eo:bands`` name.
BAND_ALIASES: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
#: Product band -> ``eo:bands`` common name, where it names one band only.
COMMON_NAMES: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
}
_BY_ALIAS = {v: k for k, v in BAND_ALIASES.items()}
_BASELINE_4_DATE = datetime(2022, 1, 25, tzinfo=timezone.utc)


def normalise_band(name: str) -> str:
    """``B4``, ``b04``, ``red`` -> ``B04``; ``scl`` -> ``SCL``; unknown names raise InputError."""
    text = str(name).strip()
    key = text.upper()
    m = re.fullmatch(r"B0?(\d{1,2})", key)
    if m and key != "B8A":
        key = f"B{int(m.group(1)):02d}"
    if key in BAND_ALIASES:
        return key
    if text.lower() in _BY_ALIAS:
        return _BY_ALIAS[text.lower()]
    raise InputError(
        f"unknown Sentinel-2 band {name!r}; use product names ({', '.join(BAND_ALIASES)}) "
        f"or common names ({', '.join(_BY_ALIAS)})"
    )


@dataclass(frozen=True)
class BandAsset:
    """The asset of one item that holds one band."""

    band: str  # product name, e.g. "B04"
    key: str  # asset key in the item, e.g. "red" (v1) or "B04" (v0)
    href: str
    raster: Mapping[str, Any]  # the asset's first ``raster:bands`` entry, or {}


def _is_geotiff(asset: Mapping[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    href = str(asset.get("href") or "").split("?", 1)[0].lower()
    if media:
        return "tiff" in media
    return href.endswith((".tif", ".tiff"))


def _eo_names(asset: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    bands = asset.get("eo:bands") or []
    if len(bands) != 1:  # multi-band assets (the TCI "visual") hold no single band
        return set(), set()
    b = bands[0] or {}
    return {str(b.get("name", "")).lower()}, {str(b.get("common_name", "")).lower()}


def find_asset(item: Mapping[str, Any], band: str) -> BandAsset:
    """The GeoTIFF asset of ``item`` (a STAC item dict) holding ``band`` (a product name)."""
    band = normalise_band(band)
    alias = BAND_ALIASES[band]
    assets: Mapping[str, Mapping[str, Any]] = item.get("assets") or {}
    tiffs = {k: a for k, a in assets.items() if _is_geotiff(a)}
    hit = next((k for k in (band, alias, band.lower(), alias.upper()) if k in tiffs), None)
    if hit is None:
        names = {band.lower(), alias}
        common = COMMON_NAMES.get(band)
        for k, a in tiffs.items():
            eo_names, eo_common = _eo_names(a)
            if eo_names & names or (common and common in eo_common):
                hit = k
                break
    if hit is None:
        raise InputError(
            f"STAC item {item.get('id')!r} has no GeoTIFF asset for band {band} (looked for "
            f"asset keys {band}/{alias} and eo:bands names); its assets: {sorted(assets)}"
        )
    asset = tiffs[hit]
    raster = (asset.get("raster:bands") or [{}])[0] or {}
    return BandAsset(band=band, key=hit, href=str(asset["href"]), raster=raster)


def _prop(props: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if props.get(n) is not None:
            return props[n]
    return None


def processing_baseline(item: Mapping[str, Any]) -> tuple[tuple[int, int] | None, str]:
    """(baseline as (major, minor) or None, where it came from) for a STAC item dict."""
    props = item.get("properties") or {}
    text = _prop(props, "s2:processing_baseline", "sentinel:processing_baseline")
    if text is not None:
        m = re.match(r"\s*(\d+)\.(\d+)", str(text))
        if m:
            return (int(m.group(1)), int(m.group(2))), "property"
    uri = str(_prop(props, "s2:product_uri", "sentinel:product_id") or "")
    m = re.search(r"_N(\d{2})(\d{2})_", uri)
    if m:
        return (int(m.group(1)), int(m.group(2))), "product name"
    when = _item_time(props)
    if when is not None and when >= _BASELINE_4_DATE:
        return (4, 0), "acquisition date (assumed)"
    return None, "unknown"


def _item_time(props: Mapping[str, Any]) -> datetime | None:
    text = _prop(props, "datetime", "start_datetime")
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Radiometry:
    """reflectance = DN × scale + offset for one asset, and why."""

    scale: float
    offset: float
    offset_source: str  # "already applied", "raster:bands", "processing baseline", "none"
    baseline: str | None  # "04.00", or None when unknown
    baseline_source: str

    @property
    def offset_applied_here(self) -> bool:
        """True when this run subtracts an offset (the stored DNs carry one)."""
        return self.offset != 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "offset": self.offset,
            "offset_source": self.offset_source,
            "processing_baseline": self.baseline,
            "baseline_source": self.baseline_source,
        }


def radiometry(item: Mapping[str, Any], asset: BandAsset) -> Radiometry:
    """How DNs of ``asset`` (of ``item``) become reflectance; see the module docstring."""
    props = item.get("properties") or {}
    scale = asset.raster.get("scale")
    scale = float(scale) if scale not in (None, 0) else 1.0 / QUANTIFICATION
    raster_offset = float(asset.raster.get("offset") or 0.0)
    baseline, source = processing_baseline(item)
    text = f"{baseline[0]:02d}.{baseline[1]:02d}" if baseline else None
    applied = _prop(props, "earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
    if applied is True:
        if raster_offset:
            log.info(
                "%s: boa_offset_applied is true; raster:bands offset %s ignored",
                item.get("id"),
                raster_offset,
            )
        return Radiometry(scale, 0.0, "already applied", text, source)
    if raster_offset:
        return Radiometry(scale, raster_offset, "raster:bands", text, source)
    if baseline is not None and baseline >= (4, 0):
        if source.endswith("(assumed)"):
            log.warning(
                "%s: no processing baseline in the item; acquired after 2022-01-25, so "
                "BOA_ADD_OFFSET -1000 is assumed",
                item.get("id"),
            )
        return Radiometry(scale, -1000.0 * scale, "processing baseline", text, source)
    return Radiometry(scale, 0.0, "none", text, source)


def check_bands(bands: Sequence[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated product band names (SCL is not an output band)."""
    out = tuple(dict.fromkeys(normalise_band(b) for b in bands))
    if not out:
        raise InputError("no bands given (--bands B04,B03,B02,B08)")
    if "SCL" in out:
        raise InputError("SCL is a mask, not an output band; it is read for --composite median")
    return out
