"""The ``transformers`` captioner: local VLMs and LLMs through the transformers auto classes.

``model`` is a Hugging Face model id or a local folder (``save_pretrained`` layout). The
model kind follows its config unless ``kind`` says otherwise: a config with a
``vision_config`` (Qwen3-VL, Gemma 3, LLaVA, Idefics, ...) loads with
``AutoModelForImageTextToText`` + ``AutoProcessor``; any other with
``AutoModelForCausalLM`` + ``AutoTokenizer`` (Qwen3, Llama, Gemma text models). The
``hybrid`` and ``vision`` streams need an image-text model; ``text`` works with either (a
VLM then gets no image).

Prompts are the stream's template (:mod:`groundsynth.caption.prompts`) put through the
model's chat template (with ``{"type": "image"}`` before the text for image streams;
``enable_thinking`` is set to ``thinking`` (default off) for templates that read it, as
Qwen3's do); replies are cleaned by :func:`~groundsynth.caption.base.clean_caption`.

Decoding:

- ``temperature`` 0 (default): greedy, batched ``batch_size`` prompts at a time with left
  padding; deterministic for a given model, dtype and device, and batching does not
  change the result (up to floating-point ties);
- ``temperature`` > 0: seeded sampling, one image at a time (``num_return_sequences`` =
  ``n``) after ``torch.manual_seed`` of a seed derived from (seed, image key), so an
  image's captions do not depend on what else is in the batch or on a resumed run.

``device`` ``"auto"`` picks CUDA, then Apple MPS, then CPU; ``dtype`` ``"auto"`` picks
bfloat16 on a GPU that supports it and float32 otherwise (CPU-safe). The model loads on
first use. Weights come from the local Hugging Face cache or the hub as transformers
decides (set ``HF_HUB_OFFLINE=1`` to forbid downloads).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from groundsynth._optional import lazy_import
from groundsynth.caption.base import (
    BatchCaptioner,
    CaptionJob,
    CaptionResult,
    clean_caption,
    item_seed,
)
from groundsynth.caption.facts import GroundingFacts
from groundsynth.caption.prompts import STREAMS, load_template
from groundsynth.errors import InputError

__all__ = ["TransformersCaptioner", "TransformersConfig", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

Kind = Literal["auto", "image-text-to-text", "causal-lm"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TransformersConfig:
    """Settings of the ``transformers`` captioner."""

    model: str
    stream: str = "hybrid"
    prompt: str | None = None  # a prompt file or a folder of <stream>.txt; None: built in
    system_prompt: str | None = None
    kind: Kind = "auto"
    device: str = "auto"
    dtype: DType = "auto"
    batch_size: int = 8
    max_new_tokens: int = 160
    temperature: float = 0.0
    top_p: float = 1.0
    thinking: bool = False
    trust_remote_code: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InputError("the transformers captioner needs a model id or a local folder")
        if self.stream not in STREAMS:
            raise InputError(f"unknown stream {self.stream!r}; valid streams: {', '.join(STREAMS)}")
        if self.kind not in ("auto", "image-text-to-text", "causal-lm"):
            raise InputError(
                f"unknown kind {self.kind!r}; valid: auto, image-text-to-text, causal-lm"
            )
        if not _DEVICE.match(self.device):
            raise InputError(f"device must be auto, cpu, mps, cuda or cuda:N; got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InputError(
                f"unknown dtype {self.dtype!r}; valid: auto, float32, bfloat16, float16"
            )
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise InputError("batch_size and max_new_tokens must be >= 1")
        if not 0.0 <= self.temperature <= 2.0 or not 0.0 < self.top_p <= 1.0:
            raise InputError("need 0 <= temperature <= 2 and 0 < top_p <= 1")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``mps`` if available, else ``cpu``."""
    if device != "auto":
        return device
    torch = lazy_import("torch")
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype for ``dtype`` on ``device`` (``auto``: bf16 on capable GPUs, else fp32)."""
    torch = lazy_import("torch")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class TransformersCaptioner(BatchCaptioner):
    """Captions from a local transformers model (see the module docstring)."""

    name = "transformers"

    def __init__(self, config: TransformersConfig | None = None, /, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise InputError("pass either a TransformersConfig or keyword settings, not both")
        self.config = config if config is not None else TransformersConfig(**kwargs)
        self._template = load_template(self.config.stream, self.config.prompt)
        self._model: Any = None
        self._processor: Any = None  # an AutoProcessor (VLM) or an AutoTokenizer (LLM)
        self._vision = False
        self.device = ""

    def __repr__(self) -> str:
        c = self.config
        return f"TransformersCaptioner(model={c.model!r}, stream={c.stream!r})"

    @property
    def needs_image(self) -> bool:
        return self.config.stream != "text"

    def describe(self) -> dict[str, Any]:
        """Settings for run records."""
        return {"backend": self.name, **asdict(self.config), "prompt_source": self._template.source}

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model and its processor/tokenizer (done on first use)."""
        if self._model is not None:
            return
        torch = lazy_import("torch")
        tf = lazy_import("transformers")
        c = self.config
        opts: dict[str, Any] = {"trust_remote_code": c.trust_remote_code, "revision": c.revision}
        try:
            model_config = tf.AutoConfig.from_pretrained(c.model, **opts)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot load model {c.model!r}: {exc}. Give a Hugging Face model id or a "
                "local folder written by save_pretrained"
            ) from None
        vision = hasattr(model_config, "vision_config") if c.kind == "auto" else None
        self._vision = vision if vision is not None else c.kind == "image-text-to-text"
        if self.needs_image and not self._vision:
            raise InputError(
                f"model {c.model!r} has no vision encoder; the {c.stream} stream needs an "
                "image-text-to-text model (e.g. a Qwen3-VL or Gemma 3 checkpoint)"
            )
        self.device = resolve_device(c.device)
        dtype = resolve_dtype(c.dtype, self.device)
        auto_model = tf.AutoModelForImageTextToText if self._vision else tf.AutoModelForCausalLM
        auto_proc = tf.AutoProcessor if self._vision else tf.AutoTokenizer
        try:
            processor = auto_proc.from_pretrained(c.model, **opts)
            model = auto_model.from_pretrained(c.model, dtype=dtype, **opts)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot load model {c.model!r} ({auto_model.__name__}): {exc}"
            ) from None
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"  # decoder-only batched generation
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not (getattr(processor, "chat_template", None) or tokenizer.chat_template):
            raise InputError(
                f"model {c.model!r} has no chat template; use an instruction-tuned checkpoint"
            )
        model.to(self.device)
        model.eval()
        self._model, self._processor, self._torch = model, processor, torch
        logger.info("loaded %s (%s, %s) on %s", c.model, type(model).__name__, dtype, self.device)

    # -- prompts ---------------------------------------------------------------------------
    def messages(self, facts: GroundingFacts) -> list[dict[str, Any]]:
        """The chat messages of one image (an image placeholder first for hybrid/vision)."""
        prompt = self._template.render(facts)
        content: Any = prompt
        if self._vision:  # processors' templates expect content parts
            content = [{"type": "text", "text": prompt}]
            if self.needs_image:
                content.insert(0, {"type": "image"})
        msgs = [{"role": "user", "content": content}]
        if self.config.system_prompt:
            sys_content: Any = self.config.system_prompt
            if self._vision:
                sys_content = [{"type": "text", "text": sys_content}]
            msgs.insert(0, {"role": "system", "content": sys_content})
        return msgs

    def prompt_text(self, facts: GroundingFacts) -> str:
        """The chat-formatted prompt string of one image."""
        self.load()
        proc = self._processor
        tokenizer = getattr(proc, "tokenizer", proc)
        template = getattr(proc, "chat_template", None) or tokenizer.chat_template or ""
        extra = {"enable_thinking": self.config.thinking} if "enable_thinking" in template else {}
        return proc.apply_chat_template(
            self.messages(facts), tokenize=False, add_generation_prompt=True, **extra
        )

    def _encode(self, texts: list[str], images: list[Any] | None) -> dict[str, Any]:
        torch = self._torch
        if self._vision:
            kwargs: dict[str, Any] = {
                "text": texts,
                "padding": True,
                "return_tensors": "pt",
                "add_special_tokens": False,  # the chat template holds them
            }
            if images is not None:
                kwargs["images"] = images
            enc = self._processor(**kwargs)
        else:
            enc = self._processor(
                texts, padding=True, return_tensors="pt", add_special_tokens=False
            )
        dtype = self._model.dtype
        return {
            k: v.to(self.device, dtype) if torch.is_floating_point(v) else v.to(self.device)
            for k, v in enc.items()
            if hasattr(v, "to")
        }

    def _generate(self, enc: dict[str, Any], sample: bool, n: int) -> list[str]:
        c = self.config
        tokenizer = getattr(self._processor, "tokenizer", self._processor)
        opts: dict[str, Any] = {
            "max_new_tokens": c.max_new_tokens,
            "num_beams": 1,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if sample:
            opts.update(do_sample=True, temperature=c.temperature, top_p=c.top_p, top_k=None)
            opts["num_return_sequences"] = n
        else:
            opts.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self._torch.inference_mode():
            out = self._model.generate(**enc, **opts)
        new = out[:, enc["input_ids"].shape[1] :]
        return [clean_caption(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]

    # -- the captioner interface -----------------------------------------------------------
    def _pil(self, job: CaptionJob) -> Any:
        from PIL import Image

        if job.image is None:
            raise InputError(f"{job.seed_key}: the {self.config.stream} stream needs the image")
        return job.image if isinstance(job.image, Image.Image) else Image.fromarray(job.image)

    def caption_batch(
        self, jobs: Sequence[CaptionJob], *, n: int = 1, seed: int = 0
    ) -> list[CaptionResult]:
        """Caption ``jobs`` (greedy: ``batch_size`` at a time; sampling: one at a time)."""
        if n < 1:
            raise InputError(f"n must be >= 1; got {n}")
        sample = self.config.temperature > 0
        if n > 1 and not sample:
            raise InputError(
                f"n={n} captions per image need sampling: greedy decoding (temperature 0) "
                "repeats one caption; set a temperature > 0"
            )
        self.load()
        results: list[CaptionResult | None] = [None] * len(jobs)
        ready: list[tuple[int, str, Any]] = []
        for i, job in enumerate(jobs):
            try:
                image = self._pil(job) if self.needs_image else None
            except (InputError, TypeError, ValueError) as exc:
                results[i] = CaptionResult(error=f"unusable image: {exc}")
                continue
            ready.append((i, self.prompt_text(job.facts), image))
        step = 1 if sample else self.config.batch_size
        for start in range(0, len(ready), step):
            part = ready[start : start + step]
            texts = [t for _, t, _ in part]
            images = [im for _, _, im in part] if self.needs_image else None
            if sample:
                self._torch.manual_seed(item_seed(seed, jobs[part[0][0]].seed_key))
            outs = self._generate(self._encode(texts, images), sample, n)
            per = n if sample else 1
            for j, (i, _, _) in enumerate(part):
                caps = tuple(outs[j * per : (j + 1) * per])
                if all(caps):
                    results[i] = CaptionResult(captions=caps)
                else:
                    results[i] = CaptionResult(error="the model returned an empty caption")
        return [r if r is not None else CaptionResult(error="not captioned") for r in results]

    def close(self) -> None:
        """Drop the model (frees its memory once nothing else holds it)."""
        self._model = self._processor = None
