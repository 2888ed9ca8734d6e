"""Ctrl-C inside Lightning: hand it back to the caller as :class:`KeyboardInterrupt`.

Lightning catches ``KeyboardInterrupt`` inside ``trainer.fit`` / ``test`` / ``predict``, shuts
down, ignores further Ctrl-C and calls ``sys.exit(1)``, so a caller sees a bare ``SystemExit``
and cannot tell an interruption from a failure. Wrap each call::

    with reraise_interrupt(trainer):
        trainer.fit(module, datamodule=dm)

and an interruption arrives as ``KeyboardInterrupt`` (the CLI then says how to resume and
exits 130), with the process's SIGINT handler restored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["reraise_interrupt"]


@contextlib.contextmanager
def reraise_interrupt(trainer: Any) -> Iterator[None]:
    """Turn the ``SystemExit`` Lightning raises after Ctrl-C into ``KeyboardInterrupt``.

    Only a ``SystemExit`` raised while ``trainer.interrupted`` is true is turned; any other
    exception passes unchanged.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:
        if not getattr(trainer, "interrupted", False):
            raise
        if handler is not None:  # Lightning set SIG_IGN for its shutdown
            signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt from exc
