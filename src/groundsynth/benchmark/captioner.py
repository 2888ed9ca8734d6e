"""Image captioners (transformers ``VisionEncoderDecoderModel``) for the captioning benchmark:
build, caption, save, load.

A :class:`CaptionerSpec` names the model:

- ``model="tiny"`` — built in code, randomly initialised: a ViT encoder on 8 px patches
  (2 layers, width 64, 2 heads) and a GPT-2 decoder with cross-attention (2 layers, width 64,
  2 heads), and a word-level tokenizer whose vocabulary is the words of the training captions
  seen at least ``min_word_count`` times (:func:`build_tokenizer`: NFKC, lower-cased, split on
  white space and punctuation; ``[PAD]``, ``[BOS]``, ``[EOS]``, ``[UNK]``). Nothing is
  downloaded; it learns on a laptop CPU at demo scale and is what the tests use;
- a local checkpoint directory (``save_pretrained`` layout: ``config.json``, weights, the
  tokenizer files and, optionally, ``preprocessor_config.json``) — a captioner saved by this
  benchmark, or a real model fetched beforehand (e.g. a ViT-GPT2 captioner); fine-tuning
  starts from its weights and keeps its tokenizer.

Images are fed as the datasets hold them (8-bit RGB), resized to the encoder's input size with
antialiased bilinear interpolation (torch, not PIL) and normalised with the checkpoint's mean
and standard deviation (the tiny model: 0.5 and 0.5, as ViT's processor).

Training targets are the caption's tokens then ``[EOS]``, cut at ``max_length`` tokens; the
decoder reads ``[BOS]`` then the tokens (teacher forcing). Decoding is greedy
(``num_beams=1``) or beam search, with an explicit generation config (a checkpoint's own
``generation_config.json`` is not used), and special tokens (``[UNK]`` included) are dropped
from the text. :func:`save_captioner` writes safetensors weights with ``save_pretrained``
(never pickle) into a directory that :func:`load_captioner` or ``--model DIR`` reads back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError

torch = lazy_import("torch")

__all__ = [
    "SPECIAL_TOKENS",
    "TINY_DECODER",
    "TINY_ENCODER",
    "CaptionerSpec",
    "ImageCaptioner",
    "build_captioner",
    "build_tokenizer",
    "load_captioner",
    "save_captioner",
]

logger = logging.getLogger(__name__)

#: The tiny tokenizer's special tokens, in vocabulary order (ids 0..3).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
#: The tiny model's ViT encoder (``image_size`` is set from the spec).
TINY_ENCODER: dict[str, Any] = {"image_size": 64, "patch_size": 8, "hidden_size": 64,
                                "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 128}  # fmt: skip
#: The tiny model's GPT-2 decoder (``vocab_size`` and token ids are set from the tokenizer).
TINY_DECODER: dict[str, Any] = {"n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 128,
                                "add_cross_attention": True}  # fmt: skip
_TINY_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ViTImageProcessor's mean and std
_META = "groundsynth_captioner.json"
_PROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class CaptionerSpec:
    """Which captioner: ``model`` (``tiny`` or a local checkpoint directory); for ``tiny`` its
    input ``image_size`` (None: 64), ``min_word_count`` and ``max_vocab`` of its tokenizer;
    ``max_length``: most target tokens per training caption (``[EOS]`` included)."""

    model: str = "tiny"
    image_size: int | None = None
    max_length: int = 64
    min_word_count: int = 2
    max_vocab: int = 20_000

    def __post_init__(self) -> None:
        if self.model == "tiny":
            if self.image_size is not None and (self.image_size < 8 or self.image_size % 8):
                raise InputError(
                    f"the tiny captioner needs image_size >= 8 and divisible by 8, got {self.image_size}"
                )
            if self.max_length >= TINY_DECODER["n_positions"]:
                raise InputError(
                    f"max_length must be < {TINY_DECODER['n_positions']} tokens for the tiny "
                    f"captioner, got {self.max_length}"
                )
        elif self.image_size is not None:
            raise InputError("image_size is for the tiny captioner; a checkpoint has its own")
        if self.max_length < 2:
            raise InputError(f"max_length must be >= 2 tokens, got {self.max_length}")
        if self.min_word_count < 1 or self.max_vocab < len(SPECIAL_TOKENS) + 1:
            raise InputError(
                f"min_word_count must be >= 1 and max_vocab >= 5, got {self.min_word_count}, {self.max_vocab}"
            )

    @property
    def is_tiny(self) -> bool:
        return self.model == "tiny"


def build_tokenizer(texts: Iterable[str], min_word_count: int = 2, max_vocab: int = 20_000) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary is the special tokens then
    the words of ``texts`` seen at least ``min_word_count`` times (at most ``max_vocab``
    entries, most frequent first). Streams ``texts`` once."""
    tokenizers = lazy_import("tokenizers")
    tf = lazy_import("transformers")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words, and runs of punctuation
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # " ." -> "." when joining
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_vocab, min_frequency=min_word_count, special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise InputError(
            f"no word of the training captions occurs {min_word_count} times or more; "
            "lower --min-word-count or give more captions"
        )
    names = dict(zip(("pad_token", "bos_token", "eos_token", "unk_token"), SPECIAL_TOKENS))
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, **names)


class ImageCaptioner:
    """A ``VisionEncoderDecoderModel`` with its tokenizer and image preprocessing.

    ``model``: the ``torch.nn.Module``; ``image_size``, ``mean``, ``std``: its input;
    ``pad_id`` / ``start_id`` / ``eos_id``: padding, the decoder's first token, end of text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: CaptionerSpec,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.image_size = int(image_size)
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        cfg = model.config
        eos = cfg.eos_token_id if cfg.eos_token_id is not None else tokenizer.eos_token_id
        if eos is None:
            raise InputError(f"{spec.model}: the captioner has no end-of-text token")
        self.eos_id = int(eos)
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else eos)
        start = cfg.decoder_start_token_id
        if start is None:
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        self.start_id = int(start)

    def preprocess(self, images: Any) -> Any:
        """uint8 ``(B, H, W, 3)`` (numpy or torch) -> normalised float ``(B, 3, S, S)``."""
        x = images if hasattr(images, "dim") else torch.from_numpy(np.array(images, dtype=np.uint8))
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                align_corners=False,
            )  # fmt: skip
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_targets(self, texts: Sequence[str]) -> tuple[Any, Any, Any]:
        """Teacher-forcing tensors of ``texts``: ``(decoder inputs, labels, attention mask)``,
        each ``(B, T)``; labels are -100 on padding (ignored by the loss)."""
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        n = self.spec.max_length
        inputs = [([self.start_id] + t)[:n] for t in ids]
        labels = [(t + [self.eos_id])[:n] for t in ids]
        width = max(len(x) for x in inputs)
        inp = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        lab = torch.full((len(ids), width), -100, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, (x, y) in enumerate(zip(inputs, labels, strict=True)):
            inp[i, : len(x)] = torch.tensor(x)
            lab[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        return inp, lab, mask

    def loss(self, pixels: Any, inputs: Any, labels: Any, mask: Any) -> Any:
        """Mean token cross-entropy of the teacher-forced targets (padding ignored)."""
        return self.loss_and_features(pixels, inputs, labels, mask)[0]

    def loss_and_features(
        self, pixels: Any, inputs: Any, labels: Any, mask: Any
    ) -> tuple[Any, Any]:
        """:meth:`loss` and, from the same forward pass, the encoder's pooled output: the mean
        of its last hidden states over their tokens, ``(B, encoder hidden size)``."""
        out = self.model(pixel_values=pixels, decoder_input_ids=inputs, decoder_attention_mask=mask)
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
        )
        return loss, out.encoder_last_hidden_state.mean(dim=1)

    @property
    def encoder_width(self) -> int:
        """Width of the encoder's hidden states (what :meth:`loss_and_features` pools)."""
        return int(self.model.config.encoder.hidden_size)

    def generation_config(self, num_beams: int = 1, max_new_tokens: int = 40) -> Any:
        tf = lazy_import("transformers")
        return tf.GenerationConfig(
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
            decoder_start_token_id=self.start_id, bos_token_id=self.start_id,
            eos_token_id=self.eos_id, pad_token_id=self.pad_id,
        )  # fmt: skip

    @torch.no_grad()
    def generate(self, pixels: Any, num_beams: int = 1, max_new_tokens: int = 40) -> list[str]:
        """Captions of preprocessed ``pixels``: greedy (``num_beams=1``) or beam search."""
        out = self.model.generate(
            pixel_values=pixels, generation_config=self.generation_config(num_beams, max_new_tokens)
        )
        texts = self.tokenizer.batch_decode(out.cpu().tolist(), skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def _tiny_model(spec: CaptionerSpec, tokenizer: Any) -> Any:
    tf = lazy_import("transformers")
    ids = {
        k: tokenizer.convert_tokens_to_ids(t) for k, t in zip(("pad", "bos", "eos"), SPECIAL_TOKENS)
    }
    encoder = tf.ViTConfig(**{**TINY_ENCODER, "image_size": spec.image_size or 64})
    decoder = tf.GPT2Config(**TINY_DECODER, vocab_size=len(tokenizer), bos_token_id=ids["bos"],
                            eos_token_id=ids["eos"], pad_token_id=ids["pad"])  # fmt: skip
    cfg = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = (
        ids["bos"],
        ids["pad"],
        ids["eos"],
    )
    return tf.VisionEncoderDecoderModel(config=cfg)


def _image_settings(path: Path, model: Any) -> tuple[int, tuple, tuple]:
    """Input size (the encoder's), mean and std (``preprocessor_config.json``; else ViT's)."""
    size = getattr(model.config.encoder, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not isinstance(size, int):
        raise InputError(f"{path}: the encoder config has no image_size")
    mean, std = _TINY_STATS
    proc = path / _PROCESSOR
    if proc.is_file():
        try:
            data = json.loads(proc.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{proc}: unreadable ({exc})") from None
        if data.get("do_normalize", True):
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        else:
            mean, std = (0.0,) * 3, (1.0,) * 3
    else:
        logger.warning("%s: no %s; normalising with mean 0.5, std 0.5", path, _PROCESSOR)
    return size, mean, std


def _load_checkpoint(spec: CaptionerSpec) -> ImageCaptioner:
    tf = lazy_import("transformers")
    path = Path(spec.model)
    if not (path / "config.json").is_file():
        raise InputError(
            f"{spec.model}: not 'tiny' nor a local checkpoint directory with config.json "
            "(save_pretrained layout: weights, tokenizer files); fetch real models beforehand"
        )
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    try:
        model = tf.VisionEncoderDecoderModel.from_pretrained(path, local_files_only=True)
        tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"{path}: cannot load the captioner ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    size, mean, std = _image_settings(path, model)
    return ImageCaptioner(model, tokenizer, spec, size, mean, std)


def build_captioner(spec: CaptionerSpec, texts: Iterable[str] = ()) -> ImageCaptioner:
    """The captioner of ``spec``: the tiny model (random init; its vocabulary from ``texts``,
    the training captions) or a local checkpoint (``texts`` unused). Nothing is downloaded.

    Raises:
        InputError: no usable checkpoint there, or too few words for a vocabulary.
    """
    if not spec.is_tiny:
        return _load_checkpoint(spec)
    tokenizer = build_tokenizer(texts, spec.min_word_count, spec.max_vocab)
    model = _tiny_model(spec, tokenizer)
    mean, std = _TINY_STATS
    return ImageCaptioner(model, tokenizer, spec, spec.image_size or 64, mean, std)


def save_captioner(
    path: str | os.PathLike[str], captioner: ImageCaptioner, info: dict[str, Any]
) -> None:
    """Write ``captioner`` into the directory ``path`` (replaced as a whole when complete):
    ``save_pretrained`` weights (safetensors) and tokenizer, ``preprocessor_config.json``
    (ViT processor keys) and ``groundsynth_captioner.json`` (spec and ``info``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tf = lazy_import("transformers")
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    try:
        captioner.model.save_pretrained(tmp, safe_serialization=True)
        captioner.tokenizer.save_pretrained(tmp)
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": captioner.image_size, "width": captioner.image_size},
                 "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": list(captioner.mean),
                 "image_std": list(captioner.std)}  # fmt: skip
    (tmp / _PROCESSOR).write_text(json.dumps(processor, indent=2) + "\n")
    meta = {"format": "groundsynth-captioner", "spec": asdict(captioner.spec), "info": info}
    (tmp / _META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_captioner(path: str | os.PathLike[str]) -> tuple[ImageCaptioner, dict[str, Any]]:
    """A captioner saved by :func:`save_captioner` (or any local checkpoint directory) and
    its saved ``info`` ({} for a foreign checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: captioner directory not found")
    info: dict[str, Any] = {}
    spec = CaptionerSpec(model=str(path))
    meta = path / _META
    if meta.is_file():
        try:
            data = json.loads(meta.read_text())
            info = dict(data.get("info") or {})
            saved = CaptionerSpec(**{**data["spec"], "model": "tiny"})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{meta}: not a captioner description ({exc})") from None
        spec = CaptionerSpec(model=str(path), max_length=saved.max_length)
    return _load_checkpoint(spec), info
