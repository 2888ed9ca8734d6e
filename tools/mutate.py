"""Mutation testing of the modules whose numbers users quote (``make mutate``).

Runs mutmut (3.x) on a scratch copy of the project, so the work tree never holds mutants:
the source and tests are synchronised into ``.mutate/<module>/`` (only changed files are copied,
with their times, so mutmut's own cache resumes an interrupted or repeated run; a change
to the module's tests starts its mutants over), a
``[tool.mutmut]`` section naming the chosen modules and their tests is written there, and
mutmut runs each mutant against the tests that exercise the mutated function. Prints, per
module, how many mutants were made, killed, survived, had no test or timed out, the time
taken, and then every survivor with its diff; writes the same as ``.mutate/report.json``.

Lines that only build messages (log calls, ``raise ...Error(...)`` bodies, warnings) are not
mutated: a changed message is not a wrong number. A survivor that cannot change behaviour (an
equivalent mutant) is marked in the source with ``# pragma: no mutate`` and a comment saying
why.

Usage::

    python tools/mutate.py                       # every target (tens of minutes on 2 cores)
    python tools/mutate.py data/splits.py io.py  # some targets
    python tools/mutate.py --list                # the targets and their tests
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/groundsynth"

#: module (under src/groundsynth) -> the tests that check its numbers
TARGETS: dict[str, list[str]] = {
    "benchmark/metrics.py": ["tests/benchmark/test_metrics.py"],
    "experiment/stats.py": ["tests/experiment/test_stats.py"],
    "experiment/tables.py": ["tests/experiment/test_tables.py"],
    "evaluate/fidelity.py": ["tests/evaluate/test_fidelity_composition.py"],
    "evaluate/caption_consistency.py": ["tests/evaluate/test_caption_metrics.py"],
    "data/splits.py": [
        "tests/data/test_splits.py",
        "tests/data/test_split_buffer.py",
        "tests/data/test_build.py::test_leakage_counts_test_patches_touching_train_on_a_hand_layout",
        "tests/data/test_build.py::test_split_by_source_holds_out_regions",
        "tests/data/test_build.py::test_blocked_splits_are_deterministic_and_spatial",
    ],
    "generate/pseudo_label.py": ["tests/benchmark/test_pseudo_label.py"],
    "generate/pseudo_label_chunks.py": ["tests/benchmark/test_pseudo_label.py"],
    "io.py": ["tests/test_io.py"],
}

#: statements that only say something; their mutants would change words, not results
QUIET_PATTERNS = [
    r"^\s*(log|logger)\.(debug|info|warning|error|exception)\(",
    r"^\s*raise \w+(Error|Exception)\(",
    r"^\s*warnings\.warn\(",
]

STATES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "segfault")


def _sync(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (Python and data files), copying only what changed."""
    wanted = set()
    for path in src.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        rel = path.relative_to(src)
        wanted.add(rel)
        target = dst / rel
        if target.exists() and filecmp.cmp(path, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    if dst.exists():
        for path in dst.rglob("*"):
            stale = path.is_file() and path.relative_to(dst) not in wanted
            if stale and "__pycache__" not in path.parts:
                path.unlink()


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _tests_digest(tests: list[str]) -> str:
    """A digest of the test files (and their shared helpers): mutmut reruns a mutant only
    when its function changed, so new tests would leave old survivors standing."""
    h = hashlib.sha256()
    files = {ROOT / t.split("::")[0] for t in tests}
    files |= {p for p in (ROOT / "tests").rglob("*.py") if not p.name.startswith("test_")}
    for path in sorted(files):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    h.update("\n".join(tests).encode())
    return h.hexdigest()


def _prepare(work: Path, targets: list[str]) -> None:
    tests = sorted({t for m in targets for t in TARGETS[m] if (ROOT / t.split("::")[0]).exists()})
    stamp = work / "tests.sha256"
    digest = _tests_digest(tests)
    if not stamp.exists() or stamp.read_text() != digest:
        shutil.rmtree(work / "mutants", ignore_errors=True)  # the tests changed: start over
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    for folder in ("src", "tests"):
        _sync(ROOT / folder, work / folder)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", pyproject)
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/"]\n'
        f"only_mutate = {_toml_list([f'{PACKAGE}/{m}' for m in targets])}\n"
        f"do_not_mutate_patterns = {_toml_list(QUIET_PATTERNS)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
    )
    (work / "pyproject.toml").write_text(pyproject)


def _results(work: Path, mutmut: str) -> dict[str, str]:
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    status = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and name.startswith("groundsynth."):
            status[name] = state.strip()
    return status


def _module_of(mutant: str) -> str:
    dotted = mutant.rsplit(".", 1)[0].removeprefix("groundsynth.")
    return dotted.replace(".", "/") + ".py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="modules under src/groundsynth (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--work", default=str(ROOT / ".mutate"), help="scratch folder")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-diffs", action="store_true", help="do not print survivors' diffs")
    args = parser.parse_args(argv)
    if args.list:
        for module, tests in TARGETS.items():
            print(f"{module:34s} {' '.join(tests)}")
        return 0
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; see --list")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        parser.error("mutmut is not installed: pip install 'groundsynth[dev]'")
    root = Path(args.work)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    status: dict[str, str] = {}
    workdir: dict[str, Path] = {}
    seconds = 0.0
    for target in targets:
        # one scratch copy per module: mutmut's cache then resumes each module on its own
        work = root / target.removesuffix(".py").replace("/", "-")
        _prepare(work, [target])
        t0 = time.perf_counter()
        run = subprocess.run(
            [mutmut, "run", "--max-children", str(args.max_children)],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seconds += time.perf_counter() - t0
        if run.returncode != 0:
            sys.stderr.write(f"mutmut failed on {target}:\n{run.stderr[-4000:]}")
            return run.returncode
        for name, state in _results(work, mutmut).items():
            if _module_of(name) == target:
                status[name] = state
                workdir[name] = work
    per_module = {t: dict.fromkeys(("mutants", *STATES), 0) for t in targets}
    for name, state in status.items():
        row = per_module[_module_of(name)]
        row["mutants"] += 1
        row[state] = row.get(state, 0) + 1
    print(f"mutation testing: {len(status)} mutants in {seconds:.0f} s")
    print(f"{'module':34s} {'mutants':>7s} {'killed':>6s} {'survived':>8s} {'no tests':>8s}")
    for module in sorted(per_module):
        r = per_module[module]
        print(
            f"{module:34s} {r['mutants']:7d} {r['killed']:6d} {r['survived']:8d} "
            f"{r['no tests']:8d}" + (f"  (timeout {r['timeout']})" if r["timeout"] else "")
        )
    survivors = sorted(n for n, s in status.items() if s in ("survived", "no tests"))
    for name in survivors:
        print(f"\n--- {name}: {status[name]}")
        if not args.no_diffs:
            diff = subprocess.run(
                [mutmut, "show", name], cwd=workdir[name], capture_output=True, text=True
            ).stdout
            print("\n".join(line for line in diff.splitlines() if line[:1] in "+-@"))
    report = {
        "seconds": round(seconds, 1),
        "modules": per_module,
        "survivors": {n: status[n] for n in survivors},
    }
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
