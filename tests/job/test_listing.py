"""Issue 13 §1: the listing is a DataFrame of file statuses, accounting is a distributed anti-join, and
the dry run lists, accounts and plans without the model. Nothing per file reaches the driver."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pyspark import RDD
from pyspark.sql import DataFrame

from job import read
from job.config import DEFAULT_GLOB
from job.dryrun import empty_files
from job.errors import JobFailed
from job.pipeline import account
from job.read import (
    EMPTY_FILE,
    NOT_READ,
    UNREADABLE_STATUS,
    list_inputs,
    parse_statuses,
    split_statuses,
    spread_paths,
    stage_listing,
)
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def tiny_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 40, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def build_tree(root: Path, classes: int, per_class: int) -> dict[str, int]:
    """Valid JPEGs in class folders, plus one of each kind of odd file; returns the expected counts."""
    for c in range(classes):
        folder = root / f"class {c:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"img {i}.jpg").write_bytes(tiny_jpeg(c * per_class + i))
    odd = root / "class 000"
    (odd / "zero.jpg").write_bytes(b"")
    (odd / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (odd / ".hidden.jpg").write_bytes(tiny_jpeg(1))
    (odd / "_hidden.jpg").write_bytes(tiny_jpeg(2))
    (odd / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    (root / ".cache" / "inside hidden folder.jpg").write_bytes(tiny_jpeg(3))
    return {"listed": classes * per_class + 2, "empty": 1, "hidden": 3, "no_match": 1}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("listing") / "in"
    return root, build_tree(root, classes=3, per_class=4)


def test_the_listing_is_a_dataframe_of_every_matching_file(spark, tree) -> None:
    root, expected = tree
    listing = list_inputs(spark, str(root), DEFAULT_GLOB)
    assert isinstance(listing.statuses, DataFrame) and listing.statuses.columns == ["path", "size", "modification_time"]
    rows = {row.path: row for row in listing.statuses.collect()}  # the test's own collect, on 14 files
    assert len(listing) == len(rows) == expected["listed"]
    scanned = {row.path for row in listing.source.select("path").collect()}
    assert scanned == set(rows) - {f"file:{root}/class 000/zero.jpg"}  # the same path text as the scan writes
    for path, row in rows.items():
        local = Path(path.removeprefix("file:"))
        assert row.size == local.stat().st_size
        assert abs(row.modification_time - local.stat().st_mtime * 1000) < 1000


TAIL = "access_time=0; owner=u; group=g; permission=rw-r--r--; isSymlink=false; hasAcl=false; isEncrypted=false; "


def status_text(kind: str, path: str, size: int, mtime: int, after: str = "") -> str:
    head = f"{kind}{{path={path}; isDirectory=false; length={size}; replication=1; blocksize=33554432; "
    return f"{head}modification_time={mtime}; {TAIL}isErasureCoded=false}}{after}"


def test_status_texts_of_every_filesystem_shape_parse_in_the_jvm(spark) -> None:
    """Plain, located and S3A statuses (S3A prints more after the closing brace), and paths with the
    separators in them; split with the job's own JVM pattern, parsed by the job's own SQL."""
    statuses = [
        status_text("LocatedFileStatus", "file:/in/a b/x, y}.jpg", 10, 1),
        status_text(
            "S3ALocatedFileStatus", "s3a://bucket/k/1.jpg", 0, 2, " isEmptyDirectory=FALSE eTag=abc versionId=null"
        ),
        status_text("FileStatus", "s3://bucket/k/2; v.jpg", 7, 3),
        status_text("S3AFileStatus", "s3a://bucket/k/3.jpg", 9, 4, " isEmptyDirectory=UNKNOWN eTag=d versionId=e"),
    ]
    text = spark.sparkContext._jvm.java.lang.StringBuilder().append("[" + ", ".join(statuses) + "]")
    elements, frame = split_statuses(spark, text)
    assert elements.size() == len(statuses)
    rows = [tuple(row) for row in parse_statuses(frame).collect()]
    assert rows == [
        ("file:/in/a b/x, y}.jpg", 10, 1),
        ("s3a://bucket/k/1.jpg", 0, 2),
        ("s3://bucket/k/2; v.jpg", 7, 3),
        ("s3a://bucket/k/3.jpg", 9, 4),
    ]


def test_a_status_text_that_does_not_parse_fails_instead_of_dropping_its_file(spark) -> None:
    good = status_text("LocatedFileStatus", "file:/in/a.jpg", 10, 1)
    frame = spark.createDataFrame([(good,), ("WeirdStatus(path=file:/in/b.jpg)",)], "value string")
    with pytest.raises(Exception, match="unknown format"):
        parse_statuses(frame).collect()
    assert "please report" in UNREADABLE_STATUS


def test_accounting_is_an_anti_join_with_reasons(spark, tree) -> None:
    root, _ = tree
    listing = list_inputs(spark, str(root), DEFAULT_GLOB)
    returned = listing.source.select("path")  # what a scan returns: every file with bytes
    rejected = {row.path.rsplit("/", 1)[-1]: row.reason for row in account(listing, returned).collect()}
    assert rejected == {"zero.jpg": EMPTY_FILE}

    gone = f"file:{root}/class 001/img 0.jpg"  # listed with bytes, not returned: removed or changed meanwhile
    partial = returned.filter(returned.path != gone)
    rejected = {row.path: row.reason for row in account(listing, partial).collect()}
    assert rejected[gone] == NOT_READ and len(rejected) == 2

    extra = returned.unionByName(returned.sparkSession.createDataFrame([("file:/new/arrival.jpg",)], "path string"))
    with pytest.raises(JobFailed, match=r"input changed during the run: 1 new file\(s\), e\.g\. file:/new/arrival"):
        account(listing, extra)


def test_spread_paths_picks_evenly_over_sorted_paths(spark, tree) -> None:
    root, _ = tree
    listing = list_inputs(spark, str(root), DEFAULT_GLOB)
    every = sorted(row.path for row in listing.statuses.collect())
    assert spread_paths(listing, 100) == every
    step = len(every) / 4
    assert spread_paths(listing, 4) == [every[int(i * step)] for i in range(4)]


def plan_text(frame: DataFrame) -> str:
    return str(frame._jdf.queryExecution().analyzed().toString())


def test_staged_listing_is_read_back_from_parquet_chunk_by_chunk(spark, tree, tmp_path, monkeypatch) -> None:
    """A real run's listing: written to staging one chunk at a time, its plan a Parquet scan (no rows held)."""
    root, expected = tree
    monkeypatch.setattr(read, "STATUS_CHUNK", 5)  # 14 files: chunks of 5, 5, 4
    listing = list_inputs(spark, str(root), DEFAULT_GLOB)
    chunks = list(listing.chunks())
    assert [chunk.count() for chunk in chunks] == [5, 5, 4] and all("LocalRelation" in plan_text(c) for c in chunks)
    assert empty_files(listing) == expected["empty"]  # summed over the chunks
    in_memory = sorted(tuple(row) for row in listing.statuses.collect())
    staged = stage_listing(list_inputs(spark, str(root), DEFAULT_GLOB), str(tmp_path / "listing"))
    assert len(list((tmp_path / "listing").glob("part-*.parquet"))) == 3  # one file per chunk
    assert "LocalRelation" not in plan_text(staged.statuses) and "Relation [path" in plan_text(staged.statuses)
    assert sorted(tuple(row) for row in staged.statuses.collect()) == in_memory
    assert len(staged) == expected["listed"] and list(staged.chunks()) == [staged.statuses]
    rejected = {
        row.path.rsplit("/", 1)[-1]: row.reason for row in account(staged, staged.source.select("path")).collect()
    }
    assert rejected == {"zero.jpg": EMPTY_FILE}


def test_the_listing_rows_are_built_only_when_used(spark, tree, monkeypatch) -> None:
    root, _ = tree
    built = []
    monkeypatch.setattr(read, "status_chunks", lambda *a: built.append(a) or iter(()))
    listing = list_inputs(spark, str(root), DEFAULT_GLOB)
    assert not built and len(listing) > 0
    listing.statuses  # noqa: B018 - built on first use, once
    listing.statuses  # noqa: B018
    assert len(built) == 1


class DriverCalls:
    """Counts Py4J round-trips (not the memory commands Python's garbage collector sends whenever it
    runs) and the rows each collect brings to the driver."""

    def __init__(self, spark, monkeypatch) -> None:
        self.calls = 0
        self.collected: list[int] = []
        client = spark.sparkContext._gateway._gateway_client
        send = client.send_command

        def counting_send(command, *args, **kwargs):
            self.calls += not command.startswith("m\n")
            return send(command, *args, **kwargs)

        monkeypatch.setattr(client, "send_command", counting_send)
        for cls in (DataFrame, RDD):
            collect = cls.collect

            def recording_collect(frame, _collect=collect):
                rows = _collect(frame)
                self.collected.append(len(rows))
                return rows

            monkeypatch.setattr(cls, "collect", recording_collect)


def list_and_account(spark, root: Path, monkeypatch) -> DriverCalls:
    """Lists, counts empty files as a dry run does, stages the listing as a real run does, and accounts."""
    staging = root.parent / f"staged-{root.name}-{len(list(root.parent.glob('staged-*')))}"
    with monkeypatch.context() as patch:
        spy = DriverCalls(spark, patch)
        listing = list_inputs(spark, str(root), DEFAULT_GLOB)
        assert empty_files(listing) == 1
        listing = stage_listing(listing, str(staging))
        rejected = account(listing, listing.source.select("path"))
        assert rejected.count() == 1 and len(listing) > 0
    return spy


def test_no_driver_call_or_collected_row_per_file(spark, tmp_path, monkeypatch) -> None:
    """Ten times the files (in as many class folders) cost the driver the same Py4J calls and rows."""
    small, large = tmp_path / "small", tmp_path / "large"
    build_tree(small, classes=40, per_class=2)
    build_tree(large, classes=40, per_class=20)
    list_and_account(spark, small, monkeypatch)  # warm-up: first-use reflection lookups
    few = list_and_account(spark, small, monkeypatch)
    many = list_and_account(spark, large, monkeypatch)
    assert many.calls == few.calls, (few.calls, many.calls)
    assert max(many.collected, default=0) <= 1, many.collected


POISON = "raise ImportError('the dry run must not load a model')\n"


def test_dry_run_counts_by_reason_without_model_or_output(tree, tmp_path) -> None:
    root, expected = tree
    poisoned = tmp_path / "poisoned"
    for name in ("tensorflow", "keras", "onnxruntime", "tf2onnx"):
        (poisoned / name).mkdir(parents=True)
        (poisoned / name / "__init__.py").write_text(POISON)
    weights = tmp_path / "unreadable.h5"
    weights.write_bytes(b"not a weights file: loading it would fail")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{poisoned}{os.pathsep}{REPO}"}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "job", "--input", str(root), "--output", str(out), "--weights", str(weights)),
            *("--engine", "onnx", "--master", "local[2]", "--dry-run"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert f"listed {expected['listed']:,} images" in text
    assert f"would featurize {expected['listed'] - expected['empty']:,}" in text
    assert f"would reject {expected['empty']}\n    {expected['empty']} {EMPTY_FILE}" in text
    assert f"{expected['hidden']} hidden" in text and f"{expected['no_match']} name does not match --glob" in text
    assert "featurize: 2 partitions" in text
    assert not out.exists() and not list(tmp_path.glob("out*"))
