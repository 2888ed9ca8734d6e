"""Sample grids of the report, as HTML: each sample one ``<figure>`` holding its image and its
map as two ``<img>`` thumbnails, with its caption in full in a ``<figcaption>`` below them.

A grid shows at most :data:`MAX_SAMPLES` samples whatever the size of the dataset, chosen
deterministically (:func:`pick_ids`: evenly spaced over the sorted ids), and reads only
those samples' files and caption rows, so a report over an ARAS-sized dataset stays small
and quick to build.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from groundsynth.classes import CLASS_NAMES, COLOURS
from groundsynth.errors import GroundsynthError
from groundsynth.report.html import Page, data_uri, esc
from groundsynth.report.thumbs import map_thumb, photo_thumb

__all__ = [
    "MAX_SAMPLES",
    "NO_CAPTIONS",
    "Tile",
    "caption_texts",
    "pick_ids",
    "read_tiles",
    "sample_grid",
    "side_by_side",
]

log = logging.getLogger(__name__)

#: At most this many samples per grid.
MAX_SAMPLES = 6
#: Said in place of a caption when the dataset has none.
NO_CAPTIONS = "no captions in this dataset"

_CSV_CHUNK_ROWS = 100_000


def pick_ids(ids: Sequence[str], k: int = MAX_SAMPLES) -> list[str]:
    """``k`` of ``ids``, evenly spaced (the middle of ``k`` equal strata): the same samples on
    every build, spread over the whole dataset."""
    n = len(ids)
    if n <= k:
        return list(ids)
    return [ids[(2 * i + 1) * n // (2 * k)] for i in range(k)]


def caption_texts(reader: Any, split: str, ids: Sequence[str]) -> dict[str, str] | None:
    """The first caption stream's text of each of ``ids`` found (``None``: the dataset has no
    caption table). The table is streamed in chunks; only the wanted rows are kept."""
    import pandas as pd

    from groundsynth.data.reader import filename_to_id

    found = reader.captions_path(split)
    if found is None:
        return None
    path, filter_split = found
    header = reader.table_columns(path)
    streams = [c for c in header if c not in ("id", "filename", "split", *CLASS_NAMES)]
    if not streams or "filename" not in header:
        return None
    usecols = ["filename", streams[0]] + (["split"] if filter_split and "split" in header else [])
    want, out = set(ids), {}
    try:
        chunks = pd.read_csv(
            path, usecols=usecols, dtype=str, keep_default_na=False, chunksize=_CSV_CHUNK_ROWS
        )
        for chunk in chunks:
            if "split" in chunk.columns:
                chunk = chunk[chunk["split"] == split]
            for name, text in zip(chunk["filename"], chunk[streams[0]]):
                sid = filename_to_id(name)
                if sid in want and sid not in out:
                    out[sid] = str(text)
            if len(out) == len(want):
                break
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read captions from %s: %s", path, exc)
        return None
    return out


@dataclass(frozen=True)
class Tile:
    """One sample as the report shows it: thumbnails as (mime type, bytes)."""

    sid: str
    image: tuple[str, bytes]
    map: tuple[str, bytes] | None
    caption: str | None


def read_tiles(reader: Any, split: str, k: int = MAX_SAMPLES) -> tuple[list[Tile], list[str], bool]:
    """Thumbnails of :func:`pick_ids` of ``split``; the problems met (files that could not be
    read, each skipped); whether the dataset has captions."""
    ids = pick_ids(reader.ids(split), k)
    texts = caption_texts(reader, split, ids)
    tiles, problems = [], []
    for sid in ids:
        try:
            image = photo_thumb(reader.read_image(split, sid))
        except (GroundsynthError, OSError, ValueError) as exc:
            problems.append(f"{sid}: {exc}")
            continue
        try:
            mask = map_thumb(reader.read_mask(split, sid))
        except (GroundsynthError, OSError, ValueError) as exc:
            problems.append(f"{sid} (map): {exc}")
            mask = None
        tiles.append(Tile(sid, image, mask, None if texts is None else texts.get(sid)))
    for p in problems:
        log.warning("report: sample skipped: %s", p)
    return tiles, problems, texts is not None


def legend_html() -> str:
    """The class colours of the maps, as a list of swatches."""
    items = "".join(
        f'<li><span class="swatch" style="background:rgb{tuple(int(v) for v in c)}"></span>'
        f"{esc(name)}</li>"
        for name, c in zip(CLASS_NAMES, COLOURS)
    )
    return f'<ul class="legend" aria-label="map colours">{items}</ul>'


def tile_html(tile: Tile, label: str, has_captions: bool) -> str:
    """One sample: image and map side by side, the caption in full below the pair."""
    mime, data = tile.image
    parts = [f'<img src="{data_uri(data, mime)}" alt="{esc(label)} {esc(tile.sid)}">']
    if tile.map is not None:
        mime, data = tile.map
        parts.append(
            f'<img class="map" src="{data_uri(data, mime)}" '
            f'alt="land-cover map of {esc(label)} {esc(tile.sid)}">'
        )
    if tile.caption:
        text = esc(tile.caption)
    else:
        text = f'<span class="muted">{NO_CAPTIONS if not has_captions else "no caption for this sample"}</span>'
    return (
        f'<figure class="sample"><div class="pair">{"".join(parts)}</div>'
        f"<figcaption><strong>{esc(tile.sid)}</strong> {text}</figcaption></figure>"
    )


def _problems_note(page: Page, problems: list[str], tried: int) -> None:
    if problems:
        page.paragraph(
            f"{len(problems)} of {tried} chosen samples could not be shown (first: {problems[0]}).",
            cls="muted",
        )


def _first_split(reader: Any, split: str | None) -> str | None:
    if split is not None:
        return split
    return next((s for s in reader.splits() if reader.len(s)), None)


def sample_grid(
    page: Page,
    reader: Any,
    *,
    split: str | None = None,
    label: str = "image",
    k: int = MAX_SAMPLES,
) -> None:
    """A grid of ``k`` samples of ``split`` (default: the first non-empty split)."""
    split = _first_split(reader, split)
    if split is None:
        return
    tiles, problems, has_captions = read_tiles(reader, split, k)
    n = reader.len(split)
    page.paragraph(
        f"{len(tiles)} of {n} samples of the {split} split, evenly spaced over its ids: "
        f"{label} (left) and land-cover map (right), caption below."
        + ("" if has_captions else f" {NO_CAPTIONS[0].upper()}{NO_CAPTIONS[1:]}."),
        cls="muted",
    )
    page.raw(legend_html())
    page.raw(
        '<div class="grid">' + "".join(tile_html(t, label, has_captions) for t in tiles) + "</div>"
    )
    _problems_note(page, problems, len(tiles) + len(problems))


def side_by_side(page: Page, readers: Mapping[str, Any], k: int = MAX_SAMPLES) -> None:
    """Samples of several datasets (e.g. grounded and ungrounded) in columns side by side,
    each with its map; the columns stack on a narrow screen."""
    columns, problems, tried = [], [], 0
    for name, reader in readers.items():
        split = _first_split(reader, None)
        if split is None:
            continue
        tiles, probs, has_captions = read_tiles(reader, split, k)
        tried += len(tiles) + len(probs)
        problems += [f"{name} {p}" for p in probs]
        label = f"{name} synthetic image"
        columns.append(
            f'<div class="column"><h4>{esc(name)} ({reader.len(split)} samples)</h4>'
            '<div class="grid">'
            + "".join(tile_html(t, label, has_captions) for t in tiles)
            + "</div></div>"
        )
    if not columns:
        return
    page.raw(legend_html())
    page.raw('<div class="sidebyside">' + "".join(columns) + "</div>")
    _problems_note(page, problems, tried)
