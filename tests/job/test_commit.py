"""The commit (staging -> OUTPUT) under failures injected inside it, and its order on S3-like renames.

Failures are injected in Hadoop's FileSystem as the job sees it (`job.write.hadoop_fs` wrapped),
so the job's own commit code runs, against the real local file system.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from job import read, write
from job.config import JobConfig
from job.pipeline import run
from tests.job.fakes import tiny_jpegs, write_noisy_model

pytestmark = pytest.mark.slow


def local(path) -> Path:
    """A Hadoop Path (JVM object) on the local file system -> pathlib.Path."""
    return Path(str(path.toUri().getPath()))


def read_features(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "features").to_pandas().sort_values("path").reset_index(drop=True)


class FileSystem:
    """The job's Hadoop FileSystem with `rename` replaced and every file creation logged."""

    def __init__(self, fs, rename, log: list[tuple[str, Path]]) -> None:
        self._fs, self._rename, self.log = fs, rename, log

    def rename(self, source, target) -> bool:
        return self._rename(self._fs, source, target)

    def create(self, path, overwrite):
        self.log.append(("put", local(path)))
        return self._fs.create(path, overwrite)

    def __getattr__(self, name: str):
        return getattr(self._fs, name)


def s3_like_rename(log: list[tuple[str, Path]], fail_after: int | None = None):
    """A rename as S3 does it: each object copied in key order, then the source deleted."""

    def rename(fs, source, target) -> bool:
        src, dst = local(source), local(target)
        if not src.exists():
            return False
        files = sorted(p for p in src.rglob("*") if p.is_file())
        for copied, file in enumerate(sorted(files, key=lambda p: str(p.relative_to(src)))):
            if fail_after is not None and copied == fail_after:
                raise OSError(f"injected: copy failed after {copied} objects")
            destination = dst / file.relative_to(src)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)
            log.append(("put", destination))
        shutil.rmtree(src)
        return True

    return rename


def use_file_system(monkeypatch, rename, log) -> None:
    def hadoop_fs(spark, uri):
        fs, path = read.hadoop_fs(spark, uri)
        return FileSystem(fs, rename, log), path

    monkeypatch.setattr(write, "hadoop_fs", hadoop_fs)


@pytest.fixture()
def job(spark, tmp_path):
    """A config on 16 tiny images and a first, complete run of it."""
    images = tiny_jpegs(tmp_path / "in", 16)
    cfg = JobConfig(
        input=str(images),
        output=str(tmp_path / "out"),
        weights=str(write_noisy_model(tmp_path)),
        engine="onnx",
        k=2,
    )
    first = run(spark, cfg)
    return cfg, first, read_features(tmp_path / "out")


def staging_then(fs, source, target, then) -> bool:
    """Run `then` when the staging folder is renamed; other renames are Hadoop's own."""
    if ".incomplete-" in str(source):
        return then(fs, source, target)
    return fs.rename(source, target)


def vanish(fs, source, target) -> bool:
    fs.delete(source, True)  # the staging folder disappears just before its rename
    return fs.rename(source, target)


@pytest.mark.parametrize("failure", ["copy fails half-way", "staging vanishes"])
def test_failure_inside_the_commit_leaves_the_previous_output_complete(
    spark, job, tmp_path, monkeypatch, failure: str
) -> None:
    cfg, first, before = job
    out = Path(cfg.output)
    log: list[tuple[str, Path]] = []
    # "copy fails half-way": part of the new output is already in OUTPUT when the copy fails.
    broken = s3_like_rename(log, fail_after=3) if failure == "copy fails half-way" else vanish
    use_file_system(monkeypatch, lambda fs, s, t: staging_then(fs, s, t, broken), log)
    with pytest.raises(OSError):
        run(spark, cfg)
    assert json.loads((out / "metadata.json").read_text())["run_id"] == first["run_id"]
    pd.testing.assert_frame_equal(read_features(out), before)
    assert (out / "_SUCCESS").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "noisy.onnx", "out"]  # nothing left aside


def test_staging_without_features_commits_nothing(spark, job, tmp_path, monkeypatch) -> None:
    cfg, first, before = job
    out = Path(cfg.output)
    commit = write.commit

    def lose_features(spark, staging, output, run_id):
        write.delete(spark, f"{staging}/features")
        commit(spark, staging, output, run_id)

    monkeypatch.setattr(write, "commit", lose_features)
    with pytest.raises(OSError, match="lacks features"):
        run(spark, cfg)
    assert json.loads((out / "metadata.json").read_text())["run_id"] == first["run_id"]
    pd.testing.assert_frame_equal(read_features(out), before)
    assert (out / "_SUCCESS").is_file()


def test_success_appears_only_once_all_data_is_in_output(spark, job, monkeypatch) -> None:
    """On S3 a rename is a copy per object (in key order: `_SUCCESS` sorts before `features/`)."""
    cfg, _, _ = job
    out = Path(cfg.output)
    log: list[tuple[str, Path]] = []
    use_file_system(monkeypatch, s3_like_rename(log), log)
    second = run(spark, cfg)
    assert json.loads((out / "metadata.json").read_text())["run_id"] == second["run_id"]
    puts = [path for op, path in log if op == "put"]
    markers = [p for p in puts if p.name == "_SUCCESS" and p.parent.parent == out.parent]  # not features/_SUCCESS
    assert markers == [out / "_SUCCESS"], markers
    success = puts.index(out / "_SUCCESS")
    in_output = {p for p in out.rglob("*") if p.is_file() and p.name != "_SUCCESS" and not p.name.endswith(".crc")}
    assert any(p.parent.name == "features" for p in in_output)
    assert in_output <= set(puts[:success]), sorted(in_output - set(puts[:success]))
