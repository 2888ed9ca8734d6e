"""Acquisition of public imagery and land cover for an area: STAC search and windowed COG reads.

Writes rasters that ``groundsynth build`` reads, with provenance (URL, size, ETag, windows and
bytes fetched) in a run directory. Importing this package imports nothing heavy; use the
modules:

- :mod:`groundsynth.acquire.worldcover` — ESA WorldCover land cover and the Sentinel-2 RGBNIR
  yearly composite for an area (:func:`~groundsynth.acquire.worldcover.acquire_worldcover`);
- :mod:`groundsynth.acquire.sentinel2` — Sentinel-2 L2A scenes found by a STAC search;
- :mod:`groundsynth.acquire.cog` — shared: ``HEAD`` with retries, windowed ``/vsicurl/`` reads
  of remote COGs with GDAL options, retries, COG checks and a byte count;
- :mod:`groundsynth.acquire.area` — bounding boxes from ``W,S,E,N`` or GeoJSON;
- :mod:`groundsynth.acquire.tiles`, :mod:`.tile_reader`, :mod:`.journal`, :mod:`.mosaic` —
  the WorldCover grid, chunked reads, the resume journal, strip-wise mosaics.
"""
