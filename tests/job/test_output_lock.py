"""The output lock (job.write.OutputLock) and the clean-up of what dead runs leave (write.remove_dead_runs),
on the local file system. The same mechanisms under real faults on a cluster: tests/emr/test_faults.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job import write
from job.config import JobConfig
from job.errors import JobFailed
from job.pipeline import run
from tests.job.fakes import tiny_jpegs, write_noisy_model


def plant(lock: Path, **fields) -> dict:
    record = {"tool": write.TOOL, "run_id": "other-run", "heartbeat": time.time(), "ttl_s": 120.0, **fields}
    lock.write_text(json.dumps(record))
    return record


def test_a_live_lock_of_another_machine_refuses_the_run(spark, tmp_path: Path) -> None:
    out = tmp_path / "out"
    plant(tmp_path / "out.lock", host="elsewhere", pid=1)
    lock = write.OutputLock(spark, str(out), "mine", ttl=120)
    with pytest.raises(JobFailed, match=r"is being written by another run \(other-run, driver elsewhere pid 1"):
        lock.acquire()
    assert json.loads((tmp_path / "out.lock").read_text())["run_id"] == "other-run"  # untouched


def test_a_lock_without_heartbeat_for_longer_than_its_ttl_is_taken_over(spark, tmp_path: Path) -> None:
    plant(tmp_path / "out.lock", host="elsewhere", pid=1, heartbeat=time.time() - 300)
    lock = write.OutputLock(spark, str(tmp_path / "out"), "mine", ttl=120)
    notes = lock.acquire()
    try:
        assert notes and "took over the output lock of run other-run (no heartbeat for 300 s" in notes[0]
        assert json.loads((tmp_path / "out.lock").read_text())["run_id"] == "mine"
    finally:
        lock.release()
    assert not (tmp_path / "out.lock").exists()


def test_the_holders_ttl_counts_when_it_is_longer(spark, tmp_path: Path) -> None:
    """A run with a long TTL heartbeats rarely: a reader with a short TTL must not judge it dead early."""
    plant(tmp_path / "out.lock", host="elsewhere", pid=1, heartbeat=time.time() - 30, ttl_s=600)
    with pytest.raises(JobFailed, match="being written by another run"):
        write.OutputLock(spark, str(tmp_path / "out"), "mine", ttl=10).acquire()


def test_a_lock_of_a_dead_driver_on_this_machine_is_taken_over_at_once(spark, tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = write.this_process()
    if "boot_id" not in me or "pid_namespace" not in me:
        pytest.skip("no /proc: only the TTL tells a dead driver here")
    plant(tmp_path / "out.lock", **{**me, "pid": int(gone.stdout), "pid_start": "1"})
    lock = write.OutputLock(spark, str(tmp_path / "out"), "mine", ttl=120)
    notes = lock.acquire()
    lock.release()
    assert notes and f"its driver, pid {int(gone.stdout)} on this machine, is gone" in notes[0]
    # This process itself, alive: not gone.
    assert not write.process_gone(me, me)


def test_the_heartbeat_advances_and_a_lost_lock_stops_the_commit(spark, tmp_path: Path) -> None:
    lock = write.OutputLock(spark, str(tmp_path / "out"), "mine", ttl=1.2)  # a beat every 0.5 s
    lock.acquire()
    try:
        first = json.loads((tmp_path / "out.lock").read_text())["heartbeat"]
        time.sleep(1.6)
        assert json.loads((tmp_path / "out.lock").read_text())["heartbeat"] > first
        lock.check()  # still ours
        plant(tmp_path / "out.lock", run_id="thief")  # another run took it (e.g. after a long pause)
        with pytest.raises(JobFailed, match=r"lost its output lock .*run thief"):
            lock.check()
    finally:
        lock.release()
    assert json.loads((tmp_path / "out.lock").read_text())["run_id"] == "thief"  # not ours: left alone


def test_remove_dead_runs_removes_other_staging_and_restores_a_cut_short_commit(spark, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("out.incomplete-dead", "out.incomplete-mine", "other.incomplete-x"):
        (tmp_path / name / "features").mkdir(parents=True)
    previous = tmp_path / "out.previous-dead"  # a commit killed between its two renames: no OUTPUT
    (previous / "features").mkdir(parents=True)
    (previous / "metadata.json").write_text("{}")
    done = write.remove_dead_runs(spark, str(out), "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.incomplete-x", "out", "out.incomplete-mine"]
    assert (out / "_SUCCESS").is_file() and (out / "metadata.json").is_file()
    assert any("restored" in line for line in done) and any("out.incomplete-dead" in line for line in done)
    # A leftover .previous beside a complete OUTPUT is only removed.
    (tmp_path / "out.previous-old" / "features").mkdir(parents=True)
    write.remove_dead_runs(spark, str(out), "mine")
    assert not (tmp_path / "out.previous-old").exists() and (out / "_SUCCESS").is_file()


@pytest.mark.slow
def test_a_run_to_a_locked_output_fails_before_staging_anything(spark, tmp_path: Path) -> None:
    images = tiny_jpegs(tmp_path / "in", 8)
    cfg = JobConfig(
        input=str(images), output=str(tmp_path / "out"), weights=str(write_noisy_model(tmp_path)), engine="onnx", k=2
    )
    plant(tmp_path / "out.lock", host="elsewhere", pid=1)
    with pytest.raises(JobFailed, match="being written by another run") as caught:
        run(spark, cfg)
    assert caught.value.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "noisy.onnx", "out.lock"]
