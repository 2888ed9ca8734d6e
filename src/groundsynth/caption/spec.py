"""Stream specs and the settings of a caption run (:mod:`groundsynth.caption.run`).

A stream spec reads ``STREAM=BACKEND[:MODEL][@COLUMN]``: ``hybrid=openai:gemma3:4b``,
``text=template``, ``vision=transformers:Qwen/Qwen3-VL-8B-Instruct@vision_qwen3-vl-8b``.
The column is ``<stream>_<label>`` where the label is the model's last path component,
lower-cased, ``:`` and other odd characters turned into ``-`` (``gemma3:4b`` ->
``gemma3-4b``), or the back end's name without a model (``text_template``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from groundsynth.caption import list_captioners
from groundsynth.caption.prompts import STREAMS
from groundsynth.data.contract import PERCENT_COLUMNS
from groundsynth.distributed import check_executor_options
from groundsynth.errors import InputError

__all__ = ["CaptionRunConfig", "StreamSpec", "model_label"]

_COLUMN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_BACKENDS_NEED_MODEL = ("openai", "transformers")


def model_label(model: str) -> str:
    """A column label of a model name: ``Qwen/Qwen3-VL-8B`` -> ``qwen3-vl-8b``,
    ``gemma3:4b`` -> ``gemma3-4b``, ``/models/qwen3-4b/`` -> ``qwen3-4b``."""
    last = model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    label = re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-.")
    return label or "model"


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a run: prompt stream, back end, model and table column."""

    stream: str
    backend: str
    model: str | None = None
    name: str | None = None  # the column; default <stream>_<label>

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise InputError(f"unknown stream {self.stream!r}; valid streams: {', '.join(STREAMS)}")
        if self.backend not in list_captioners():
            raise InputError(
                f"unknown captioner {self.backend!r}; valid captioners: "
                f"{', '.join(list_captioners())}"
            )
        if self.backend in _MODEL_BACKENDS_NEED_MODEL and not self.model:
            raise InputError(
                f"the {self.backend} back end needs a model: {self.stream}={self.backend}:MODEL"
            )
        if self.backend == "template" and self.model:
            raise InputError(f"the template back end takes no model; got {self.model!r}")
        col = self.column
        if not _COLUMN.match(col) or col in PERCENT_COLUMNS or re.search(r"_\d+$", col):
            raise InputError(
                f"bad column name {col!r}: use letters, digits, '.', '_' and '-', not a "
                "class or id column, and no '_<number>' ending (kept for extra captions)"
            )

    @property
    def column(self) -> str:
        if self.name:
            return self.name
        return f"{self.stream}_{model_label(self.model) if self.model else self.backend}"

    @classmethod
    def parse(cls, text: str) -> StreamSpec:
        """``STREAM=BACKEND[:MODEL][@COLUMN]`` (see the module docstring)."""
        stream, sep, rest = text.strip().partition("=")
        if not sep or not rest:
            raise InputError(
                f"bad stream spec {text!r}; expected STREAM=BACKEND[:MODEL][@COLUMN], e.g. "
                "hybrid=openai:qwen3-vl-8b or text=template"
            )
        name = None
        if "@" in rest:
            rest, name = rest.rsplit("@", 1)
        backend, _, model = rest.partition(":")
        return cls(
            stream.strip(), backend.strip(), model.strip() or None, (name or "").strip() or None
        )

    def __str__(self) -> str:
        model = f":{self.model}" if self.model else ""
        return f"{self.stream}={self.backend}{model}@{self.column}"


@dataclass(frozen=True)
class CaptionRunConfig:
    """Settings of :func:`caption_dataset`. Model options apply to every model stream.

    ``executor="ray"`` captions each batch of the template and transformers streams as a
    Ray task (``ray_address``, ``ray_cpus`` / ``ray_gpus`` per task; see
    :mod:`groundsynth.caption.batches`); openai streams are captioned here either way.
    """

    dataset: str
    streams: tuple[StreamSpec, ...] = (StreamSpec("text", "template"),)
    n: int = 1
    seed: int = 0
    splits: tuple[str, ...] = ()  # () = every split
    prompt_dir: str | None = None  # a folder of <stream>.txt prompt templates
    batch_size: int = 16
    chunk_size: int = 10_000  # images per journal file
    system_prompt: str | None = None
    temperature: float = 0.0
    max_new_tokens: int = 160
    # openai back end: base_urls, when given, lists the servers (base_url: the one server);
    # they serve one model alike, so they are not part of a column's identity (run.py)
    base_url: str = "http://127.0.0.1:8000/v1"
    base_urls: tuple[str, ...] = ()
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 4
    # transformers back end
    device: str = "auto"
    dtype: str = "auto"
    # where batches run (groundsynth.distributed); not part of any column's identity: the
    # captions are the same whichever executor made them
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: start a local Ray cluster for the run
    ray_cpus: float = 1.0  # per Ray task (one batch)
    ray_gpus: float = 0.0  # per Ray task; a fraction shares a GPU

    def __post_init__(self) -> None:
        if not self.streams:
            raise InputError("give at least one stream, e.g. --stream text=template")
        cols = [s.column for s in self.streams]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise InputError(f"two streams write column(s) {dup}; name one with @COLUMN")
        check_executor_options(self.executor, self.ray_address, self.ray_cpus, self.ray_gpus)
        for name in ("n", "batch_size", "chunk_size", "concurrency"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1; got {getattr(self, name)}")
        models = [s for s in self.streams if s.backend != "template"]
        if self.n > 1 and models and self.temperature == 0:
            raise InputError(
                f"n={self.n} captions per image from {models[0]} need sampling; set a "
                "temperature > 0 (greedy decoding repeats one caption)"
            )
