"""Training data of the generators: an endless, seeded, resumable stream of samples.

:class:`StreamSampler` yields ``(index, augmentation seed)`` pairs forever: position ``p`` of
the stream is sample ``permutation_e[p % n]`` of epoch ``e = p // n``, where each epoch's
permutation and each position's augmentation come from seeds derived from ``(seed, e)`` and
``(seed, p)``. The stream therefore restarts exactly at any position -- resuming at step ``k``
starts at position ``k * batch_size * world_size`` -- and does not depend on worker processes.
Rank ``r`` of ``w`` takes positions ``start + r, start + r + w, ...``.

:class:`TrainingItems` turns a pair into tensors: the image in [-1, 1] (3, S, S) and, for
conditional generators, the class-index mask (S, S), cropped (or resized) to ``S`` and
optionally flipped / rotated by the pair's seed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from groundsynth.data.reader import DatasetReader
from groundsynth.errors import InputError
from groundsynth.generate.seeds import derive_seed, numpy_rng

__all__ = ["StreamSampler", "TrainingItems", "dihedral", "one_hot", "to_model_range", "to_uint8"]


class StreamSampler:
    """Endless ``(index, augmentation seed)`` stream; see the module docstring."""

    def __init__(self, n: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise InputError("cannot stream an empty dataset")
        self.n, self.seed, self.start, self.rank, self.world = n, seed, start, rank, world
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = numpy_rng(self.seed, "epoch", epoch).permutation(self.n)
            self._epoch = epoch
        return self._perm  # type: ignore[return-value]

    def item(self, position: int) -> tuple[int, int]:
        """The ``(index, augmentation seed)`` at ``position`` of the stream."""
        epoch, j = divmod(position, self.n)
        return int(self._permutation(epoch)[j]), derive_seed(self.seed, "augment", position)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        while True:
            yield self.item(position)
            position += self.world


def dihedral(array: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations of a (H, W, ...) array: ``code`` 0-3 rotations by 90 degrees,
    4-7 the same after a horizontal flip (code 0 is the identity)."""
    if code >= 4:
        array = array[:, ::-1]
    return np.rot90(array, code % 4, axes=(0, 1))


class TrainingItems:
    """Map-style dataset over one split, indexed by ``(index, augmentation seed)`` pairs.

    Items are ``dict(image=float32 (3, S, S) in [-1, 1], mask=int64 (S, S))``; ``mask`` only
    when ``with_masks``. Holds paths and ids only, so it pickles into DataLoader workers.
    Ids in ``exclude`` (samples held out for evaluation) are left out.
    """

    def __init__(
        self,
        reader: DatasetReader,
        split: str,
        image_size: int,
        *,
        fit: str = "crop",
        augment: bool = True,
        with_masks: bool = True,
        exclude: Collection[str] = (),
    ) -> None:
        self.reader = reader
        self.split = split
        held = set(exclude)
        self.ids = [i for i in reader.ids(split) if i not in held]
        if not self.ids:
            raise InputError(
                f"{reader.root}: split {split!r} has no samples; splits: {reader.splits()}"
            )
        self.image_size = image_size
        self.fit = fit
        self.augment = augment
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.ids)

    def arrays(self, index: int, aug_seed: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The (image, mask) arrays of sample ``index`` at the training size; centred and not
        augmented when ``aug_seed`` is ``None``."""
        sample_id = self.ids[index]
        image = self.reader.read_image(self.split, sample_id)
        mask = self.reader.read_mask(self.split, sample_id) if self.with_masks else None
        if mask is not None and mask.shape != image.shape[:2]:
            raise InputError(
                f"{self.reader.mask_path(self.split, sample_id)}: mask is {mask.shape}, image "
                f"is {image.shape[:2]}"
            )
        rng = np.random.default_rng(aug_seed) if aug_seed is not None else None
        image, mask = self._fit(image, mask, rng, sample_id)
        if rng is not None and self.augment:
            code = int(rng.integers(8))
            image = dihedral(image, code)
            mask = dihedral(mask, code) if mask is not None else None
        return np.ascontiguousarray(image), None if mask is None else np.ascontiguousarray(mask)

    def _fit(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        rng: np.random.Generator | None,
        sample_id: str,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        s = self.image_size
        h, w = image.shape[:2]
        if (h, w) == (s, s):
            return image, mask
        if self.fit == "resize":
            image = np.asarray(Image.fromarray(image).resize((s, s), Image.Resampling.BICUBIC))
            if mask is not None:
                mask = np.asarray(Image.fromarray(mask).resize((s, s), Image.Resampling.NEAREST))
            return image, mask
        if h < s or w < s:
            raise InputError(
                f"{self.reader.image_path(self.split, sample_id)}: image is {w}x{h}, smaller than "
                f"the training size {s}; lower --image-size or use fit 'resize'"
            )
        if rng is None:
            y, x = (h - s) // 2, (w - s) // 2
        else:
            y, x = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        image = image[y : y + s, x : x + s]
        return image, None if mask is None else mask[y : y + s, x : x + s]

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            index, aug_seed = int(key[0]), int(key[1])
        else:
            index, aug_seed = int(key), None
        image, mask = self.arrays(index, aug_seed)
        out = {"image": to_model_range(image)}
        if mask is not None:
            out["mask"] = torch.from_numpy(mask.astype(np.int64))
        return out


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 (rounded, clipped)."""
    x = images.detach().float().add(1.0).mul(127.5).round().clamp_(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def one_hot(
    mask: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, H, W) class indices -> (B, C, H, W) one-hot."""
    return F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).to(dtype)
