"""STAC item search (pystac-client) for an area, a date range and a cloud-cover ceiling.

The search sends ``bbox``, ``datetime``, ``collections`` and the query extension's
``eo:cloud_cover < P``; the cloud ceiling is also applied to the answers here, so an API that
ignores the query still gives the right items. Items are kept as plain dicts, ordered by cloud
cover then date, and cut to ``max_items``. Requests are retried with exponential back-off on
429/5xx answers and dropped connections; a dead API, an answer that is not a STAC API with item
search, and an empty result are each one clear error naming the URL and the search.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from groundsynth.errors import FetchError, InputError, MissingDependencyError

__all__ = [
    "EARTH_SEARCH_V1",
    "SEARCH_CAP",
    "SearchResult",
    "parse_bbox",
    "parse_dates",
    "search_items",
]

log = logging.getLogger(__name__)

#: Element 84's Earth Search (v1); Sentinel-2 L2A COGs are its ``sentinel-2-l2a`` collection.
EARTH_SEARCH_V1 = "https://earth-search.aws.element84.com/v1"
#: At most this many items are read from one search (then sorted by cloud cover and cut).
SEARCH_CAP = 1000


def parse_bbox(bbox: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` or four numbers (degrees, EPSG:4326) -> a checked tuple."""
    parts: Sequence[Any] = bbox.split(",") if isinstance(bbox, str) else bbox
    try:
        vals = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise InputError(f"bbox must be four numbers W,S,E,N in degrees, got {bbox!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"bbox must be four finite numbers W,S,E,N in degrees, got {bbox!r}")
    w, s, e, n = vals
    if not (-180 <= w < e <= 180):
        raise InputError(
            f"bbox {vals}: longitudes must satisfy -180 <= W < E <= 180 (boxes across the "
            "antimeridian are not supported: split them in two)"
        )
    if not (-80 <= s < n <= 84):
        raise InputError(
            f"bbox {vals}: latitudes must satisfy -80 <= S < N <= 84 (the UTM zones' range)"
        )
    if e - w > 6 or n - s > 6:
        raise InputError(f"bbox {vals}: larger than 6 degrees; split the area into smaller boxes")
    return vals  # type: ignore[return-value]


def _parse_instant(text: str, *, end: bool) -> datetime:
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            t = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
            return t.replace(hour=23, minute=59, second=59, microsecond=999000) if end else t
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"dates: {text!r} is not an ISO date (YYYY-MM-DD) or date-time; "
            "write START/END, e.g. 2021-06-01/2021-08-31"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_dates(dates: str) -> tuple[str, str]:
    """``"START/END"`` (dates or date-times, UTC when no zone) -> RFC 3339 start and end."""
    parts = str(dates).split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise InputError(
            f"dates must be START/END, e.g. 2021-06-01/2021-08-31, got {dates!r} "
            "(open-ended ranges are not supported)"
        )
    start = _parse_instant(parts[0], end=False)
    end = _parse_instant(parts[1], end=True)
    if end < start:
        raise InputError(f"dates {dates!r}: the end is before the start")
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return (
        start.astimezone(timezone.utc).strftime(fmt)[:-4] + "Z",
        end.astimezone(timezone.utc).strftime(fmt)[:-4] + "Z",
    )


@dataclass(frozen=True)
class SearchResult:
    items: list[dict[str, Any]]  # kept items, by cloud cover then date
    matched: int  # items the API returned
    dropped_cloud: int  # returned, but at or over the cloud ceiling
    dropped_max_items: int  # beyond max_items
    search: dict[str, Any]  # what was asked, for the record


def _client_module() -> Any:
    try:
        import pystac_client
        from urllib3 import Retry
    except ImportError as exc:
        raise MissingDependencyError(
            "pystac-client is required to search STAC APIs; run: pip install 'groundsynth[acquire]'"
        ) from exc
    return pystac_client, Retry


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    m = re.search(r"\(Caused by (\w+)\(", text)
    reason = m.group(1) if m else ""
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{reason}: {text}" if reason else text


def search_items(
    *,
    stac_url: str,
    collection: str,
    bbox: tuple[float, float, float, float],
    start: str,
    end: str,
    max_cloud: float,
    max_items: int | None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> SearchResult:
    """Search ``stac_url`` and return the items to acquire; see the module docstring."""
    pystac_client, retry_cls = _client_module()
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    retry = retry_cls(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST searches are idempotent: retry them too
        raise_on_status=False,
    )
    io = StacApiIO(max_retries=retry, timeout=timeout)
    asked = {
        "url": stac_url,
        "collections": [collection],
        "bbox": list(bbox),
        "datetime": f"{start}/{end}",
        "query": {"eo:cloud_cover": {"lt": max_cloud}},
    }
    try:
        client = pystac_client.Client.open(stac_url, stac_io=io, timeout=timeout)
    except (APIError, OSError, ValueError, KeyError) as exc:
        raise FetchError(
            f"STAC API {stac_url}: cannot be opened ({_short(exc)}); check --stac-url"
        ) from None
    try:
        search = client.search(
            collections=[collection],
            bbox=list(bbox),
            datetime=f"{start}/{end}",
            query={"eo:cloud_cover": {"lt": max_cloud}},
            max_items=SEARCH_CAP,
        )
        found = list(search.items_as_dicts())
    except NotImplementedError as exc:
        raise FetchError(
            f"STAC API {stac_url}: does not offer item search ({exc}); check --stac-url"
        ) from None
    except (APIError, OSError, ValueError, KeyError) as exc:
        raise FetchError(f"STAC API {stac_url}: search failed ({_short(exc)})") from None
    if len(found) >= SEARCH_CAP:
        log.warning(
            "%s: the search matched %d items or more; only the first %d are considered "
            "(narrow --dates or --bbox)",
            stac_url,
            SEARCH_CAP,
            SEARCH_CAP,
        )
    kept = []
    dropped_cloud = 0
    for item in found:
        cc = (item.get("properties") or {}).get("eo:cloud_cover")
        if cc is None:
            log.warning("%s: item %s has no eo:cloud_cover; kept", stac_url, item.get("id"))
        elif float(cc) >= max_cloud:
            dropped_cloud += 1
            continue
        kept.append(item)
    if not kept:
        raise InputError(
            f"no items found at {stac_url} in collection {collection!r} for bbox {list(bbox)}, "
            f"dates {start}/{end} and cloud cover < {max_cloud:g} %"
            + (f" ({dropped_cloud} more were too cloudy)" if dropped_cloud else "")
            + "; widen --dates or --bbox, raise --max-cloud, or check --collection"
        )

    def order(item: dict[str, Any]) -> tuple[float, str, str]:
        props = item.get("properties") or {}
        cc = props.get("eo:cloud_cover")
        return (float(cc) if cc is not None else 101.0, str(props.get("datetime")), item["id"])

    kept.sort(key=order)
    cut = kept[:max_items] if max_items else kept
    return SearchResult(
        items=cut,
        matched=len(found),
        dropped_cloud=dropped_cloud,
        dropped_max_items=len(kept) - len(cut),
        search=asked,
    )
