"""Named pretrained encoder weights: a registry, a download cache and key remapping.

``--encoder-weights NAME`` picks an entry of :data:`WEIGHTS` (:func:`list_weights`):

* ``imagenet`` -- resolved per encoder from what the libraries already know:
  segmentation_models_pytorch's ``pretrained_settings["imagenet"]`` (smp-hub repositories on
  Hugging Face, pinned revision; mean/std from the repository's ``config.json``) or, for
  ``tu-<model>`` encoders, timm's ``pretrained_cfg`` (``hf_hub_id``, mean/std, licence).
* ``ssl4eo-s12-*`` -- Sentinel-2 ResNet weights of SSL4EO-S12 (Wang et al. 2022,
  https://arxiv.org/abs/2211.07044) as torchgeo publishes them; URL, band count and input
  transform are copied from the torchgeo enum named in each entry (torchgeo is not a
  dependency). They expect Sentinel-2 L1C reflectance (DN / 10000) without mean/std, i.e.
  ``normalisation="none"`` on reflectance, not 8-bit display images.

A name is checked against the encoder and band count before anything is downloaded
(:func:`resolve_weights`); the file is downloaded once into :func:`cache_dir`
(``$GROUNDSYNTH_CACHE/weights``, else ``~/.cache/groundsynth/weights``) by
:func:`~groundsynth.data.download.download` (resume, retries), verified against the SHA-256
prefix its file name carries (torch.hub's ``name-<sha256 prefix>.pth`` convention, which
torchgeo follows) and only then moved into place (:func:`fetch_weights`). A file that fails
the check is deleted. :func:`match_encoder_keys` maps checkpoint keys (``backbone.`` /
``encoder.`` / ``module.`` prefixes, timm's full-model names) onto an smp encoder's.

>>> fetch_weights("ssl4eo-s12-rgb-moco-resnet18", "resnet18").record()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from groundsynth._optional import lazy_import
from groundsynth.data.download import ProgressCallback, download
from groundsynth.errors import FetchError, InputError
from groundsynth.runs import file_digest

__all__ = [
    "WEIGHTS",
    "Weights",
    "WeightsFile",
    "cache_dir",
    "fetch_weights",
    "get_weights",
    "is_weights_name",
    "list_weights",
    "match_encoder_keys",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

#: Environment variable naming groundsynth's cache folder (weights go to its ``weights/``).
CACHE_ENV = "GROUNDSYNTH_CACHE"
#: Hugging Face base URL of smp-hub and timm weights (tests point it at a local server).
HF_BASE = "https://huggingface.co"

_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_S2_ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")  # fmt: skip
_S2_RGB_BANDS = ("B04", "B03", "B02")
# torchgeo's _ssl4eo_s12_transforms_s2_10k: K.Normalize(mean=0, std=10000) on L1C DNs
_S2_10K = (
    "Sentinel-2 L1C reflectance (DN / 10000), no mean/std (torchgeo _ssl4eo_s12_transforms_s2_10k)"
)
_SSL4EO = "SSL4EO-S12 (https://github.com/zhu-xlab/SSL4EO-S12), via torchgeo"
_SSL4EO_LICENCE = "CC-BY-4.0 (SSL4EO-S12 README: dataset and pretrained weights)"


@dataclass(frozen=True)
class Weights:
    """One named set of encoder weights.

    Attributes:
        name: registry key.
        description: one line for humans.
        source: where the facts come from (library metadata or the torchgeo enum).
        licence: the weights' licence as their publisher states it.
        in_channels: input bands the first convolution takes.
        encoders: smp encoder names the weights fit; empty for ``imagenet`` (per encoder).
        url: the file to download (``None`` until resolved for an encoder).
        sha256: expected SHA-256 of the file, whole or a prefix (>= 8 hex digits); ``None``
            when unknown (the digest of the file used is recorded either way).
        config_url: smp-hub ``config.json`` holding the mean/std (smp encoders only).
        mean, std: per-band input normalisation of 0..1 inputs (``None``: from ``config_url``).
        inputs: what the bands must hold before ``mean``/``std``.
        bands: band order, when the weights are for named sensor bands.
        cache_name: folder under :func:`cache_dir`.
    """

    name: str
    description: str
    source: str
    licence: str
    in_channels: int = 3
    encoders: tuple[str, ...] = ()
    url: str | None = None
    sha256: str | None = None
    config_url: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    inputs: str = "RGB images scaled to 0..1"
    bands: tuple[str, ...] | None = None
    cache_name: str = ""


def _ssl4eo(name: str, enum: str, url: str, encoder: str, bands: tuple[str, ...]) -> Weights:
    n = len(bands)
    return Weights(
        name=name,
        description=f"SSL4EO-S12 {enum.rsplit('.', 1)[1]} ({n} bands) for {encoder}",
        source=f"{_SSL4EO}: torchgeo.models.{enum}",
        licence=_SSL4EO_LICENCE,
        in_channels=n,
        encoders=(encoder, f"tu-{encoder}"),
        url=url,
        sha256=_hash_in_name(url),
        mean=(0.0,) * n,
        std=(1.0,) * n,
        inputs=_S2_10K,
        bands=bands,
        cache_name=name,
    )


def _hash_in_name(url: str) -> str | None:
    """The SHA-256 prefix of torch.hub's ``<name>-<hash>.<ext>`` file names, if any."""
    m = re.search(r"-([0-9a-f]{8,64})\.[a-z]+$", urllib.parse.urlsplit(url).path)
    return m.group(1) if m else None


_TG = "https://hf.co/torchgeo"
#: Name -> weights. URLs and transforms of the ssl4eo entries: torchgeo/models/resnet.py.
WEIGHTS: dict[str, Weights] = {
    "imagenet": Weights(
        name="imagenet",
        description="ImageNet weights of the chosen encoder (the smp/timm default)",
        source="segmentation_models_pytorch pretrained_settings['imagenet'] (smp-hub); "
        "timm pretrained_cfg for tu- encoders",
        licence="per encoder: see its model card (timm: pretrained_cfg.license)",
    ),
    "ssl4eo-s12-rgb-moco-resnet18": _ssl4eo(
        "ssl4eo-s12-rgb-moco-resnet18", "ResNet18_Weights.SENTINEL2_RGB_MOCO",
        f"{_TG}/resnet18_sentinel2_rgb_moco/resolve/e1c032e7785fd0625224cdb6699aa138bb304eec/resnet18_sentinel2_rgb_moco-e3a335e3.pth",
        "resnet18", _S2_RGB_BANDS,
    ),
    "ssl4eo-s12-all-moco-resnet18": _ssl4eo(
        "ssl4eo-s12-all-moco-resnet18", "ResNet18_Weights.SENTINEL2_ALL_MOCO",
        f"{_TG}/resnet18_sentinel2_all_moco/resolve/5b8cddc9a14f3844350b7f40b85bcd32aed75918/resnet18_sentinel2_all_moco-59bfdff9.pth",
        "resnet18", _S2_ALL_BANDS,
    ),
    "ssl4eo-s12-rgb-moco-resnet50": _ssl4eo(
        "ssl4eo-s12-rgb-moco-resnet50", "ResNet50_Weights.SENTINEL2_RGB_MOCO",
        f"{_TG}/resnet50_sentinel2_rgb_moco/resolve/efd9723b59a88e9dc1420dc1e96afb25b0630a3c/resnet50_sentinel2_rgb_moco-2b57ba8b.pth",
        "resnet50", _S2_RGB_BANDS,
    ),
    "ssl4eo-s12-all-moco-resnet50": _ssl4eo(
        "ssl4eo-s12-all-moco-resnet50", "ResNet50_Weights.SENTINEL2_ALL_MOCO",
        f"{_TG}/resnet50_sentinel2_all_moco/resolve/da4f3c9dbe09272eb902f3b37f46635fa4726879/resnet50_sentinel2_all_moco-df8b932e.pth",
        "resnet50", _S2_ALL_BANDS,
    ),
    "ssl4eo-s12-all-dino-resnet50": _ssl4eo(
        "ssl4eo-s12-all-dino-resnet50", "ResNet50_Weights.SENTINEL2_ALL_DINO",
        f"{_TG}/resnet50_sentinel2_all_dino/resolve/d7f14bf5530d70ac69d763e58e77e44dbecfec7c/resnet50_sentinel2_all_dino-d6c330e9.pth",
        "resnet50", _S2_ALL_BANDS,
    ),
}  # fmt: skip


def list_weights() -> list[str]:
    """Names of the registered weights."""
    return list(WEIGHTS)


def is_weights_name(value: str | os.PathLike[str] | None) -> bool:
    """Whether ``value`` names registered weights (anything else is taken as a file path;
    a file literally named like an entry is reached as ``./imagenet``)."""
    return isinstance(value, str) and value.strip().lower() in WEIGHTS


def get_weights(name: str) -> Weights:
    """The registry entry ``name`` (case-insensitive).

    Raises:
        InputError: unknown name (the message lists the valid ones).
    """
    key = name.strip().lower()
    if key not in WEIGHTS:
        raise InputError(
            f"unknown encoder weights {name!r}; valid names: {', '.join(WEIGHTS)} "
            "(or the path of a local state-dict file)"
        )
    return WEIGHTS[key]


def resolve_weights(name: str, encoder: str, in_channels: int = 3) -> Weights:
    """Entry ``name`` made concrete for ``encoder``, checked to fit (nothing is downloaded).

    Raises:
        InputError: unknown name, weights made for another encoder or band count, or an
            encoder without ImageNet weights in smp/timm.
    """
    weights = get_weights(name)
    if weights.name == "imagenet":
        weights = _imagenet(weights, encoder)
    elif encoder not in weights.encoders:
        raise InputError(
            f"encoder weights {weights.name!r} are for encoder {' / '.join(weights.encoders)}, "
            f"not {encoder!r}; pass --encoder {weights.encoders[0]} or other weights"
        )
    if in_channels != weights.in_channels:
        raise InputError(
            f"encoder weights {weights.name!r} take {weights.in_channels}-band input "
            f"({', '.join(weights.bands or ('R', 'G', 'B'))}); the model has {in_channels} "
            "band(s); choose weights made for your bands, or none (random initialisation)"
        )
    return weights


def _timm_name(encoder: str) -> str | None:
    """The timm model behind ``encoder`` (``tu-`` or one smp maps onto timm), else ``None``."""
    if encoder.startswith("tu-"):
        return encoder[3:]
    smp = lazy_import("segmentation_models_pytorch")
    as_timm = getattr(smp.encoders, "is_equivalent_to_timm_universal", None)
    if as_timm is None or not as_timm(encoder):
        return None
    name = encoder.replace("timm-", "", 1)  # as smp.encoders.get_encoder does
    return f"tf_{name}" if "mobilenetv3" in name else name


def _imagenet(entry: Weights, encoder: str) -> Weights:
    timm_name = _timm_name(encoder)
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", encoder)
    if timm_name is not None:
        cfg = lazy_import("timm").models.get_pretrained_cfg(timm_name)
        if cfg is not None and cfg.hf_hub_id:
            hub_id = cfg.hf_hub_id.rstrip("/")
            file = cfg.hf_hub_filename or "model.safetensors"
            url = f"{HF_BASE}/{hub_id}/resolve/main/{file}"
        elif cfg is not None and cfg.url:
            url = cfg.url
        else:
            raise InputError(
                f"timm has no pretrained weights for {timm_name!r} (encoder {encoder!r})"
            )
        return replace(
            entry,
            encoders=(encoder,),
            url=url,
            sha256=_hash_in_name(url),
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            licence=str(cfg.license or entry.licence),
            source=f"timm pretrained_cfg of {timm_name!r} ({cfg.hf_hub_id or cfg.url})",
            cache_name=f"imagenet/{slug}",
        )
    smp = lazy_import("segmentation_models_pytorch")
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if "imagenet" not in settings:
        raise InputError(
            f"segmentation_models_pytorch has no imagenet weights for encoder {encoder!r}"
            + (f" (it has: {', '.join(settings)})" if settings else "")
        )
    s = settings["imagenet"]
    common = {"encoders": (encoder,), "cache_name": f"imagenet/{slug}"}
    if "url" in s:  # smp < 0.5 kept URLs and mean/std in pretrained_settings
        return replace(
            entry, url=s["url"], sha256=_hash_in_name(s["url"]), mean=tuple(s["mean"]),
            std=tuple(s["std"]), source=f"segmentation_models_pytorch {encoder} imagenet",
            **common,
        )  # fmt: skip
    base = f"{HF_BASE}/{s['repo_id']}/resolve/{s['revision']}"
    return replace(
        entry, url=f"{base}/model.safetensors", config_url=f"{base}/config.json",
        licence=f"see https://huggingface.co/{s['repo_id']}",
        source=f"segmentation_models_pytorch {encoder} imagenet ({s['repo_id']}@{s['revision'][:10]})",
        **common,
    )  # fmt: skip


# ----------------------------------------------------------------------------- download


def cache_dir() -> Path:
    """Where named weights are kept: ``$GROUNDSYNTH_CACHE/weights``, else
    ``$XDG_CACHE_HOME/groundsynth/weights`` (default ``~/.cache/groundsynth/weights``)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "groundsynth" / "weights"


@dataclass(frozen=True)
class WeightsFile:
    """Weights ready to load: the verified file in the cache and what it was made for."""

    weights: Weights
    path: Path
    sha256: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def record(self) -> dict[str, Any]:
        """JSON-able description for a segmenter's info and a run's manifest."""
        w = self.weights
        return {
            "name": w.name,
            "url": w.url,
            "sha256": self.sha256,
            "path": str(self.path),
            "source": w.source,
            "licence": w.licence,
            "in_channels": w.in_channels,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "inputs": w.inputs,
        }


def fetch_weights(
    name: str,
    encoder: str,
    in_channels: int = 3,
    *,
    progress: ProgressCallback | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> WeightsFile:
    """Resolve ``name`` for ``encoder`` and return its file, downloading it the first time.

    Raises:
        InputError: see :func:`resolve_weights` (raised before any download).
        FetchError: the download failed (the message names the URL) or the file's SHA-256
            does not match (the file is deleted, nothing is kept in the cache).
    """
    weights = resolve_weights(name, encoder, in_channels)
    if weights.url is None:  # resolve_weights fills it for every registered name
        raise InputError(f"weights {weights.name!r} have no download address for {encoder!r}")
    folder = cache_dir() / weights.cache_name
    opts = {"progress": progress, "retries": retries, "timeout": timeout, "backoff": backoff}
    path, digest = _fetch(weights.name, weights.url, folder, weights.sha256, **opts)
    mean, std = weights.mean, weights.std
    if weights.config_url is not None:
        config, _ = _fetch(weights.name, weights.config_url, folder, None, **opts)
        mean, std = _mean_std(config)
    return WeightsFile(weights, path, digest, mean, std)


def _mean_std(config: Path) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    try:
        settings = json.loads(config.read_text())
        return tuple(settings["mean"]), tuple(settings["std"])
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: no usable mean/std (%s); normalisation not checked", config, exc)
        return None, None


def _file_name(url: str) -> str:
    base = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return re.sub(r"[^A-Za-z0-9._-]", "_", base) or "weights.bin"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (several ranks fetching the same file wait)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; downloads there are single-process
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fetch(name: str, url: str, folder: Path, sha256: str | None, **opts: Any) -> tuple[Path, str]:
    """``(path, sha256)`` of ``url`` in ``folder``: downloaded once, verified, then renamed."""
    dest = folder / _file_name(url)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f".{dest.name}.lock"):
        if dest.is_file():
            digest = file_digest(dest)
            if sha256 is None or digest.startswith(sha256):
                logger.info("encoder weights %r: using cached %s", name, dest)
                return dest, digest
            logger.warning(
                "cached %s has SHA-256 %s, not %s...; downloading it again", dest, digest, sha256
            )
            dest.unlink()
        unverified = dest.with_name(dest.name + ".unverified")
        unverified.unlink(missing_ok=True)  # a complete earlier download never verified
        logger.info("downloading encoder weights %r from %s", name, url)
        try:
            download(url, unverified, md5=None, **opts)
        except FetchError as exc:
            raise FetchError(
                f"could not download encoder weights {name!r} from {url}: {exc}. No network? "
                "Download the file once and pass its path: --encoder-weights PATH"
            ) from exc
        digest = file_digest(unverified)
        if sha256 is not None and not digest.startswith(sha256):
            unverified.unlink()
            raise FetchError(
                f"encoder weights {name!r} from {url}: SHA-256 {digest} does not start with the "
                f"expected {sha256}; the download was deleted. Run again to retry"
            )
        os.replace(unverified, dest)
        logger.info("encoder weights %r saved to %s (SHA-256 %s)", name, dest, digest)
        return dest, digest


# ----------------------------------------------------------------------------- key remapping


def _canonical(key: str) -> str:
    # timm's features_only wrappers flatten module paths: stem.0.weight -> stem_0.weight
    return key.replace(".", "_")


def match_encoder_keys(state: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, str]:
    """Map the encoder's keys (``own``) onto a checkpoint's keys (``state``).

    Tries the prefix the checkpoint puts before the encoder's first key (``backbone.``,
    ``encoder.``, ``module.``, ...) and timm's ``model.`` prefix on the encoder side; keys are
    compared exactly, then with ``.`` and ``_`` treated alike (timm's feature wrappers
    flatten module paths). Returns ``{own key: checkpoint key}`` for the best combination;
    keys without a unique match are left out (the caller reports them).
    """
    own_keys = list(own)
    if not own_keys:
        return {}
    strips = ("", "model.")
    prefixes = {"", "module.", "encoder.", "backbone.", "model."}
    for q in strips:
        first = own_keys[0][len(q) :] if own_keys[0].startswith(q) else own_keys[0]
        prefixes.update(k[: -len(first)] for k in state if k.endswith(first) and k != first)
    best: dict[str, str] = {}
    for p in sorted(prefixes):
        exact = {k[len(p) :]: k for k in state if k.startswith(p)}
        loose: dict[str, list[str]] = {}
        for k, full in exact.items():
            loose.setdefault(_canonical(k), []).append(full)
        for q in strips:
            mapping: dict[str, str] = {}
            for o in own_keys:
                if not o.startswith(q):
                    continue
                s = o[len(q) :]
                if s in exact:
                    mapping[o] = exact[s]
                elif len(loose.get(_canonical(s), ())) == 1:
                    mapping[o] = loose[_canonical(s)][0]
            if len(mapping) > len(best):
                best = mapping
    return best
