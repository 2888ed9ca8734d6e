"""One run of ``groundsynth benchmark captioning`` (see :mod:`.captioning_bench`): its
training captions and class shares, validation and test sets, the two floors (the untrained
model and the most frequent training caption), training, testing and the ``learning`` check.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundsynth._optional import lazy_import
from groundsynth.benchmark.captioner import build_captioner, save_captioner
from groundsynth.benchmark.captioning_config import CaptioningBenchConfig
from groundsynth.benchmark.captioning_module import (
    MONITOR,
    CaptionerModule,
    CaptionImages,
    caption_pairs,
    eval_loader,
    reference_consistency,
    score_captions,
    train_loader,
)
from groundsynth.benchmark.captioning_tables import _rate
from groundsynth.benchmark.data import DataPart, Regime, resolve_part
from groundsynth.benchmark.interrupt import reraise_interrupt
from groundsynth.benchmark.pairs import PairSet, PairSource, regime_pairs
from groundsynth.benchmark.results import json_safe
from groundsynth.benchmark.retrieval_bench import _device
from groundsynth.benchmark.segmentation import _global_rank
from groundsynth.benchmark.sweep import trainer_hardware
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.io import atomic_open, write_json
from groundsynth.runs import start_run

__all__ = [
    "EvalSet",
    "frequent_caption",
    "learning_check",
    "pair_compositions",
    "train_shares",
]

# the benchmark's logger: its records (train.log, benchmark-captioning.log) keep their name
log = logging.getLogger("groundsynth.benchmark.captioning_bench")

EvalSet = tuple[PairSet, dict[str, tuple[float, ...]] | None]


def frequent_caption(sets: Sequence[PairSet]) -> str:
    """The most frequent caption of ``sets`` (exact text; ties: the alphabetically first)."""
    texts = [s.texts for s in sets if len(s.texts)]
    if not texts:
        raise InputError("no training captions")
    counts = pc.value_counts(pa.concat_arrays(texts))
    values, n = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    top = max(n)
    return min(v for v, c in zip(values, n, strict=True) if c == top)


def pair_compositions(
    source: PairSource, split: str, ids: Sequence[str], unused: str = "consistency not scored"
) -> dict[str, tuple[float, ...]] | None:
    """Class shares (percent, 7 values) of the images ``ids`` of a dataset directory's
    ``split``: from its class-percentage table, else its captions table's class columns.
    None for a Karpathy JSON or when neither table has them (logged with ``unused``, what
    goes without them); images without a usable composition (no row, no pixels) are left
    out."""
    if not source.root.is_dir():
        return None
    reader = open_dataset(source.root)
    table = reader.percentages(split)
    if table is None or not set(CLASS_NAMES) <= set(table.columns):
        table = reader.captions(split)
    if table is None or not set(CLASS_NAMES) <= set(table.columns):
        log.warning("%s/%s: no class percentages; %s", source.root, split, unused)
        return None
    values = table[list(CLASS_NAMES)].to_numpy(dtype=float)
    wanted = set(ids)
    out = {
        str(k): tuple(float(x) for x in v)
        for k, v in zip(table["id"], values, strict=True)
        if str(k) in wanted and (v >= 0).all() and v.sum() > 0
    }
    if len(out) < len(wanted):
        log.warning("%s/%s: %d images have no composition (%s for them)", source.root, split,
                    len(wanted) - len(out), unused)  # fmt: skip
    return out


def train_shares(
    sets: Sequence[PairSet], described: Sequence[dict[str, Any]], sources: dict[str, PairSource]
) -> np.ndarray | None:
    """Class fractions (rows summing to 1) of every training image, in the order of the
    concatenated ``sets`` (``described``: :func:`regime_pairs`' description of each), NaN rows
    where unknown; None (logged: the composition term is off) when no image has them."""
    by_root = {str(s.root): s for s in sources.values()}
    rows = []
    for pairs, d in zip(sets, described, strict=True):
        comps = pair_compositions(by_root[d["root"]], d["split"], pairs.image_ids,
                                  unused="no composition loss") or {}  # fmt: skip
        for k in pairs.image_ids:
            v = np.asarray(comps.get(k, (math.nan,) * len(CLASS_NAMES)), dtype=np.float64)
            rows.append(v / v.sum())
    shares = np.asarray(rows, dtype=np.float32).reshape(-1, len(CLASS_NAMES))
    known = _known(shares)
    if not known:
        log.warning("no training image has class shares: the composition loss is off")
        return None
    log.info("composition loss on %d of %d training images", known, len(shares))
    return shares


def _known(shares: np.ndarray | None) -> int:
    """Images whose class shares are known (rows without NaN)."""
    return 0 if shares is None else int((~np.isnan(shares).any(axis=1)).sum())


def learning_check(
    test: dict[str, dict[str, Any]],
    untrained: dict[str, dict[str, Any]],
    frequent: dict[str, dict[str, Any]],
    caption: str,
) -> dict[str, Any]:
    """The ``learning`` block: per test set, whether the trained CIDEr-D beats both the
    untrained model's and the most frequent training caption's *and*, where captions are
    checked against maps, its consistent rate beats the frequent caption's (a captioner that
    writes the corpus's commonest sentence for every image can edge its CIDEr-D while telling
    no image's truth); ``passed`` when it does on every set."""

    def consistent(scores: dict[str, Any]) -> float:
        return _rate(scores.get("consistency"), "consistent_rate")

    def beats(name: str, scores: dict[str, Any]) -> bool:
        if not scores["cider"] > max(untrained[name]["cider"], frequent[name]["cider"]):
            return False
        mine, floor = consistent(scores), consistent(frequent[name])
        return math.isnan(mine) or math.isnan(floor) or mine > floor

    learned = {name: bool(beats(name, scores)) for name, scores in test.items()}
    return {"untrained": untrained, "frequent_caption": {"caption": caption, "scores": frequent},
            "learned": learned, "passed": all(learned.values())}  # fmt: skip


def _eval_sets(
    cfg: CaptioningBenchConfig, sources: dict[str, PairSource], seed: int
) -> tuple[PairSet, dict[str, EvalSet]]:
    def one(part: DataPart, role: str) -> tuple[str, EvalSet]:
        src, split, ids = resolve_part(part, sources, role, seed, None)  # type: ignore[arg-type]
        pairs = src.pairs(split, ids)  # type: ignore[attr-defined]
        comps = pair_compositions(src, split, ids) if role == "test" else None  # type: ignore[arg-type]
        return f"{part.source}/{split}", (pairs, comps)

    val = one(cfg.val_set(), "val")[1][0]
    return val, dict(one(p, "test") for p in cfg.test_sets())


def _texts(sets: Sequence[PairSet], chunk: int = 10_000) -> Iterator[str]:
    for s in sets:
        for i in range(0, len(s.texts), chunk):
            yield from s.texts.slice(i, chunk).to_pylist()


def _test(
    cfg: CaptioningBenchConfig, captioner: Any, ev: EvalSet, device: str, out: Path
) -> dict[str, Any]:
    """Caption and score one test set, writing its predictions to ``out`` as they come."""
    pairs, comps = ev
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "caption"])
        captions = caption_pairs(captioner, pairs, batch_size=cfg.eval_batch_size or cfg.batch_size,
                                 num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                                 device=device, workers=cfg.workers)  # fmt: skip
        return score_captions(captions, pairs, metrics=cfg.metrics, compositions=comps,
                              on_caption=lambda k, t: writer.writerow([k, t]))  # fmt: skip


def _floors(
    cfg: CaptioningBenchConfig, captioner: Any, tests: dict[str, EvalSet], caption: str, device: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores of the untrained model (greedy) and of ``caption`` for every image."""
    metrics = tuple(m for m in cfg.metrics if m != "meteor")
    untrained, frequent = {}, {}
    bs = cfg.eval_batch_size or cfg.batch_size
    captioner.model.to(device)
    for name, (pairs, comps) in tests.items():
        greedy = caption_pairs(captioner, pairs, batch_size=bs, max_new_tokens=cfg.max_new_tokens,
                               device=device, workers=cfg.workers)  # fmt: skip
        untrained[name] = score_captions(greedy, pairs, metrics=metrics, compositions=comps)
        constant = ((i, caption) for i in range(pairs.n_images))
        frequent[name] = score_captions(constant, pairs, metrics=metrics, compositions=comps)
    captioner.model.to("cpu").train()
    return untrained, frequent


def _train_one(
    cfg: CaptioningBenchConfig,
    sources: dict[str, PairSource],
    regime: Regime,
    seed: int,
    run_dir: Path,
    trainer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, test and save one run; return its metrics (the ``metrics.json`` content).
    ``trainer_options``: hardware options overriding ``cfg``'s (a Ray task's one device)."""
    L = lazy_import("lightning.pytorch")
    torch = lazy_import("torch")
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger

    t0 = time.time()
    rank_zero = _global_rank() == 0
    identity = cfg.run_identity(regime.name, seed)
    run = start_run(run_dir, "train", identity, seeds={"run": seed}) if rank_zero else None
    det = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    try:
        L.seed_everything(seed, workers=True, verbose=False)
        train_sets, described = regime_pairs(regime, sources, seed)
        captioner = build_captioner(cfg.spec(), _texts(train_sets))
        val, tests = _eval_sets(cfg, sources, seed)
        common = frequent_caption(train_sets)
        stop = EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience, strict=False,
                             check_on_train_epoch_end=False)  # fmt: skip
        trainer = L.Trainer(
            **trainer_hardware(cfg, trainer_options), precision=cfg.precision,
            deterministic=cfg.deterministic, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps,
            callbacks=[stop], check_val_every_n_epoch=cfg.val_every, enable_checkpointing=False,
            logger=CSVLogger(run_dir, name="lightning", version=""), default_root_dir=run_dir,
            enable_model_summary=False,
            use_distributed_sampler=False, log_every_n_steps=1, num_sanity_val_steps=0,
        )  # fmt: skip
        device = _device(trainer)
        floors = _floors(cfg, captioner, tests, common, device) if rank_zero else ({}, {})
        untrained, frequent = floors
        shares = train_shares(train_sets, described, sources) if cfg.composition_weight else None
        weight = cfg.composition_weight if shares is not None else 0.0
        module = CaptionerModule(captioner, cfg.optim(), val, cfg.max_new_tokens, weight)
        dataset = CaptionImages(train_sets, captioner, train=True, shares=shares)
        eval_bs = cfg.eval_batch_size or cfg.batch_size
        with reraise_interrupt(trainer):
            trainer.fit(
                module,
                train_dataloaders=train_loader(dataset, cfg.batch_size, cfg.workers, seed,
                                               trainer.world_size, trainer.global_rank),
                val_dataloaders=eval_loader(val, captioner, eval_bs, cfg.workers),
            )  # fmt: skip
        steps = int(trainer.global_step)
        if not module.val_history or module.val_history[-1]["step"] != steps:
            captioner.model.to(_device(trainer))  # the last step fell between rounds
            module.validate_now(_device(trainer), eval_bs)
            captioner.model.to("cpu")
        if module.best_state is not None:
            captioner.model.load_state_dict(module.best_state)
        metrics: dict[str, Any] = {
            "regime": regime.name, "seed": seed, "epochs": int(trainer.current_epoch),
            "steps": steps, "tested_checkpoint": {"kind": "best", **(module.best or {})},
            "val_history": module.val_history,
            "data": {"train": described, "vocabulary": len(captioner.tokenizer)},
            "composition": {"weight": weight, "images_with_shares": _known(shares)},
            "checkpoint": "captioner",
        }  # fmt: skip
        if rank_zero:
            device = _device(trainer)
            captioner.model.to(device)
            test = {
                name: _test(cfg, captioner, ev, device, run_dir / "predictions" / f"{name}.csv")
                for name, ev in tests.items()
            }  # fmt: skip
            captioner.model.to("cpu")
            metrics.update(
                test=test, learning=learning_check(test, untrained, frequent, common),
                reference_consistency={n: reference_consistency(p, c) if c is not None else None
                                       for n, (p, c) in tests.items()},
                seconds=round(time.time() - t0, 3),
            )  # fmt: skip
            learned = metrics["learning"]["learned"]
            if not metrics["learning"]["passed"]:
                log.warning(
                    "%s/seed%d did not beat its floor (untrained model and most frequent "
                    "caption) on %s", regime.name, seed, ", ".join(k for k, v in learned.items() if not v),
                )  # fmt: skip
            save_captioner(run_dir / "captioner", captioner,
                           {"regime": regime.name, "seed": seed, "steps": steps})  # fmt: skip
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic) if p and Path(p).exists()],
                    outputs=json_safe({"test": test, "learning": metrics["learning"]}),
                    digest=[run_dir / "captioner" / "model.safetensors",
                            *(run_dir / "predictions" / f"{n}.csv" for n in tests)],
                )  # fmt: skip
            write_json(run_dir / "metrics.json", json_safe(metrics))  # last: marks it finished
        return metrics
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        if run is not None:
            run.close()
