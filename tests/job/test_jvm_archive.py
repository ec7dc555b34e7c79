"""The class-data archive of local runs' JVMs (job/jvm_archive.py): keyed, checked, used, never fatal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark import SparkConf

from job import jvm_archive, session
from tests.conftest import REPO


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FEATURIZER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(jvm_archive.ENV, raising=False)
    return tmp_path / "cache"


def fake_archive(path: Path, size: int = 4096, record: int | None = None, header: bytes = jvm_archive.MAGIC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"\0" * (size - len(header)))
    jvm_archive.record_path(path).write_text(json.dumps({"size": size if record is None else record}))
    return path


def test_the_key_follows_the_conf_folder_the_jars_and_the_jvm(tmp_path, monkeypatch) -> None:
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    (home / "jars" / "spark-core.jar").write_bytes(b"x" * 10)
    monkeypatch.setenv("SPARK_HOME", str(home))
    base = jvm_archive.key("/etc/spark/conf")
    assert base is not None and base == jvm_archive.key("/etc/spark/conf")  # stable
    assert jvm_archive.key("/other/conf") != base  # the conf folder is on the JVM's classpath
    (home / "jars" / "spark-core.jar").write_bytes(b"x" * 11)
    assert jvm_archive.key("/etc/spark/conf") != base  # another Spark build
    rebuilt = jvm_archive.key("/etc/spark/conf")
    os.utime(home / "jars" / "spark-core.jar", (1_000_000, 1_000_000))  # reinstalled: same size, new time
    assert jvm_archive.key("/etc/spark/conf") != rebuilt  # the JVM would ignore the old archive
    monkeypatch.setenv("PATH", str(tmp_path))  # no java anywhere: no archive, no error
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert jvm_archive.key("/etc/spark/conf") is None and jvm_archive.archive_path("/etc/spark/conf") is None


def test_only_a_complete_archive_is_used(cache) -> None:
    archive = jvm_archive.archive_path("conf")
    assert archive is not None and archive.parent == cache / "jvm"
    assert jvm_archive.use_options("conf") is None  # none made yet
    fake_archive(archive, record=4095)  # still being written, or truncated since
    assert not jvm_archive.usable(archive) and jvm_archive.use_options("conf") is None
    fake_archive(archive, header=b"JUNK")
    assert not jvm_archive.usable(archive)
    fake_archive(archive)
    jvm_archive.record_path(archive).unlink()  # the record is written after the rename: no record, not done
    assert not jvm_archive.usable(archive)
    fake_archive(archive)
    options = jvm_archive.use_options("conf")
    assert options is not None and f"-XX:SharedArchiveFile={archive}" in options.split()
    assert "-Xlog:cds=off" in options.split()  # a JVM that cannot use it says nothing on the console


def test_archives_unused_for_a_month_are_removed_when_another_is_made(cache) -> None:
    folder = cache / "jvm"
    current = fake_archive(folder / "current.jsa")
    recent, old = fake_archive(folder / "recent.jsa"), fake_archive(folder / "old.jsa")
    dead_run = folder / ".x.jsa.123.tmp"  # an archiving run that died
    dead_run.write_bytes(b"partial")
    unfinished = folder / "unfinished.jsa"  # renamed into place, record never written
    unfinished.write_bytes(jvm_archive.MAGIC)
    now = 1_000 * 86400.0
    days = jvm_archive.UNUSED_DAYS

    def age(path: Path, days_ago: float) -> None:
        os.utime(path, (now - days_ago * 86400, now - days_ago * 86400))

    age(jvm_archive.record_path(current), 400)  # the one just made is kept whatever its times
    age(jvm_archive.record_path(recent), days - 1)
    age(jvm_archive.record_path(old), days + 1)  # last used over a month ago...
    age(old, 0)  # ...the archive file's own time does not count
    age(dead_run, days + 1)
    age(unfinished, days + 1)
    removed = jvm_archive.prune(current, now=now)
    assert sorted(p.name for p in removed) == [".x.jsa.123.tmp", "old.jsa", "unfinished.jsa"]
    assert sorted(p.name for p in folder.iterdir()) == ["current.jsa", "current.json", "recent.jsa", "recent.json"]


def test_using_an_archive_marks_it_used(cache) -> None:
    archive = fake_archive(jvm_archive.archive_path("conf"))
    record = jvm_archive.record_path(archive)
    os.utime(record, (0, 0))
    assert jvm_archive.use_options("conf") is not None
    assert record.stat().st_mtime > 86400  # touched now: a later prune keeps it
    assert json.loads(record.read_text())["size"] == 4096  # and left as it was


def test_off_means_off(cache, monkeypatch) -> None:
    fake_archive(jvm_archive.archive_path("conf"))
    monkeypatch.setenv(jvm_archive.ENV, "off")
    assert jvm_archive.use_options("conf") is None
    assert jvm_archive.main([]) == 0


def test_a_jvm_that_fails_with_the_archive_starts_again_without_it(cache, monkeypatch, capsys) -> None:
    archive = fake_archive(jvm_archive.archive_path("conf"))
    options = jvm_archive.use_options("conf")
    launches: list[str | None] = []

    def ensure_initialized(conf: SparkConf) -> None:
        launches.append(conf.get("spark.driver.extraJavaOptions"))
        if "SharedArchiveFile" in (launches[-1] or ""):
            raise RuntimeError("Java gateway process exited before sending its port number.")

    monkeypatch.setattr(session.SparkContext, "_ensure_initialized", ensure_initialized)
    session.launch_jvm(SparkConf(), {"spark.driver.extraJavaOptions": "-Dfrom.defaults=1"}, None, options)
    assert launches == [f"-Dfrom.defaults=1 {options}", "-Dfrom.defaults=1"]  # the user's options kept, both times
    assert not archive.exists() and not jvm_archive.record_path(archive).exists()
    assert f"class archive {archive}" in capsys.readouterr().err

    launches.clear()  # the job's own log options (quiet.driver_java_options) go first
    session.launch_jvm(SparkConf(), {}, "-Dlog4j2.configurationFile=x", None)
    assert launches == ["-Dlog4j2.configurationFile=x"]


PROBE = """
import json, sys
from job.config import JobConfig
from job.session import class_archive, start_spark
spark = start_spark(JobConfig(input="in", output="out", master="local[1]"))
jvm = spark.sparkContext._jvm
args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
pid = jvm.java.lang.ProcessHandle.current().pid()
mapped = sys.argv[1] in open(f"/proc/{pid}/maps").read()
count = spark.range(1000).count()
print("PROBE " + json.dumps({"args": args, "mapped": mapped, "record": class_archive(spark), "count": count}))
"""


def probe(env: dict[str, str], archive: Path, cwd: Path) -> tuple[dict, str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(archive)],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :]), run.stderr


@pytest.mark.slow
def test_a_local_jvm_maps_the_archive_and_survives_a_damaged_one(tmp_path) -> None:
    """The archive of this machine's setup (made here if scripts/setup.sh has not made it) is mapped by
    a local session's JVM; a truncated copy (which crashes a JVM) is removed and the session starts."""
    env = {k: v for k, v in os.environ.items() if k != jvm_archive.ENV}
    conf_dir = session.spark_conf_dir()
    archive = jvm_archive.archive_path(conf_dir)
    assert archive is not None
    if not jvm_archive.usable(archive):
        jvm_archive.create(conf_dir)  # what `python -m job.jvm_archive` does; setup.sh runs it first
    work = tmp_path / "work"
    work.mkdir()
    seen, _ = probe(env, archive, work)
    assert seen["mapped"] and seen["count"] == 1000
    assert f"-XX:SharedArchiveFile={archive}" in seen["args"]
    assert seen["record"] == {"file": str(archive), "mapped": True}  # what metadata.json records

    cache = tmp_path / "cache"  # a damaged copy under the same key, in another cache folder
    damaged = cache / "jvm" / archive.name
    damaged.parent.mkdir(parents=True)
    with archive.open("rb") as whole, damaged.open("wb") as half:
        shutil.copyfileobj(whole, half, length=1 << 20)
        half.truncate(archive.stat().st_size // 2)
    jvm_archive.record_path(damaged).write_text(json.dumps({"size": damaged.stat().st_size}))
    seen, stderr = probe({**env, "FEATURIZER_CACHE_DIR": str(cache)}, damaged, work)
    assert seen["count"] == 1000 and not seen["mapped"]
    assert not any("SharedArchiveFile" in arg for arg in seen["args"]) and seen["record"] is None
    assert "did not start with its class archive" in stderr and not damaged.exists()
    assert not list(work.iterdir())  # the crashed JVM's hs_err file went beside the archive, not here
    assert list(damaged.parent.glob("hs_err_pid*.log"))
