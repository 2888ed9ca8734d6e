"""The grounding filter: keep the synthetic samples whose map and captions are verified.

:func:`filter_synthetic` reads per-sample scores -- the ``per_sample.parquet`` of
``evaluate synthetic``, or scores computed here with a segmenter -- applies threshold rules
and writes either a **manifest** (the decision for every sample, the passing ids) or a new
**dataset** of the passing samples (hard **links** or **copies** of their images and masks,
with ``metadata.parquet``, ``class_percentages/`` and ``captions/`` filtered to them), which
``groundsynth validate`` accepts.

Rules (a sample must pass every rule given):

- ``min_label_fidelity``: per-sample mIoU between a real-trained segmenter's prediction and
  the map (``miou``);
- ``min_caption_consistency``: share of the sample's captions judged consistent with its map
  (``caption_consistency``; 1.0 = every caption);
- ``min_confidence``: the ``confidence`` column of ``metadata.parquet`` (pseudo-label or
  generator confidence), when the dataset has one;
- ``class_share``: rules on class fractions such as ``Water<=0.9`` or ``Tree>=0.05``.

A sample lacking a score a rule needs fails that rule with reason ``<rule>:missing``
(``on_missing="pass"`` lets it through). Every failed rule is counted (a sample may fail
several) in ``filter_summary.json``; ``filter_decisions.parquet`` has one row per sample with
its reasons and ``filter_passed.csv`` lists the passing ``split,id``. Reruns with the same
configuration into the same directory skip the files already there; another configuration
there is refused.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.evaluate.filter_output import materialise, write_passed
from groundsynth.evaluate.filter_rules import (
    MODES,
    Check,
    FilterConfig,
    Mode,
    OnMissing,
    ShareRule,
)
from groundsynth.evaluate.sample_scores import describe_model
from groundsynth.io import atomic_path, write_json
from groundsynth.runs import file_digest, start_run, to_plain

__all__ = [
    "DECISIONS",
    "MODES",
    "PASSED",
    "SUMMARY",
    "Check",
    "FilterConfig",
    "ShareRule",
    "filter_synthetic",
]

logger = logging.getLogger(__name__)

DECISIONS = "filter_decisions.parquet"
PASSED = "filter_passed.csv"
SUMMARY = "filter_summary.json"
SCORES_DIR = "scores"


#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


def _prepare_out(cfg: FilterConfig) -> bool:
    """Check ``out``: empty/new (False), or the same configuration's earlier run (True)."""
    out = Path(cfg.out)
    if not out.exists() or not any(out.iterdir()):
        return False
    cfg_path = out / "config.yaml"
    if not cfg_path.is_file():
        raise OutputConflictError(
            f"{out} is not empty and holds no filter run (no config.yaml); choose a new --out"
        )
    import yaml

    try:
        old = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OutputConflictError(f"{cfg_path}: unreadable ({exc}); choose a new --out") from exc
    if old != to_plain(cfg):
        changed = sorted(
            k for k, v in to_plain(cfg).items() if not isinstance(old, dict) or old.get(k) != v
        )
        raise OutputConflictError(
            f"{out} holds a filter run with another configuration (differs in {changed}); "
            "choose a new --out or delete it"
        )
    logger.info("%s: resuming the filter run already there", out)
    return True


def filter_synthetic(
    synthetic: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    scores: str | os.PathLike[str] | None = None,
    model: Any = None,
    min_label_fidelity: float | None = None,
    min_caption_consistency: float | None = None,
    min_confidence: float | None = None,
    class_share: Sequence[str] = (),
    mode: Mode = "manifest",
    on_missing: OnMissing = "fail",
    splits: Sequence[str] | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Filter ``synthetic`` by per-sample scores; write a manifest or dataset in ``out``.

    Args:
        scores: ``per_sample.parquet`` of ``evaluate synthetic``. Without it, scores are
            computed here (``out/scores/per_sample.parquet``): label fidelity with ``model``
            (a checkpoint path or a model object), caption consistency from the dataset's
            caption tables, confidence and class fractions from its tables.
        class_share: rules such as ``"Water<=0.9"``.
        mode: ``manifest`` (decisions only), ``link`` (hard links; copies where the file
            system cannot link) or ``copy``.
        on_missing: ``fail`` (default) or ``pass`` samples lacking a score a rule needs.
        splits: splits to filter (default: the dataset's splits the scores cover; without
            scores ``synth`` when the dataset has it, else every split).
        progress: ``progress(stage, done, total)`` callback.

    Returns the summary written to ``filter_summary.json``.
    """
    model_path = isinstance(model, (str, os.PathLike))
    cfg = FilterConfig(
        synthetic=os.fspath(synthetic),
        out=os.fspath(out),
        scores=None if scores is None else os.fspath(scores),
        model=describe_model(model),
        min_label_fidelity=min_label_fidelity,
        min_caption_consistency=min_caption_consistency,
        min_confidence=min_confidence,
        class_share=tuple(class_share),
        mode=mode,
        on_missing=on_missing,
        splits=None if splits is None else tuple(splits),
        batch_size=batch_size,
        workers=workers,
        device=device,
    )
    if cfg.scores is not None and not Path(cfg.scores).is_file():
        raise InputError(
            f"{cfg.scores}: scores file not found (write it with `groundsynth evaluate synthetic`)"
        )
    reader = open_dataset(cfg.synthetic)
    available = reader.splits()
    unknown = [s for s in cfg.splits or () if s not in available]
    if unknown:
        raise InputError(
            f"{reader.root}: no split(s) {unknown}; splits here: {', '.join(available)}"
        )
    cfg = replace(
        cfg,
        splits=cfg.splits or _default_splits(available, cfg.scores),
        scores_sha256=file_digest(cfg.scores) if cfg.scores else None,
        model_sha256=file_digest(model) if model_path else None,
    )
    # every rule's score must exist before anything is written (a refused run leaves nothing)
    if cfg.scores is not None:
        _check_scores(cfg, Path(cfg.scores))
    else:
        _check_sources(cfg, reader)
    resume = _prepare_out(cfg)
    out_dir = Path(cfg.out)
    run = start_run(out_dir, "filter", cfg)
    try:
        if cfg.scores is not None:
            scores_path = Path(cfg.scores)
        else:
            scores_path = _score(cfg, reader, model, resume, progress)
            _check_scores(cfg, scores_path)  # computed, yet a score may be missing everywhere
        summary = _decide(cfg, reader, scores_path, progress)
        passing: dict[str, list[str]] = summary.pop("_passing")
        if cfg.mode != "manifest":
            summary["files"] = materialise(cfg, reader, passing, progress)
        write_json(out_dir / SUMMARY, summary)
        run.finish(
            inputs=[cfg.synthetic, *([cfg.scores] if cfg.scores else [])],
            outputs={"passed": summary["passed"], "failed": summary["failed"]},
            digest=[out_dir / DECISIONS, out_dir / PASSED],
        )
    finally:
        run.close()
    return summary


def _default_splits(available: list[str], scores: str | None) -> tuple[str, ...]:
    """The dataset's splits the scores cover; without scores ``synth`` if present, else all."""
    if scores is None:
        return ("synth",) if "synth" in available else tuple(available)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        scored = {
            str(v) for v in pc.unique(pq.read_table(scores, columns=["split"])["split"]).to_pylist()
        }
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{scores}: cannot read its 'split' column ({exc})") from exc
    chosen = tuple(s for s in available if s in scored)
    if not chosen:
        raise InputError(
            f"{scores}: its splits {sorted(scored)} are not splits of the dataset "
            f"({', '.join(available)}); are these the scores of this dataset?"
        )
    return chosen


def _score(
    cfg: FilterConfig, reader: DatasetReader, model: Any, resume: bool, progress: Progress | None
) -> Path:
    """Compute per-sample scores of the dataset (``out/scores/per_sample.parquet``)."""
    from groundsynth.evaluate.sample_scores import load_model, score_writer
    from groundsynth.evaluate.set_pass import SetPass
    from groundsynth.evaluate.synthetic import PER_SAMPLE, evaluate_split_captions

    dest = Path(cfg.out) / SCORES_DIR
    path = dest / PER_SAMPLE
    if resume and path.is_file():
        logger.info("reusing the scores of the earlier run: %s", path)
        return path
    net = device = None
    if model is not None:
        from groundsynth.benchmark.model import resolve_device

        device = resolve_device(cfg.device)
        net, _ = load_model(model, device)
    captions = None
    if cfg.min_caption_consistency is not None:
        _, captions = evaluate_split_captions(reader, cfg.splits, dest)  # type: ignore[arg-type]
    ids = {s: reader.ids(s) for s in cfg.splits or ()}
    with score_writer(path) as writer:
        SetPass(
            reader,
            name="score",
            default_origin="synthetic",
            model=net,
            device=device,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            features=False,
            writer=writer,
            captions=captions,
            progress=progress,
        ).run(ids, None)
    return path


#: What to do when a rule's score is missing, by scores column.
_HINTS = {
    "miou": "run `groundsynth evaluate synthetic` with --model, or filter with --model",
    "caption_consistency": "the dataset needs caption tables (captions/<split>.csv; "
    "write them with `groundsynth caption`)",
    "confidence": "metadata.parquet needs a 'confidence' column",
}


def _check_sources(cfg: FilterConfig, reader: DatasetReader) -> None:
    """Scores computed here: the dataset must have what each rule's score is computed from."""
    splits = list(cfg.splits or ())
    for check in cfg.checks():
        if check.column == "caption_consistency":
            found = any(reader.captions_path(s) is not None for s in splits)
        elif check.column == "confidence":
            found = any(c.lower().endswith("confidence") for c in reader.metadata_columns())
        else:  # miou: FilterConfig requires a model; class fractions: from the masks
            continue
        if not found:
            raise InputError(
                f"{reader.root}: no {check.column!r} score can be computed for split(s) "
                f"{splits}, so rule {check.rule} would reject every sample; "
                f"{_HINTS[check.column]}"
            )


def _check_scores(cfg: FilterConfig, path: Path) -> None:
    """Every rule's column must exist in ``path`` and hold some value."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read scores ({exc})") from exc
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    for need in {"id", "split"} | {c.column for c in cfg.checks()}:
        if need not in names:
            raise InputError(f"{path}: no column {need!r}; found {names}")
    if not meta.num_rows or cfg.on_missing == "pass":
        return
    import pandas as pd

    source = pq.ParquetFile(path)
    for check in cfg.checks():
        found = False
        for batch in source.iter_batches(batch_size=200_000, columns=[check.column]):
            values = pd.to_numeric(batch.column(0).to_pandas(), errors="coerce")
            if np.isfinite(values.to_numpy(np.float64, na_value=np.nan)).any():
                found = True
                break
        if not found:
            raise InputError(
                f"{path}: no sample has a {check.column!r} value, so rule {check.rule} would "
                f"reject every sample; {_HINTS.get(check.column, 'compute that score first')}"
            )


def _decide(
    cfg: FilterConfig, reader: DatasetReader, scores: Path, progress: Progress | None
) -> dict[str, Any]:
    """Apply the rules batch by batch; write decisions and passing ids; return the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    checks = cfg.checks()
    columns = sorted({"id", "split", "origin"} | {c.column for c in checks})
    source = pq.ParquetFile(scores)
    columns = [c for c in columns if c in source.schema_arrow.names]
    known = {s: set(reader.ids(s)) for s in cfg.splits or ()}
    seen: dict[str, set[str]] = {s: set() for s in known}
    passing: dict[str, list[str]] = {s: [] for s in known}
    fails: Counter[str] = Counter()
    only: Counter[str] = Counter()
    by_split: dict[str, Counter[str]] = {s: Counter() for s in known}
    by_origin: dict[str, Counter[str]] = {}
    skipped = Counter[str]()
    out = Path(cfg.out)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("origin", pa.string()),
            ("passed", pa.bool_()),
            ("reasons", pa.string()),
        ]
    )
    done = 0
    with (
        atomic_path(out / DECISIONS, suffix=".parquet") as tmp,
        pq.ParquetWriter(tmp, schema) as writer,
    ):
        for batch in source.iter_batches(batch_size=50_000, columns=columns):
            df = batch.to_pandas()
            df["id"] = df["id"].astype(str)
            df["split"] = df["split"].astype(str)
            df = df[df["split"].isin(list(known))]
            keep = np.array(
                [i in known[s] and i not in seen[s] for s, i in zip(df["split"], df["id"])],
                dtype=bool,
            )
            skipped["unknown_or_duplicate"] += int((~keep).sum())
            df = df[keep]
            for s, i in zip(df["split"], df["id"]):
                seen[s].add(i)
            reasons = _reasons(df, checks, cfg.on_missing)
            ok = np.array([not r for r in reasons], dtype=bool)
            origins = (
                df["origin"].fillna("synthetic").astype(str).tolist()
                if "origin" in df
                else ["synthetic"] * len(df)
            )
            for s, i, o, r in zip(df["split"], df["id"], origins, reasons):
                fails.update(r)
                if len(r) == 1:
                    only[r[0]] += 1
                if not r:
                    passing[s].append(i)
                by_split[s].update(["samples", *(["passed"] if not r else [])])
                by_origin.setdefault(o, Counter()).update(
                    ["samples", *(["passed"] if not r else [])]
                )
            table = {
                "id": df["id"].tolist(),
                "split": df["split"].tolist(),
                "origin": origins,
                "passed": ok.tolist(),
                "reasons": [";".join(r) for r in reasons],
            }
            writer.write_table(pa.table(table, schema=schema))
            done += len(df)
            if progress is not None:
                progress("filter", done, source.metadata.num_rows)
        # samples of the dataset the scores do not cover
        for s in known:
            missing = sorted(known[s].difference(seen[s]))
            if not missing:
                continue
            passed = cfg.on_missing == "pass"
            reason = "" if passed else "scores:missing"
            if passed:
                passing[s].extend(missing)
            else:
                fails[reason] += len(missing)
                only[reason] += len(missing)
            by_split[s].update({"samples": len(missing), "passed": len(missing) * passed})
            by_origin.setdefault("synthetic", Counter()).update(
                {"samples": len(missing), "passed": len(missing) * passed}
            )
            writer.write_table(
                pa.table(
                    {
                        "id": missing,
                        "split": [s] * len(missing),
                        "origin": [None] * len(missing),
                        "passed": [passed] * len(missing),
                        "reasons": [reason] * len(missing),
                    },
                    schema=schema,
                )
            )
            skipped["not_scored"] += len(missing)
    for s in passing:
        passing[s].sort()
    write_passed(out / PASSED, passing)
    total = sum(c["samples"] for c in by_split.values())
    n_pass = sum(len(v) for v in passing.values())
    summary = {
        "synthetic": str(reader.root),
        "scores": str(scores),
        "rules": list(cfg.rules),
        "on_missing": cfg.on_missing,
        "mode": cfg.mode,
        "samples": total,
        "passed": n_pass,
        "failed": total - n_pass,
        "pass_rate": round(n_pass / total, 6) if total else None,
        "failures_by_reason": dict(fails.most_common()),
        "failed_by_this_reason_only": dict(only.most_common()),
        "by_split": {s: _counts(c) for s, c in by_split.items()},
        "by_origin": {o: _counts(c) for o, c in sorted(by_origin.items())},
        "scores_not_covering_dataset": skipped["not_scored"],
        "scores_rows_ignored": skipped["unknown_or_duplicate"],
        "outputs": {"decisions": DECISIONS, "passed": PASSED},
        "notes": [
            "a sample may fail several rules: failures_by_reason counts every failed rule",
            "label fidelity is agreement between a real-trained segmenter and the map "
            "(WorldCover ~77 % accurate), not truth",
        ],
        "_passing": passing,
    }
    logger.info("filter: %d of %d samples pass (%s)", n_pass, total, ", ".join(cfg.rules))
    return summary


def _counts(c: Counter[str]) -> dict[str, int]:
    return {"samples": int(c["samples"]), "passed": int(c["passed"])}


def _reasons(df: Any, checks: list[Check], on_missing: str) -> list[list[str]]:
    """Per row, the reasons it fails (empty when it passes every rule)."""
    out: list[list[str]] = [[] for _ in range(len(df))]
    for check in checks:
        values = df[check.column].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = ~np.isfinite(values)
        with np.errstate(invalid="ignore"):
            bad = ~check.passes(values) & ~missing
        for k in np.flatnonzero(bad):
            out[k].append(check.failure)
        if on_missing == "fail":
            for k in np.flatnonzero(missing):
                out[k].append(f"{check.name}:missing")
    return out
