"""Run logs: runs going on side by side in two threads keep their own records; a thread
without a run (a file writer) logs into every open run; one thread's nested runs share."""

from __future__ import annotations

import logging
import threading

from groundsynth.runs import start_run

log = logging.getLogger("groundsynth.test")


def test_runs_in_two_threads_keep_their_own_records(tmp_path) -> None:
    outer = start_run(tmp_path / "outer", "outer", {"a": 1})
    ready, go = threading.Barrier(2), threading.Barrier(2)
    runs = {}

    def stage(name: str) -> None:
        runs[name] = start_run(tmp_path / name, name, {"name": name})
        ready.wait()  # both runs open at once
        log.info("message of %s", name)
        if name == "seg":  # a writer thread of the seg stage, without a run of its own
            writer = threading.Thread(target=lambda: log.info("from a writer"))
            writer.start()
            writer.join()
        go.wait()
        runs[name].close()

    threads = [threading.Thread(target=stage, args=(n,)) for n in ("seg", "ret")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    helper = threading.Thread(target=lambda: log.info("from a helper"))
    log.info("from the outer thread")
    helper.start()
    helper.join()
    outer.close()
    seg = (tmp_path / "seg" / "seg.log").read_text()
    ret = (tmp_path / "ret" / "ret.log").read_text()
    assert "message of seg" in seg and "message of ret" not in seg
    assert "message of ret" in ret and "message of seg" not in ret
    assert "from a writer" in seg
    text = (tmp_path / "outer" / "outer.log").read_text()
    assert "from the outer thread" in text and "from a helper" in text
    # the outer run's thread is not the stages': their records stay in their own logs
    assert "message of seg" not in text


def test_nested_runs_in_one_thread_both_log(tmp_path) -> None:
    outer = start_run(tmp_path / "outer", "outer", {})
    inner = start_run(tmp_path / "inner", "inner", {})
    log.info("inside both")
    inner.close()
    log.info("outer only")
    outer.close()
    assert "inside both" in (tmp_path / "inner" / "inner.log").read_text()
    text = (tmp_path / "outer" / "outer.log").read_text()
    assert "inside both" in text and "outer only" in text
