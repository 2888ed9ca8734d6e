"""Options every benchmark config shares: its data (sources, regimes, evaluation sets) and the
checks of its training loop. The configs of :mod:`.config`, :mod:`.retrieval_config` and
:mod:`.captioning_config` mix :class:`DataOptions` in and call :func:`check_training`."""

from __future__ import annotations

from typing import Any

from groundsynth.benchmark.data import DataPart, Regime, parse_eval_sets, parse_regime
from groundsynth.errors import InputError

__all__ = ["DataOptions", "check_training"]


class DataOptions:
    """Regimes and evaluation sets of a config with ``real``, ``synthetic``, ``train``,
    ``val`` and ``test`` attributes (a mixin of frozen dataclasses: no fields of its own)."""

    real: str | None
    synthetic: str | None
    train: tuple[str, ...]
    val: str
    test: str

    def regimes(self) -> list[Regime]:
        return [parse_regime(t) for t in self.train]

    def val_set(self) -> DataPart:
        return parse_eval_sets(self.val, "--val")[0]

    def test_sets(self) -> tuple[DataPart, ...]:
        return parse_eval_sets(self.test, "--test")

    def check_data(self, placeholder: str = "") -> None:
        """Refuse missing datasets or regimes, a regime given twice, several validation sets
        and a part whose source has no dataset (``--real{placeholder}`` in messages)."""
        if self.real is None and self.synthetic is None:
            raise InputError(
                f"no dataset given: pass --real{placeholder} and/or --synthetic{placeholder}"
            )
        if not self.train:
            raise InputError("no training regime given (e.g. --train real)")
        names = [r.name for r in self.regimes()]
        if len(set(names)) != len(names):
            raise InputError(f"a training regime is given twice: {names}")
        if len(parse_eval_sets(self.val, "--val")) != 1:
            raise InputError(f"--val takes one set (e.g. real), got {self.val!r}")
        given = {"real": self.real, "synthetic": self.synthetic}
        for what, parts in (
            *((f"--train {r.name}", r.parts) for r in self.regimes()),
            (f"--val {self.val}", (self.val_set(),)),
            (f"--test {self.test}", self.test_sets()),
        ):
            for part in parts:
                if given[part.source] is None:
                    raise InputError(
                        f"{what}: uses {part.source} data; pass --{part.source}{placeholder}"
                    )


def check_training(cfg: Any) -> None:
    """Seeds, step budget, early stopping, optimiser and determinism settings of the
    retrieval and captioning benchmarks."""
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise InputError(f"seeds must be distinct and at least one, got {list(cfg.seeds)}")
    if cfg.max_epochs < 1 or (cfg.max_steps != -1 and cfg.max_steps < 1):
        raise InputError(
            f"max_epochs must be >= 1 and max_steps >= 1 or -1, got {cfg.max_epochs}, {cfg.max_steps}"
        )
    if cfg.patience < 1 or cfg.val_every < 1 or cfg.num_nodes < 1 or cfg.workers < 0:
        raise InputError("patience, val_every and num_nodes must be >= 1 and workers >= 0")
    if not cfg.lr > 0 or cfg.weight_decay < 0 or not 0 <= cfg.warmup < 1:
        raise InputError("lr must be > 0, weight_decay >= 0 and warmup within [0, 1)")
    if cfg.deterministic not in (True, False, "warn"):
        raise InputError(f"deterministic must be true, false or 'warn', got {cfg.deterministic!r}")
