"""A map-style torch dataset over one split of a dataset directory (either layout).

torch is imported lazily, when a :class:`SegmentationDataset` is built, so this module imports
without it. The dataset holds only paths and ids (no open file), so it pickles into
``DataLoader`` worker processes.

>>> ds = SegmentationDataset("DATASET", "train")          # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=4)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.errors import InputError

__all__ = ["SegmentationDataset", "Transform"]

#: ``transform(image, mask) -> (image, mask)`` on numpy arrays: image (H, W, 3), mask (H, W).
Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class SegmentationDataset:
    """Image/mask pairs of one split as tensors, for segmentation training.

    Each item is ``dict(image=float32 (3, H, W), mask=int64 (H, W), id=str)``. ``transform``
    runs on the numpy arrays before conversion; a uint8 image is scaled to 0..1, a floating
    image returned by the transform is taken as already scaled.

    Args:
        root: dataset directory, or a :class:`DatasetReader` already opened.
        split: split name (``train``, ``val``, ...).
        transform: optional ``transform(image, mask) -> (image, mask)``.
        ids: optional subset of the split's ids (in the order given); unknown ids raise
            :class:`InputError`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | DatasetReader,
        split: str,
        transform: Transform | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        lazy_import("torch")  # fail early, naming the extra to install
        self.reader = root if isinstance(root, DatasetReader) else open_dataset(root)
        self.split = split
        self.transform = transform
        known = self.reader.ids(split)
        if ids is None:
            self.ids = known
        else:
            self.ids = [str(i) for i in ids]
            unknown = sorted(set(self.ids).difference(known))
            if unknown:
                raise InputError(
                    f"{self.reader.root}: {len(unknown)} id(s) not in split {split!r}: "
                    f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
                )
        if not self.ids:
            raise InputError(f"{self.reader.root}: split {split!r} has no samples")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        torch = lazy_import("torch")
        sample_id = self.ids[index]
        image = self.reader.read_image(self.split, sample_id)
        mask = self.reader.read_mask(self.split, sample_id)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
            raise InputError(
                f"sample {sample_id!r} of {self.reader.root}/{self.split}: expected an (H, W, 3) "
                f"image and (H, W) mask, got {image.shape} and {mask.shape}"
                + (" after the transform" if self.transform is not None else "")
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if image.dtype == np.uint8:
            tensor = tensor.to(torch.float32).div_(255.0)
        else:
            tensor = tensor.to(torch.float32)
        return {
            "image": tensor,
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
            "id": sample_id,
        }
