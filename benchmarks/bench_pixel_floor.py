"""Fitting the pixel floor: its loss in the (classes, pixels) layout vs the (pixels, classes) one.

:meth:`groundsynth.evaluate.pixel_floor.PixelFloor.fit` minimises a 7-class logistic
regression by L-BFGS; each evaluation of the loss and its gradient runs a softmax over every
training pixel. With the pixels along the second axis the softmax's reductions run over 7
long rows; the earlier (pixels, classes) layout reduced 7-wide rows, about 3x slower. This
script times both loss functions on the same features (the floor's 6 features of
``--pixels`` pixels drawn like a sample world's), the whole fit, and checks that both losses
agree. Median of ``--repeats``.

    python benchmarks/bench_pixel_floor.py [--pixels 47616] [--repeats 20]
"""

from __future__ import annotations

import argparse

from _common import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=47_616, help="the demo's region A: 186 x 256")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    import numpy as np
    from scipy.special import log_softmax

    from groundsynth.evaluate.pixel_floor import FEATURES, NUM_CLASSES, PixelFloor

    rng = np.random.default_rng(0)
    p, f, c = args.pixels, len(FEATURES), NUM_CLASSES
    y = rng.integers(0, c, p)
    centres = rng.normal(size=(c, f))
    z = centres[y] + rng.normal(size=(p, f))  # classes as overlapping clouds
    theta = rng.normal(size=c * f + c) * 0.1
    onehot = np.zeros((p, c))
    onehot[np.arange(p), y] = 1.0

    def rows_layout(theta: np.ndarray) -> tuple[float, np.ndarray]:  # the earlier loss
        w, b = theta[: c * f].reshape(c, f), theta[c * f :]
        logp = log_softmax(z @ w.T + b, axis=1)
        d = (np.exp(logp) - onehot) / p
        grad = np.concatenate([(d.T @ z).ravel(), d.sum(axis=0)])
        return float(-(onehot * logp).sum() / p), grad

    zt, pixels = np.ascontiguousarray(z.T), np.arange(p)

    def columns_layout(theta: np.ndarray) -> tuple[float, np.ndarray]:  # PixelFloor.fit's
        w, b = theta[: c * f].reshape(c, f), theta[c * f :]
        logits = w @ zt + b[:, None]
        logits -= logits.max(axis=0)
        prob = np.exp(logits)
        total = prob.sum(axis=0)
        value = (np.log(total).sum() - logits[y, pixels].sum()) / p
        prob /= total
        prob[y, pixels] -= 1.0
        prob /= p
        return float(value), np.concatenate([(prob @ z).ravel(), prob.sum(axis=1)])

    a, b = rows_layout(theta), columns_layout(theta)
    same = abs(a[0] - b[0]) < 1e-10 and np.allclose(a[1], b[1], atol=1e-12)
    rows = median_time(lambda: rows_layout(theta), repeats=args.repeats)
    cols = median_time(lambda: columns_layout(theta), repeats=args.repeats)
    fit = median_time(lambda: PixelFloor.fit(z, y), repeats=3)
    print(f"pixel-floor loss and gradient on {p} pixels x {f} features, {c} classes "
          f"(median of {args.repeats})")  # fmt: skip
    print(f"  (pixels, classes) layout  {1000 * rows:7.2f} ms")
    print(f"  (classes, pixels) layout  {1000 * cols:7.2f} ms")
    print(f"  ratio: {cols / rows:.2f}x time; same loss and gradient: {same}")
    print(f"  PixelFloor.fit (L-BFGS, median of 3): {fit:.2f} s")


if __name__ == "__main__":
    main()
