"""Named encoder weights: registry, download cache (against a loopback server), key remapping
and what runs record. No test reaches the internet: every URL points at 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch

from groundsynth.benchmark import weights as W
from groundsynth.benchmark.model import build_model, load_segmenter, save_segmenter
from groundsynth.errors import FetchError, InputError
from tests.benchmark.conftest import TINY
from tests.loopback import serve

FAST = {"retries": 0, "timeout": 5.0, "backoff": 0.001}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and records every request path."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"{self.base}/{path}"


class _Handler(BaseHTTPRequestHandler):
    timeout = 5

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state: Server = self.server.state  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0].lstrip("/")
        state.requests.append(path)
        data = state.files.get(path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve(_Handler, lambda port: Server(base=f"http://127.0.0.1:{port}"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path, server) -> Path:
    """A temporary cache, Hugging Face pointed at the loopback server, and a download function
    that refuses any other host (so a slip can never reach the internet)."""
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(W, "HF_BASE", server.base)
    real = W.download

    def loopback_only(url, dest, **kw):
        assert url.startswith(server.base), f"test tried to download {url}"
        return real(url, dest, **{**kw, **FAST})

    monkeypatch.setattr(W, "download", loopback_only)
    return tmp_path / "cache" / "weights"


def _timm_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """A full timm model's state dict (classifier head included), as timm/torchgeo ship it."""
    import timm

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model(name).state_dict().items()}


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _register(monkeypatch, url: str, sha256: str | None, name: str = "test-weights") -> None:
    entry = W.Weights(
        name=name, description="tiny test weights", source="this test", licence="CC0",
        encoders=("tu-test_resnet",), url=url, sha256=sha256, mean=(0.0,) * 3, std=(1.0,) * 3,
        cache_name=name,
    )  # fmt: skip
    monkeypatch.setitem(W.WEIGHTS, name, entry)


def _assert_loaded(model, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Every encoder tensor equals the served one (encoder keys are timm's under ``model.``)."""
    own = model.net.encoder.state_dict()
    assert own
    for key, value in own.items():
        served = state[prefix + key.removeprefix("model.")]
        assert torch.equal(value, served), key


def _files(folder: Path) -> list[str]:
    """Visible files under ``folder`` (lock files are hidden)."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


# --------------------------------------------------------------------------- registry


def test_registry_lists_torchgeo_ssl4eo_weights_with_their_hashes_and_refuses_unknown_names():
    names = W.list_weights()
    assert names[0] == "imagenet"
    assert {"ssl4eo-s12-rgb-moco-resnet18", "ssl4eo-s12-all-moco-resnet50"} <= set(names)
    for name in names[1:]:
        w = W.get_weights(name)
        file = w.url.rsplit("/", 1)[1]
        # the pinned torchgeo file; its name carries the first 8 hex digits of its SHA-256
        assert w.url.startswith("https://hf.co/torchgeo/") and "/resolve/" in w.url
        assert re.fullmatch(r"[0-9a-f]{8}", w.sha256) and file.endswith(f"-{w.sha256}.pth")
        arch = name.rsplit("-", 1)[1]
        assert w.encoders == (arch, f"tu-{arch}") and arch in file
        assert w.in_channels == (3 if "-rgb-" in name else 13) == len(w.bands)
        assert "torchgeo.models.ResNet" in w.source and w.licence.startswith("CC-BY-4.0")
        assert w.mean == (0.0,) * w.in_channels and "DN / 10000" in w.inputs
    assert W.get_weights(" ImageNet ").name == "imagenet"
    assert W.is_weights_name("imagenet") and not W.is_weights_name("./imagenet")
    assert not W.is_weights_name(Path("imagenet")) and not W.is_weights_name(None)
    with pytest.raises(InputError, match="unknown encoder weights 'imagenet21k'; valid names: "
                       "imagenet, ssl4eo-s12-rgb-moco-resnet18"):  # fmt: skip
        W.get_weights("imagenet21k")


def test_imagenet_is_resolved_from_smp_and_timm_metadata():
    import segmentation_models_pytorch as smp
    import timm

    s = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    w = W.resolve_weights("imagenet", "resnet18")
    assert w.url == f"{W.HF_BASE}/{s['repo_id']}/resolve/{s['revision']}/model.safetensors"
    assert w.config_url == w.url.replace("model.safetensors", "config.json")
    assert w.encoders == ("resnet18",) and w.cache_name == "imagenet/resnet18"
    cfg = timm.models.get_pretrained_cfg("test_resnet")
    t = W.resolve_weights("imagenet", "tu-test_resnet")
    assert t.url == f"{W.HF_BASE}/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    assert t.mean == tuple(cfg.mean) and t.licence == cfg.license
    with pytest.raises(InputError, match="no imagenet weights for encoder 'resnext101_32x4d'"):
        W.resolve_weights("imagenet", "resnext101_32x4d")


def test_weights_that_do_not_fit_are_refused_before_any_download(server, offline, tmp_path):
    from groundsynth.benchmark.segmentation import BenchmarkConfig

    with pytest.raises(InputError, match="'ssl4eo-s12-rgb-moco-resnet50' are for encoder "
                       "resnet50 / tu-resnet50, not 'resnet18'; pass --encoder resnet50"):  # fmt: skip
        build_model("unet", "resnet18", "ssl4eo-s12-rgb-moco-resnet50", encoder_depth=3)
    with pytest.raises(InputError, match="take 13-band input .*B8A.*; the model has 3 band"):
        build_model("unet", "resnet18", "ssl4eo-s12-all-moco-resnet18", encoder_depth=3)
    with pytest.raises(InputError, match="are for encoder resnet18"):
        BenchmarkConfig(
            out=str(tmp_path / "b"), real=str(tmp_path), encoder="resnet34",
            encoder_weights="ssl4eo-s12-rgb-moco-resnet18",
        )  # fmt: skip
    assert server.requests == [] and _files(offline) == []


# --------------------------------------------------------------------------- download and load


def test_named_weights_are_downloaded_once_verified_loaded_and_recorded(
    server, offline, monkeypatch, tmp_path
):
    state = _timm_state("test_resnet", seed=3)
    served = {f"backbone.{k}": v for k, v in state.items()}  # torchgeo-style prefix, fc head kept
    data = _torch_bytes(served)
    sha = hashlib.sha256(data).hexdigest()
    url = server.serve("w/test_resnet-0123abcd.pth", data)
    _register(monkeypatch, url, sha[:8])

    model = build_model("unet", encoder_weights="test-weights", normalisation="none", **TINY)
    _assert_loaded(model, served, prefix="backbone.")
    assert server.requests == ["w/test_resnet-0123abcd.pth"]
    assert _files(offline) == ["test-weights/test_resnet-0123abcd.pth"]
    record = model.info["encoder_weights"]
    assert record["name"] == "test-weights" and record["url"] == url
    assert record["sha256"] == sha and record["normalisation_expected"] == "none"
    assert hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest() == sha

    # second use: from the cache, no request
    again = build_model("fpn", encoder_weights="test-weights", normalisation="none", **TINY)
    _assert_loaded(again, served, prefix="backbone.")
    assert len(server.requests) == 1

    # the checkpoint carries the record
    _, info = load_segmenter(save_segmenter(tmp_path / "m.pt", model))
    assert info["encoder_weights"]["sha256"] == sha and info["encoder_weights"]["url"] == url

    # a cached file changed on disk fails its check and is fetched again
    Path(record["path"]).write_bytes(b"garbage")
    build_model("unet", encoder_weights="test-weights", normalisation="none", **TINY)
    assert len(server.requests) == 2


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(server, offline, monkeypatch):
    url = server.serve("w/bad.pth", _torch_bytes(_timm_state("test_resnet", seed=0)))
    _register(monkeypatch, url, "deadbeef")
    with pytest.raises(FetchError, match=r"SHA-256 [0-9a-f]{64} does not start with the "
                       "expected deadbeef; the download was deleted"):  # fmt: skip
        build_model("unet", encoder_weights="test-weights", **TINY)
    assert server.requests == ["w/bad.pth"]
    assert _files(offline) == []  # neither the file nor a partial or unverified copy


def test_a_failed_download_names_the_url_and_the_offline_way_out(server, offline, monkeypatch):
    url = f"{server.base}/w/missing-0123abcd.pth"
    _register(monkeypatch, url, None)
    with pytest.raises(FetchError) as err:
        build_model("unet", encoder_weights="test-weights", **TINY)
    msg = str(err.value)
    assert "HTTP 404" in msg and url in msg and "'test-weights'" in msg
    assert "No network? Download the file once and pass its path" in msg
    assert _files(offline) == []


def test_imagenet_for_a_timm_encoder_downloads_timms_file_and_warns_on_normalisation(
    server, offline, caplog
):
    import timm
    from safetensors.torch import save

    state = _timm_state("test_resnet", seed=5)  # timm's own names, no prefix
    hub_id = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    server.serve(f"{hub_id}/resolve/main/model.safetensors", save(state))
    with caplog.at_level(logging.WARNING, logger="groundsynth.benchmark.model"):
        model = build_model("unet", encoder_weights="imagenet", **TINY)
    _assert_loaded(model, state)
    assert _files(offline) == ["imagenet/tu-test_resnet/model.safetensors"]
    record = model.info["encoder_weights"]
    assert record["name"] == "imagenet" and record["mean"] == [0.5, 0.5, 0.5]
    assert record["normalisation_expected"] is None  # timm's 0.5/0.5 is no built-in option
    assert "mean [0.5, 0.5, 0.5]" in caplog.text and "normalisation 'imagenet'" in caplog.text


def test_imagenet_for_an_smp_encoder_reads_mean_std_from_smp_hub_config(server, offline):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save

    s = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    torch.manual_seed(7)
    state = smp.encoders.get_encoder("resnet18", depth=3).state_dict()
    base = f"{s['repo_id']}/resolve/{s['revision']}"
    server.serve(f"{base}/model.safetensors", save(state))
    config = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    server.serve(f"{base}/config.json", json.dumps(config).encode())
    model = build_model("unet", "resnet18", "imagenet", encoder_depth=3)
    for key, value in model.net.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.info["encoder_weights"]["normalisation_expected"] == "imagenet"
    assert sorted(server.requests) == [f"{base}/config.json", f"{base}/model.safetensors"]


def test_local_files_with_timm_flattened_names_load_and_band_mismatch_is_named(tmp_path):
    state = _timm_state("test_convnext", seed=1)  # stem.0.weight -> encoder's model.stem_0.weight
    path = tmp_path / "convnext.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build_model("unet", "tu-test_convnext", path, encoder_depth=3, decoder_width=4)
    own = model.net.encoder.state_dict()
    for key, value in own.items():
        served = state[re.sub(r"^(stem|stages)_(\d+)", r"\1.\2", key.removeprefix("model."))]
        assert torch.equal(value, served), key
    record = model.info["encoder_weights"]
    assert record["name"] is None and record["path"] == str(path.resolve())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InputError, match="made for 3 input band.s., the model has 4"):
        build_model("unet", "tu-test_convnext", path, in_channels=4, encoder_depth=3,
                    normalisation="none")  # fmt: skip


def test_a_benchmark_run_records_the_named_weights(server, monkeypatch, tiny_dataset, tmp_path):
    from groundsynth.benchmark.segmentation import BenchmarkConfig, run_segmentation_benchmark

    data = _torch_bytes(_timm_state("test_resnet", seed=4))
    sha = hashlib.sha256(data).hexdigest()
    _register(monkeypatch, server.serve("w/run.pth", data), sha)
    cfg = BenchmarkConfig(
        out=str(tmp_path / "b"), real=str(tiny_dataset), seeds=(0,), batch_size=4, workers=0,
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
        progress=False, encoder_weights="Test-Weights", normalisation="none", **TINY,
    )  # fmt: skip
    assert cfg.resolved().encoder_weights == "test-weights"  # a name, not a path
    run_segmentation_benchmark(cfg)
    assert server.requests == ["w/run.pth"]  # pre-check and training share one download
    out = tmp_path / "b"
    assert "encoder_weights: test-weights" in (out / "config.yaml").read_text()
    run_dir = out / "runs" / "unet" / "real" / "seed0"
    for manifest in (out / "manifest.json", run_dir / "manifest.json"):
        record = json.loads(manifest.read_text())["encoder_weights"]
        assert (record["name"], record["sha256"]) == ("test-weights", sha), manifest
    _, info = load_segmenter(run_dir / "segmenter.pt")
    assert info["encoder_weights"]["sha256"] == sha
