"""Image-text retrieval recall (R@K) from a similarity matrix, in bounded memory.

:func:`retrieval_scores` scores both directions of cross-modal retrieval, as image-caption
benchmarks (RSICD, UCM-, Sydney-Captions, ARAS) report them:

- image -> text (``i2t_rK``): an image query is correct when any of its captions is among the
  K texts most similar to it;
- text -> image (``t2i_rK``): a text query is correct when its image is among the K images
  most similar to it;
- ``mean_recall``: the mean of all those recalls (for ``ks=(1, 5, 10)`` the usual "mR",
  rSum / 6). Percentages.

**Ties count against the query.** The rank of a query is the number of wrong items scoring
at least as high as its best correct item (i2t: the best-scoring of the image's captions;
t2i: its image), i.e. its 0-based position when equal scores are ordered wrong items first;
the query counts at K when that rank is < K. A constant similarity therefore scores 0 at
every K < the number of wrong items, never a lucky 100 %; sorting with another tie-break
(argsort's index order) can only give higher recalls.

Memory: the similarity is read in blocks of about ``block_elements`` entries: image rows
for i2t and text columns for t2i when it is an array (numpy, or a torch tensor, which is
copied to the host one block at a time); the default 4M-entry blocks keep the working
memory near 50 MB (float32) besides the matrix itself, whatever its size (10k images x 50k
captions included). For matrices that do not fit at all, pass a function
that returns a fresh iterator over consecutive row blocks (it is called twice: one pass for
i2t and the text queries' correct scores, one for t2i)::

    retrieval_scores(lambda: (img[i:i + 1024] @ txt.T for i in range(0, len(img), 1024)),
                     image_of_text, n_images=len(img))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from groundsynth.errors import InputError

__all__ = ["retrieval_scores"]

Blocks = Callable[[], Iterable[Any]]


def _numpy(block: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array or torch tensor block (2-D, floating)."""
    if hasattr(block, "detach"):  # torch.Tensor, without importing torch
        block = block.detach()
        if str(block.dtype) == "torch.bfloat16":
            block = block.float()
        block = block.cpu().numpy()
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise InputError(f"similarity blocks must be 2-D (images x texts), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"similarity must be real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise InputError("similarity holds NaN; rank needs ordered scores (replace NaN first)")
    return arr


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out) or len(set(out)) != len(out):
        raise InputError(f"ks must be distinct positive integers, got {list(ks)}")
    return out


def _i2t_ranks(rows: np.ndarray, start: int, image_of_text: np.ndarray) -> np.ndarray:
    """Rank of each image row's best caption (-1 for an image without captions)."""
    own = image_of_text[None, :] == np.arange(start, start + len(rows))[:, None]
    has = own.any(axis=1)
    low = np.array(-np.inf) if np.issubdtype(rows.dtype, np.floating) else np.iinfo(rows.dtype).min
    best = np.where(own, rows, low).max(axis=1)
    rank = ((rows >= best[:, None]) & ~own).sum(axis=1)
    return np.where(has, rank, -1)


def _recalls(ranks: np.ndarray, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    n = len(ranks)
    return {
        f"{prefix}_r{k}": 100.0 * float((ranks < k).sum()) / n if n else float("nan") for k in ks
    }


def retrieval_scores(
    similarity: Any,
    image_of_text: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    *,
    n_images: int | None = None,
    block_elements: int = 1 << 22,
) -> dict[str, float]:
    """Recall@K of image -> text and text -> image retrieval, percent; see the module doc.

    ``similarity``: images x texts (numpy array, torch tensor, or a function returning an
    iterator of consecutive row blocks). ``image_of_text[j]``: the row of the image text
    ``j`` describes. ``n_images``: the number of images (needed with a function; default
    the array's rows). Images without any text are not i2t queries (``i2t_queries`` says
    how many were). Returns ``i2t_rK`` and ``t2i_rK`` for each K in ``ks``, ``mean_recall``,
    ``i2t_queries`` and ``t2i_queries``.
    """
    ks = _check_ks(ks)
    image_of_text = np.asarray(image_of_text)
    if image_of_text.ndim != 1 or not np.issubdtype(image_of_text.dtype, np.integer):
        raise InputError(
            f"image_of_text must be a 1-D sequence of image indices, got {image_of_text.dtype} "
            f"of shape {image_of_text.shape}"
        )
    n_texts = len(image_of_text)
    if block_elements < 1:
        raise InputError(f"block_elements must be >= 1, got {block_elements}")
    if callable(similarity):
        if n_images is None:
            raise InputError("n_images is required when similarity is a function of row blocks")
        shape = (n_images, n_texts)
    else:
        if not hasattr(similarity, "shape") or len(similarity.shape) != 2:
            raise InputError(
                "similarity must be a 2-D array or tensor (images x texts), or a function "
                f"returning row blocks; got {type(similarity).__name__}"
            )
        shape = tuple(int(s) for s in similarity.shape)
        if n_images is not None and n_images != shape[0]:
            raise InputError(f"n_images={n_images} but similarity has {shape[0]} rows")
    if shape[1] != n_texts:
        raise InputError(
            f"similarity has {shape[1]} text columns but image_of_text {n_texts} entries"
        )
    if n_texts == 0 or shape[0] == 0:
        raise InputError(f"nothing to rank: similarity is {shape[0]} x {shape[1]}")
    if image_of_text.min() < 0 or image_of_text.max() >= shape[0]:
        bad = image_of_text[(image_of_text < 0) | (image_of_text >= shape[0])][0]
        raise InputError(f"image_of_text holds {bad}, outside the {shape[0]} images (0-based)")

    if callable(similarity):
        i2t, t2i = _from_blocks(similarity, image_of_text, shape, block_elements)
    else:
        i2t, t2i = _from_array(similarity, image_of_text, shape, block_elements)
    i2t = i2t[i2t >= 0]
    out = _recalls(i2t, ks, "i2t") | _recalls(t2i, ks, "t2i")
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    out["i2t_queries"] = len(i2t)
    out["t2i_queries"] = n_texts
    return out


def _from_array(
    sim: Any, image_of_text: np.ndarray, shape: tuple[int, ...], budget: int
) -> tuple[np.ndarray, np.ndarray]:
    n_img, n_txt = shape
    i2t = np.empty(n_img, dtype=np.int64)
    step = max(1, budget // n_txt)
    for start in range(0, n_img, step):
        rows = _numpy(sim[start : start + step])
        i2t[start : start + len(rows)] = _i2t_ranks(rows, start, image_of_text)
    t2i = np.empty(n_txt, dtype=np.int64)
    step = max(1, budget // n_img)
    for start in range(0, n_txt, step):
        cols = _numpy(sim[:, start : start + step])
        idx = np.arange(start, start + cols.shape[1])
        true = cols[image_of_text[idx], idx - start]
        t2i[idx] = (cols >= true[None, :]).sum(axis=0) - 1  # less the image itself
    return i2t, t2i


def _row_blocks(blocks: Blocks, shape: tuple[int, ...]) -> Iterable[tuple[int, np.ndarray]]:
    start = 0
    for block in blocks():
        rows = _numpy(block)
        if rows.shape[1] != shape[1]:
            raise InputError(f"a similarity block has {rows.shape[1]} columns, not {shape[1]}")
        if start + len(rows) > shape[0]:
            raise InputError(f"similarity blocks give more than n_images={shape[0]} rows")
        yield start, rows
        start += len(rows)
    if start != shape[0]:
        raise InputError(f"similarity blocks gave {start} rows, not n_images={shape[0]}")


def _from_blocks(
    blocks: Blocks, image_of_text: np.ndarray, shape: tuple[int, ...], budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two passes over the row blocks: i2t and each text's correct score, then t2i counts.
    Blocks larger than ``budget`` elements are compared in slices of rows."""
    n_img, n_txt = shape
    i2t = np.empty(n_img, dtype=np.int64)
    true: np.ndarray | None = None
    step = max(1, budget // n_txt)
    for start, rows in _row_blocks(blocks, shape):
        if true is None:
            true = np.empty(n_txt, dtype=rows.dtype)
        for s in range(0, len(rows), step):
            part = rows[s : s + step]
            i2t[start + s : start + s + len(part)] = _i2t_ranks(part, start + s, image_of_text)
        mine = (image_of_text >= start) & (image_of_text < start + len(rows))
        cols = np.nonzero(mine)[0]
        true[cols] = rows[image_of_text[cols] - start, cols]
    if true is None:  # pragma: no cover - _row_blocks checks the row count
        raise InputError("similarity blocks are empty")
    t2i = np.zeros(n_txt, dtype=np.int64)
    for _, rows in _row_blocks(blocks, shape):
        for s in range(0, len(rows), step):
            part = rows[s : s + step]
            t2i += (part >= true[None, :]).sum(axis=0)
    return i2t, t2i - 1  # less each text's own image
