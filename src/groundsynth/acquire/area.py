"""The area to acquire: a longitude/latitude bounding box, given directly or read from GeoJSON.

Coordinates are WGS 84 degrees (EPSG:4326, longitude first, as GeoJSON has them). A box that
crosses the antimeridian is not supported: split it into two requests.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from groundsynth.errors import InputError

__all__ = ["BBox", "bbox_from_geojson", "check_bbox", "parse_bbox", "resolve_area"]

#: (west, south, east, north) in degrees.
BBox = tuple[float, float, float, float]

_LONLAT_CRS = ("CRS84", "CRS:84", "EPSG:4326", "EPSG::4326", "OGC:1.3:CRS84")


def check_bbox(bbox: Sequence[float], *, what: str = "--bbox") -> BBox:
    """Validate ``(west, south, east, north)`` and return it as a tuple of floats."""
    if len(bbox) != 4:
        raise InputError(f"{what}: expected 4 numbers W,S,E,N; got {len(bbox)}: {list(bbox)}")
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected 4 numbers W,S,E,N; got {list(bbox)}") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise InputError(f"{what}: coordinates must be finite numbers; got {list(bbox)}")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InputError(
            f"{what}: longitudes must lie within -180..180; got west={west}, east={east} "
            "(is the order W,S,E,N, longitude first?)"
        )
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise InputError(
            f"{what}: latitudes must lie within -90..90; got south={south}, north={north} "
            "(is the order W,S,E,N, longitude first?)"
        )
    if west >= east:
        raise InputError(
            f"{what}: west ({west}) must be less than east ({east}); "
            "a box across the antimeridian must be split into two requests"
        )
    if south >= north:
        raise InputError(f"{what}: south ({south}) must be less than north ({north})")
    return west, south, east, north


def parse_bbox(text: str) -> BBox:
    """Parse ``"W,S,E,N"`` (degrees, commas or spaces) into a validated bounding box."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(
            f"--bbox: {text!r} is not four numbers W,S,E,N (e.g. 6.5,0.2,6.75,0.4)"
        ) from None
    return check_bbox(values)


def _positions(coords: Any) -> Iterator[tuple[float, float]]:
    if (
        isinstance(coords, (list, tuple))
        and len(coords) >= 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords[:2])
    ):
        yield float(coords[0]), float(coords[1])
    elif isinstance(coords, (list, tuple)):
        for c in coords:
            yield from _positions(c)


def _geometries(obj: Any, path: Path) -> Iterator[dict]:
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a GeoJSON object")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        for feature in obj.get("features") or []:
            yield from _geometries(feature, path)
    elif kind == "Feature":
        if obj.get("geometry"):
            yield from _geometries(obj["geometry"], path)
    elif kind == "GeometryCollection":
        for geometry in obj.get("geometries") or []:
            yield from _geometries(geometry, path)
    elif kind in (
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
    ):
        yield obj
    else:
        raise InputError(f"{path}: unknown GeoJSON type {kind!r}")


def bbox_from_geojson(path: str | os.PathLike[str]) -> BBox:
    """The bounding box of every geometry in a GeoJSON file (lon/lat, RFC 7946).

    The whole box is acquired, not only the inside of the polygons. A legacy ``crs`` member
    other than lon/lat WGS 84 is refused (reproject the file first, e.g. with ``ogr2ogr``).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--geojson: {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--geojson: {path}: not readable as JSON ({exc})") from None
    crs = (((obj or {}).get("crs") or {}).get("properties") or {}).get("name") if obj else None
    if crs and not any(str(crs).upper().endswith(c) for c in _LONLAT_CRS):
        raise InputError(
            f"--geojson: {path}: coordinates are in {crs}; GeoJSON must be lon/lat WGS 84 "
            "(reproject it, e.g. ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson)"
        )
    xs, ys = [], []
    for geometry in _geometries(obj, path):
        for x, y in _positions(geometry.get("coordinates")):
            xs.append(x)
            ys.append(y)
    if not xs:
        raise InputError(f"--geojson: {path}: holds no coordinates")
    return check_bbox((min(xs), min(ys), max(xs), max(ys)), what=f"--geojson {path}")


def resolve_area(
    bbox: str | Sequence[float] | None, geojson: str | os.PathLike[str] | None
) -> BBox:
    """The area from exactly one of ``bbox`` ("W,S,E,N" or four numbers) and ``geojson``."""
    if (bbox is None) == (geojson is None):
        raise InputError(
            "give the area as exactly one of --bbox W,S,E,N or --geojson FILE "
            "(e.g. --bbox 6.5,0.2,6.75,0.4)"
        )
    if geojson is not None:
        return bbox_from_geojson(geojson)
    if isinstance(bbox, str):
        return parse_bbox(bbox)
    return check_bbox(list(bbox or ()))
