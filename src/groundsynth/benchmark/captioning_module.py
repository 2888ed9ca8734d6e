"""Training, decoding and scoring an image captioner on image–caption pairs (Lightning).

Training: every epoch shows each training image once with one of its captions drawn at random
(torch's generator, so it follows the run's seed); the loss is the teacher-forced token
cross-entropy of that caption (padding ignored, :meth:`ImageCaptioner.loss`). Optimiser:
AdamW (no decay on gains and biases) with a linear warm-up over the first ``warmup`` of the
steps, then cosine decay to zero.

Composition-aware training (``composition_weight`` > 0, where the training images' class
shares are known): a linear head on the encoder's pooled output (the mean of its last hidden
states) predicts the image's 7 class shares, and ``composition_weight`` times
:func:`composition_loss` (the KL divergence of the predicted shares from the map's) is added
to the caption loss. The head serves training only: it is not saved, and captioning is
unchanged. Without the term the tiny captioner at demo scale (region A: 186 training images)
learns the captions' language long before its encoder tells images apart and writes one or
two sentences for every test image; with it, the encoder's tokens, which the decoder reads
through cross-attention, carry the classes the captions name, and after ~400 steps the
captions follow the images (figures in ``experiment/presets.py``).

Validation (every ``val_every`` epochs and at the last step): CIDEr-D of the greedy captions
of the validation images against their captions (the COCO toolkit's, via
:func:`~groundsynth.evaluate.captioning.score_corpus`: PTB tokenisation runs in Java, about a
quarter of a second per round). CIDEr rather than BLEU-4 because it is the metric captioning
papers select on and it rewards the image-specific words (the classes) over the template
words every caption shares; the Java it needs is needed for testing anyway. The module keeps
the weights of the best round in memory (:attr:`CaptionerModule.best_state`; the first of
equal scores), which are the ones tested. Every process decodes the whole validation set.

:func:`caption_pairs` decodes a pair set's images in batches; :func:`score_captions` scores
streamed captions with the COCO metrics and, where the images' class shares are known, with
caption ↔ map consistency (:mod:`groundsynth.evaluate.caption_consistency`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.benchmark.captioner import ImageCaptioner
from groundsynth.benchmark.pairs import PairSet
from groundsynth.benchmark.retrieval_module import PairImages, warmup_cosine_adamw
from groundsynth.classes import NUM_CLASSES
from groundsynth.evaluate.captioning import CaptioningScorer, score_corpus

torch = lazy_import("torch")
L = lazy_import("lightning.pytorch")

__all__ = [
    "MONITOR",
    "CaptionImages",
    "CaptionerModule",
    "CaptioningOptim",
    "Consistency",
    "caption_pairs",
    "composition_loss",
    "reference_consistency",
    "references",
    "score_captions",
]

#: Logged value that early stopping and the kept weights follow.
MONITOR = "val/cider"

Compositions = Mapping[str, Sequence[float]]


@dataclass(frozen=True)
class CaptioningOptim:
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1


class CaptionImages(PairImages):
    """:class:`~groundsynth.benchmark.retrieval_module.PairImages` of a captioner. ``shares``:
    per image of the concatenated sets, its class fractions ``(n_images, 7)``, NaN rows where
    unknown; given, a training item is ``(pixels, caption, shares)``."""

    def __init__(
        self,
        sets: Sequence[PairSet],
        captioner: ImageCaptioner,
        train: bool,
        shares: np.ndarray | None = None,
    ) -> None:
        super().__init__(sets, captioner, train)
        if shares is not None and np.shape(shares) != (self.set.n_images, NUM_CLASSES):
            raise ValueError(
                f"shares must be ({self.set.n_images}, {NUM_CLASSES}), got {np.shape(shares)}"
            )
        self.shares = None if shares is None else np.asarray(shares, dtype=np.float32)

    @property
    def captioner(self) -> ImageCaptioner:
        return self.encoder

    def __getitem__(self, i: int) -> Any:
        item = super().__getitem__(i)
        if self.train and self.shares is not None:
            return (*item, self.shares[i])
        return item


def _train_collate(captioner: ImageCaptioner) -> Callable[[list[tuple]], tuple]:
    def collate(batch: list[tuple]) -> tuple[Any, Any, Any, Any, Any]:
        inputs, labels, mask = captioner.encode_targets([b[1] for b in batch])
        shares = torch.from_numpy(np.stack([b[2] for b in batch])) if len(batch[0]) > 2 else None
        return torch.stack([b[0] for b in batch]), inputs, labels, mask, shares

    return collate


def composition_loss(logits: Any, shares: Any) -> Any:
    """Mean over images of KL(shares ‖ softmax(logits)) = Σ_c p_c (log p_c − log q_c), with
    ``p`` an image's class fractions (rows summing to 1; 0 log 0 = 0) and ``q`` the head's
    prediction, both ``(B, 7)``. Rows of ``shares`` holding NaN (unknown composition) are left
    out; with none known it is 0 (and still part of the graph, as DDP needs)."""
    known = ~torch.isnan(shares).any(dim=1)
    if not bool(known.any()):
        return logits.sum() * 0.0
    p = shares[known].to(logits.device, torch.float32)
    log_q = torch.log_softmax(logits[known].float(), dim=-1)
    return (torch.special.xlogy(p, p) - p * log_q).sum(dim=-1).mean()


def train_loader(
    dataset: CaptionImages, batch_size: int, workers: int, seed: int, world: int, rank: int
) -> Any:
    """Shuffled (seeded) training loader; a seeded DistributedSampler when ``world > 1``."""
    kwargs: dict[str, Any] = {"batch_size": batch_size, "num_workers": workers,
                              "persistent_workers": workers > 0, "drop_last": len(dataset) > batch_size,
                              "collate_fn": _train_collate(dataset.captioner)}  # fmt: skip
    if world > 1:
        kwargs["sampler"] = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed
        )
    else:
        kwargs["shuffle"] = True
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def eval_loader(
    pairs: PairSet, captioner: ImageCaptioner, batch_size: int, workers: int = 0
) -> Any:
    return torch.utils.data.DataLoader(
        CaptionImages([pairs], captioner, train=False), batch_size=batch_size,
        num_workers=workers, shuffle=False,
    )  # fmt: skip


def caption_pairs(
    captioner: ImageCaptioner,
    pairs: PairSet,
    *,
    batch_size: int = 64,
    num_beams: int = 1,
    max_new_tokens: int = 40,
    device: str = "cpu",
    workers: int = 0,
) -> Iterator[tuple[int, str]]:
    """``(image index, caption)`` of every image of ``pairs``, in order, a batch at a time
    (eval mode)."""
    captioner.model.eval()
    for index, pixels in eval_loader(pairs, captioner, batch_size, workers):
        texts = captioner.generate(pixels.to(device), num_beams, max_new_tokens)
        yield from zip((int(i) for i in index), texts, strict=True)


def references(pairs: PairSet) -> list[list[str]]:
    """Per image of ``pairs``, its captions."""
    return [[pairs.text(j) for j in caps] for caps in pairs.captions_of()]


class Consistency:
    """Streaming caption ↔ map consistency of captions whose image has class shares in
    ``compositions`` (image id -> 7 shares); others are counted in :attr:`unscored`."""

    def __init__(self, compositions: Compositions) -> None:
        from groundsynth.evaluate.caption_consistency import ConsistencyAccumulator
        from groundsynth.evaluate.caption_lexicon import load_lexicon

        self.compositions = compositions
        self._lexicon = load_lexicon()
        self._acc = ConsistencyAccumulator()
        self.scored = 0
        self.unscored = 0

    def add(self, image_id: str, text: str) -> None:
        from groundsynth.evaluate.caption_consistency import score_caption

        comp = self.compositions.get(image_id)
        if comp is None:
            self.unscored += 1
            return
        self._acc.update(
            "captions", score_caption(self._lexicon.parse(text), comp, self._acc.settings)
        )
        self.scored += 1

    def summary(self) -> dict[str, Any] | None:
        """The pooled summary (rates in 0..1; see ``ConsistencyAccumulator``), None if no
        caption was scored."""
        return self._acc.compute()["pooled"] if self.scored else None


def reference_consistency(pairs: PairSet, compositions: Compositions) -> dict[str, Any] | None:
    """Consistency of every caption of ``pairs`` with its image's map (the ceiling)."""
    acc = Consistency(compositions)
    for j in range(len(pairs.texts)):
        acc.add(pairs.image_ids[int(pairs.image_of_text[j])], pairs.text(j))
    return acc.summary()


def score_captions(
    captions: Iterable[tuple[int, str]],
    pairs: PairSet,
    *,
    metrics: Sequence[str],
    compositions: Compositions | None = None,
    on_caption: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """COCO metrics of ``(image index, caption)`` items against the images' captions in
    ``pairs``, ``images``, ``references`` and ``consistency`` (:class:`Consistency`'s summary;
    None without compositions). Streams: ``on_caption(image id, caption)`` sees each caption
    as it is scored."""
    refs = pairs.captions_of()
    consistency = Consistency(compositions) if compositions is not None else None

    def items() -> Iterator[tuple[str, str, list[str]]]:
        for i, text in captions:
            image_id = pairs.image_ids[i]
            if on_caption is not None:
                on_caption(image_id, text)
            if consistency is not None:
                consistency.add(image_id, text)
            yield image_id, text, [pairs.text(j) for j in refs[i]]

    with CaptioningScorer(metrics) as scorer:
        scorer.update(items())
        scores: dict[str, Any] = dict(scorer.compute())
        n_refs = scorer.references
    return {**scores, "images": len(refs), "references": n_refs,
            "consistency": consistency.summary() if consistency is not None else None}  # fmt: skip


class CaptionerModule(L.LightningModule):
    """Teacher-forced training of an :class:`ImageCaptioner`, validated by greedy CIDEr-D on
    ``val``. ``composition_weight`` > 0 adds the composition head and its loss (batches
    then carry class shares; see the module's docstring); 0 trains on the caption loss
    alone."""

    def __init__(
        self,
        captioner: ImageCaptioner,
        optim: CaptioningOptim,
        val: PairSet,
        max_new_tokens: int = 40,
        composition_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.captioner = captioner
        self.model = captioner.model
        self.composition_weight = float(composition_weight)
        self.composition_head = None
        if self.composition_weight > 0:
            with torch.random.fork_rng(devices=[]):  # the caption draws stay those of weight 0
                self.composition_head = torch.nn.Linear(captioner.encoder_width, NUM_CLASSES)
        self.optim = optim
        self.val = val
        self.max_new_tokens = max_new_tokens
        self._val_refs = {k: refs for k, refs in zip(val.image_ids, references(val), strict=True)}
        self.best_state: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None
        self.val_history: list[dict[str, Any]] = []
        self._val_captions: dict[str, str] = {}
        pooler = getattr(self.model.encoder, "pooler", None)
        if pooler is not None:  # ViT's pooler feeds nothing here: no gradient, no DDP stall
            pooler.requires_grad_(False)

    def training_loss(self, batch: Any) -> tuple[Any, Any]:
        """``(loss, composition loss)`` of a training batch; the latter None without the head
        or the batch's shares."""
        pixels, inputs, labels, mask, shares = batch
        if self.composition_head is None or shares is None:
            return self.captioner.loss(pixels, inputs, labels, mask), None
        caption, pooled = self.captioner.loss_and_features(pixels, inputs, labels, mask)
        composition = composition_loss(self.composition_head(pooled), shares)
        return caption + self.composition_weight * composition, composition

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss, composition = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[0]))
        if composition is not None:
            self.log("train/composition", composition, batch_size=len(batch[0]))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.max_steps > 0 and self.trainer.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True  # Lightning validates before it stops

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        index, pixels = batch
        texts = self.captioner.generate(pixels, 1, self.max_new_tokens)
        for i, text in zip(index.tolist(), texts, strict=True):
            self._val_captions[self.val.image_ids[int(i)]] = text

    def on_validation_epoch_end(self) -> None:
        captions, self._val_captions = self._val_captions, {}
        if captions:
            self.record_validation(captions)
            self.log(MONITOR, float(self.val_history[-1]["cider"]), prog_bar=True)

    def validate_now(self, device: str = "cpu", batch_size: int = 64) -> None:
        """A validation round outside Lightning's loop (the last step, when it fell between
        rounds)."""
        captions = {
            self.val.image_ids[i]: text
            for i, text in caption_pairs(self.captioner, self.val, batch_size=batch_size,
                                         max_new_tokens=self.max_new_tokens, device=device)
        }  # fmt: skip
        self.model.train()
        self.record_validation(captions)

    def record_validation(self, captions: Mapping[str, str]) -> None:
        """Score one round's greedy captions; keep the weights if they are the best yet."""
        cider = score_corpus(captions, self._val_refs, metrics=("cider",))["cider"]
        entry = {"step": int(self.global_step), "epoch": int(self.current_epoch), "cider": cider}
        self.val_history.append(entry)
        if self.best is None or cider > self.best["cider"]:
            self.best = entry
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            }

    def configure_optimizers(self) -> Any:
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return warmup_cosine_adamw(self, self.optim, total)  # the model, and the head if any
