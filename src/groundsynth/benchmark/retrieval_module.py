"""Training and scoring a dual encoder on image–caption pairs (Lightning).

Training: every epoch shows each training image once with one of its captions drawn at random
(torch's generator, so it follows the run's seed); the loss is CLIP's symmetric contrastive
loss (open_clip's ``ClipLoss``: cross-entropy of the scaled image–text similarity, both
directions, averaged; under DDP the features of every process are gathered with their
gradients, so the batch of negatives is the global batch). Optimiser: AdamW with a linear
warm-up over the first 10 % of the steps, then cosine decay to zero.

Validation (every epoch's end and at the last step): image–text retrieval on the validation
pairs; ``val/mean_recall`` drives early stopping, and the module keeps the weights of the best
round in memory (:attr:`DualEncoderModule.best_state`), which are the ones tested. Every
process embeds the whole validation set (no sharding; validation sets are small), so every
process logs the same value.

:func:`score_pairs` embeds a pair set and scores it with
:func:`~groundsynth.benchmark.retrieval.retrieval_scores` (blocked similarity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.benchmark.dual_encoder import DualEncoder
from groundsynth.benchmark.pairs import PairSet
from groundsynth.benchmark.retrieval import retrieval_scores
from groundsynth.data.reader import read_rgb

torch = lazy_import("torch")
L = lazy_import("lightning.pytorch")

__all__ = [
    "MONITOR",
    "DualEncoderModule",
    "PairImages",
    "RetrievalOptim",
    "embed_pairs",
    "score_pairs",
    "warmup_cosine_adamw",
]

#: Logged value that early stopping and the kept weights follow.
MONITOR = "val/mean_recall"


@dataclass(frozen=True)
class RetrievalOptim:
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: float = 0.1


class PairImages(torch.utils.data.Dataset):
    """The images of pair sets. ``train``: ``(pixels, caption)`` with a random caption of
    the image; else ``(image index, pixels)``. ``encoder``: any model with ``preprocess``
    (uint8 ``(B, H, W, 3)`` -> its input)."""

    def __init__(self, sets: Sequence[PairSet], encoder: Any, train: bool) -> None:
        self.set = PairSet.concat(list(sets)) if len(sets) != 1 else sets[0]
        self.encoder = encoder
        self.train = train
        self.captions = self.set.captions_of() if train else None

    def __len__(self) -> int:
        return self.set.n_images

    def __getitem__(self, i: int) -> Any:
        pixels = self.encoder.preprocess(read_rgb(self.set.image_paths[i])[None])[0]
        if not self.train:
            return i, pixels
        caps = self.captions[i]
        j = int(caps[int(torch.randint(len(caps), ()))])
        return pixels, self.set.text(j)


def _train_collate(encoder: DualEncoder):
    def collate(batch: list[tuple[Any, str]]) -> tuple[Any, Any]:
        return torch.stack([b[0] for b in batch]), encoder.tokenize([b[1] for b in batch])

    return collate


def train_loader(
    dataset: PairImages, batch_size: int, workers: int, seed: int, world: int, rank: int
) -> Any:
    """Shuffled (seeded) training loader; a seeded DistributedSampler when ``world > 1``."""
    kwargs: dict[str, Any] = {"batch_size": batch_size, "num_workers": workers,
                              "persistent_workers": workers > 0, "drop_last": len(dataset) > batch_size,
                              "collate_fn": _train_collate(dataset.encoder)}  # fmt: skip
    if world > 1:
        kwargs["sampler"] = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed
        )
    else:
        kwargs["shuffle"] = True
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def eval_loader(pairs: PairSet, encoder: DualEncoder, batch_size: int, workers: int = 0) -> Any:
    return torch.utils.data.DataLoader(
        PairImages([pairs], encoder, train=False), batch_size=batch_size, num_workers=workers,
        shuffle=False,
    )  # fmt: skip


@torch.no_grad()
def embed_pairs(
    encoder: DualEncoder,
    pairs: PairSet,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 ``(image embeddings, caption embeddings)`` of ``pairs``."""
    encoder.model.eval()
    chunks = []
    for _, pixels in eval_loader(pairs, encoder, batch_size, workers):
        chunks.append(encoder.encode_images(pixels.to(device)).cpu().numpy())
    images = np.concatenate(chunks) if chunks else np.zeros((0, encoder.embed_dim), np.float32)
    texts = encoder.embed_texts(
        (pairs.text(j) for j in range(len(pairs.texts))),
        batch_size=max(batch_size, 256),
        device=device,
    )
    return images, texts


def score_embeddings(
    images: np.ndarray, texts: np.ndarray, image_of_text: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Retrieval recalls (percent) of normalised embeddings, similarity in row blocks."""
    step = max(1, 4_000_000 // max(1, len(texts)))

    def blocks():
        return (images[i : i + step] @ texts.T for i in range(0, len(images), step))

    return retrieval_scores(blocks, image_of_text, ks=tuple(ks), n_images=len(images))


def score_pairs(
    encoder: DualEncoder,
    pairs: PairSet,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int = 0,
) -> dict[str, float]:
    """Image–text retrieval scores of ``encoder`` on ``pairs`` (see :mod:`.retrieval`)."""
    images, texts = embed_pairs(encoder, pairs, batch_size, device, workers)
    scores = score_embeddings(images, texts, pairs.image_of_text)
    return {**scores, "images": pairs.n_images, "captions": len(pairs.texts)}


class DualEncoderModule(L.LightningModule):
    """Contrastive training of a :class:`DualEncoder`, validated by retrieval on ``val``."""

    def __init__(self, encoder: DualEncoder, optim: RetrievalOptim, val: PairSet) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = encoder.model
        self.optim = optim
        self.val = val
        self.loss_fn: Any = None
        self.best_state: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None
        self.val_history: list[dict[str, Any]] = []
        self._val_images: list[Any] = []

    def setup(self, stage: str) -> None:
        from open_clip.loss import ClipLoss

        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        self.loss_fn = ClipLoss(gather_with_grad=world > 1, rank=rank, world_size=world)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        pixels, tokens = batch
        img = self.encoder.encode_images(pixels)
        txt = self.encoder.encode_texts(tokens)
        loss = self.loss_fn(img, txt, self.model.logit_scale.exp())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(pixels))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # CLIP clamps the temperature at 100
            self.model.logit_scale.clamp_(0, math.log(100))
        if self.trainer.max_steps > 0 and self.trainer.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True  # Lightning validates before it stops

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, pixels = batch
        self._val_images.append(self.encoder.encode_images(pixels).float().cpu())

    def on_validation_epoch_end(self) -> None:
        images = torch.cat(self._val_images).numpy() if self._val_images else None
        self._val_images = []
        if images is None:
            return
        texts = self.encoder.embed_texts(
            (self.val.text(j) for j in range(len(self.val.texts))), device=str(self.device)
        )
        self.model.train()
        scores = score_embeddings(images, texts, self.val.image_of_text)
        entry = {"step": int(self.global_step), "epoch": int(self.current_epoch), **scores}
        self.val_history.append(entry)
        for key in ("mean_recall", "i2t_r1", "t2i_r1"):
            self.log(f"val/{key}", float(scores[key]), prog_bar=key == "mean_recall")
        if self.best is None or scores["mean_recall"] > self.best["mean_recall"]:
            self.best = entry
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            }

    def configure_optimizers(self) -> Any:
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return warmup_cosine_adamw(self.model, self.optim, total)


def warmup_cosine_adamw(model: Any, optim: Any, total: int) -> dict[str, Any]:
    """AdamW (no weight decay on gains, biases and scalars such as CLIP's temperature) with a
    linear warm-up over ``optim.warmup`` of the ``total`` steps, then cosine decay to zero:
    Lightning's ``configure_optimizers`` answer, stepped per batch."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr,
    )  # fmt: skip
    warm = max(1, int(optim.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
