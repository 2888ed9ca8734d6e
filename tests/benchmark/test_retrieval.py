"""Retrieval recall: hand-worked cases, ties, blocks, torch, and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from groundsynth.benchmark.retrieval import retrieval_scores
from groundsynth.errors import InputError


def brute_force(sim: np.ndarray, image_of_text: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Sort every query's candidates by score, descending, wrong items first among equals
    (ties count against the query), and find the first correct one. No blocks, no counting."""
    n_img, n_txt = sim.shape
    out: dict[str, float] = {}
    i2t, t2i = [], []
    for i in range(n_img):
        correct = image_of_text == i
        if not correct.any():
            continue
        order = np.lexsort((correct, -sim[i]))  # last key first: score desc, then wrong first
        i2t.append(int(np.nonzero(correct[order])[0][0]))
    for j in range(n_txt):
        correct = np.arange(n_img) == image_of_text[j]
        order = np.lexsort((correct, -sim[:, j]))
        t2i.append(int(np.nonzero(correct[order])[0][0]))
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * np.mean(ranks < k)
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


def test_hand_worked_tiny_case() -> None:
    # 3 images; texts 0,1 describe image 0, text 2 image 1, text 3 image 2.
    sim = np.array(
        [
            [0.9, 0.1, 0.8, 0.0],  # image 0: best text is 0 (its own): rank 0
            [0.2, 0.3, 0.1, 0.5],  # image 1: own text 2 (0.1) is beaten by 3 others: rank 3
            [0.1, 0.2, 0.3, 0.4],  # image 2: own text 3 (0.4) is the best: rank 0
        ]
    )
    image_of_text = [0, 0, 1, 2]
    got = retrieval_scores(sim, image_of_text, ks=(1, 2, 4))
    assert got["i2t_r1"] == pytest.approx(200 / 3)  # images 0 and 2
    assert got["i2t_r2"] == pytest.approx(200 / 3)
    assert got["i2t_r4"] == 100.0
    # t2i: text 0 col [.9,.2,.1] -> image 0 first (rank 0); text 1 col [.1,.3,.2] -> image 0
    # last (rank 2); text 2 col [.8,.1,.3] -> image 1 last (rank 2); text 3 col [0,.5,.4]
    # -> image 2 second (rank 1)
    assert got["t2i_r1"] == 25.0
    assert got["t2i_r2"] == 50.0
    assert got["t2i_r4"] == 100.0
    assert got["mean_recall"] == pytest.approx((200 / 3 * 2 + 100 + 25 + 50 + 100) / 6)
    assert got["i2t_queries"] == 3 and got["t2i_queries"] == 4


def test_ties_count_against_the_query() -> None:
    # A constant similarity: every wrong item ties with the correct one and ranks before it.
    sim = np.zeros((4, 4))
    got = retrieval_scores(sim, [0, 1, 2, 3], ks=(1, 3, 4))
    assert got["i2t_r1"] == got["t2i_r1"] == 0.0
    assert got["i2t_r3"] == got["t2i_r3"] == 0.0  # 3 wrong items tie: rank 3
    assert got["i2t_r4"] == got["t2i_r4"] == 100.0
    # one wrong text tied with the correct one, one below: rank 1
    sim = np.array([[0.5, 0.5, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    got = retrieval_scores(sim, [0, 1, 2], ks=(1, 2))
    assert got["i2t_r1"] == pytest.approx(200 / 3) and got["i2t_r2"] == 100.0


def test_images_without_texts_are_not_i2t_queries() -> None:
    sim = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.9]])  # image 2 has no caption
    got = retrieval_scores(sim, [0, 1], ks=(1,))
    assert got["i2t_queries"] == 2 and got["i2t_r1"] == 100.0
    assert got["t2i_r1"] == 100.0  # image 2 scores 0.9 < 1.0 on both texts


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block_elements", [1, 7, 50, 1 << 22])
def test_matches_brute_force_with_ties(seed: int, block_elements: int) -> None:
    rng = np.random.default_rng(seed)
    n_img, per = 23, 3
    image_of_text = np.repeat(np.arange(n_img), per)
    image_of_text = image_of_text[rng.permutation(len(image_of_text))]
    image_of_text[:4] = 5  # uneven caption counts, and some images without texts
    sim = rng.integers(0, 4, size=(n_img, len(image_of_text))).astype(np.float32)  # many ties
    ks = (1, 5, 10)
    want = brute_force(sim, image_of_text, ks)
    got = retrieval_scores(sim, image_of_text, ks, block_elements=block_elements)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key

    def blocks(size: int):
        return lambda: (sim[i : i + size] for i in range(0, n_img, size))

    for size in (1, 4, n_img):
        got = retrieval_scores(
            blocks(size), image_of_text, ks, n_images=n_img, block_elements=block_elements
        )
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (key, size)


def test_continuous_scores_and_integer_similarity() -> None:
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(30, 60))
    image_of_text = np.arange(60) % 30
    sim[image_of_text, np.arange(60)] += 1.5  # better than chance
    want = brute_force(sim, image_of_text)
    got = retrieval_scores(sim, image_of_text, block_elements=100)
    assert {k: got[k] for k in want} == pytest.approx(want)
    ints = rng.integers(-3, 3, size=(10, 10))
    assert {
        k: v for k, v in retrieval_scores(ints, list(range(10))).items() if k in want
    } == pytest.approx(brute_force(ints, np.arange(10)))


def test_torch_tensor() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    sim = rng.integers(0, 3, size=(12, 24)).astype(np.float32)
    image_of_text = np.arange(24) // 2
    want = retrieval_scores(sim, image_of_text, block_elements=30)
    for t in (torch.from_numpy(sim), torch.from_numpy(sim).to(torch.bfloat16)):
        got = retrieval_scores(t, torch.as_tensor(image_of_text).numpy(), block_elements=30)
        assert got == want  # small integers are exact in bfloat16


def test_errors_name_the_problem() -> None:
    sim = np.zeros((2, 3))
    with pytest.raises(InputError, match="3 text columns but image_of_text 2"):
        retrieval_scores(sim, [0, 1])
    with pytest.raises(InputError, match="outside the 2 images"):
        retrieval_scores(sim, [0, 1, 2])
    with pytest.raises(InputError, match="NaN"):
        retrieval_scores(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(InputError, match="ks must be"):
        retrieval_scores(sim, [0, 1, 1], ks=(0, 1))
    with pytest.raises(InputError, match="n_images is required"):
        retrieval_scores(lambda: iter([sim]), [0, 1, 1])
    with pytest.raises(InputError, match="gave 2 rows, not n_images=3"):
        retrieval_scores(lambda: iter([sim]), [0, 1, 1], n_images=3)
    with pytest.raises(InputError, match="2-D array"):
        retrieval_scores([[0.0, 1.0]], [0, 0])
