"""Incremental runs (--reuse): the planning functions, then the job end to end on the vendored images."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job import reuse
from job.config import JobConfig, UsageError
from job.pipeline import run
from tests.conftest import fruit_images

METADATA = {
    "model": "MobileNetV2 (include_top=False, pooling=avg, 224x224)",
    "engine": "onnx",
    "weights": {"sha256": "ab" * 32},
    "config": {"resize": "exact"},
}


# ---- compatibility, counts and packing: no Spark -----------------------------------------------


def test_identical_model_is_compatible() -> None:
    assert reuse.incompatibility(METADATA, json.loads(json.dumps(METADATA))) is None
    reuse.check_compatible(METADATA, METADATA, "s3://b/prev")


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"weights": {"sha256": "cd" * 32}}, "weights digest"),
        ({"engine": "tf"}, "engine"),
        ({"model": "another"}, "model"),
        ({"config": {"resize": "fast"}}, "resize mode"),
        ({"quantization": {"cache_key": "int8-of-other-calibration"}}, "int8 model"),
    ],
)
def test_any_model_difference_is_refused_in_one_line(changed: dict, named: str) -> None:
    current = {**METADATA, **changed}
    assert named in (reuse.incompatibility(METADATA, current) or "")
    with pytest.raises(UsageError) as caught:
        reuse.check_compatible(METADATA, current, "s3://b/prev")
    assert "\n" not in str(caught.value) and "s3://b/prev" in str(caught.value) and named in str(caught.value)


def test_a_field_the_previous_run_did_not_record_is_a_mismatch() -> None:
    previous = {key: value for key, value in METADATA.items() if key != "config"}
    assert "resize mode is not recorded" in (reuse.incompatibility(previous, METADATA) or "")


def test_incomplete_or_older_outputs_are_refused() -> None:
    data = json.dumps(METADATA).encode()
    assert reuse.read_previous_metadata(data, True, "p") == METADATA
    for args in ((data, False), (None, True), (b"{not json", True), (b"[1]", True)):
        with pytest.raises(UsageError):
            reuse.read_previous_metadata(*args, "p")
    reuse.check_columns(["path", "label", "features", "pca_features", "size", "modification_time"], "p")
    with pytest.raises(UsageError, match="lack size, modification_time"):
        reuse.check_columns(["path", "label", "features", "pca_features"], "p")


def test_counts_name_every_status() -> None:
    assert reuse.count_statuses([("new", 3), ("reused", 2)]) == {"reused": 2, "new": 3, "changed": 0, "removed": 0}
    with pytest.raises(ValueError):
        reuse.count_statuses([("odd", 1)])


def test_packed_features_are_the_same_float32_bits() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((5, 1280)).astype(np.float32)
    matrix[0, 0] = np.float32(1e-45)  # a denormal survives too
    column = pa.array([list(row) for row in matrix], type=pa.list_(pa.float32()))
    packed = reuse.packed_column(column.slice(1, 4))  # an offset slice, as Arrow batches may be
    assert packed.type == pa.binary()
    assert [np.frombuffer(v.as_py(), dtype="<f4").tobytes() for v in packed] == [r.tobytes() for r in matrix[1:]]


# ---- the split as DataFrame joins (any scheme: these are strings to Spark) -----------------------


@pytest.mark.parametrize("scheme", ["s3://bucket/in", "file:/data/in"])
def test_classify_splits_a_listing(spark, scheme: str) -> None:
    schema = "path string, size long, modification_time long"
    files = {"a/same.jpg": (10, 1000), "a/bigger.jpg": (12, 1000), "b/touched.jpg": (10, 2000), "b/new.jpg": (10, 1000)}
    recorded = {"a/same.jpg": (10, 1000), "a/bigger.jpg": (10, 1000), "b/touched.jpg": (10, 1000), "b/gone.jpg": (1, 9)}
    listed = spark.createDataFrame([(f"{scheme}/{name}", *file) for name, file in files.items()], schema)
    previous = spark.createDataFrame([(f"{scheme}/{name}", *file) for name, file in recorded.items()], schema)
    classified = reuse.classify(listed, previous)
    statuses = {row.path.rsplit("/", 1)[1]: row.status for row in classified.collect()}
    assert statuses == {
        "same.jpg": "reused",
        "bigger.jpg": "changed",
        "touched.jpg": "changed",
        "new.jpg": "new",
        "gone.jpg": "removed",
    }
    assert reuse.counts(classified) == {"reused": 1, "new": 1, "changed": 2, "removed": 1}
    todo = {row.path.rsplit("/", 1)[1] for row in reuse.to_featurize(classified).collect()}
    assert todo == {"bigger.jpg", "touched.jpg", "new.jpg"}


# ---- end to end on the vendored images ------------------------------------------------------------


def _copy(images: list[Path], root: Path) -> None:
    for src in images:
        dest = root / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)


def _features(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "features").to_pandas().set_index("path").sort_index()


@pytest.fixture(scope="module")
def incremental(spark, weights_file, tmp_path_factory) -> dict:
    """Run 1 on 80 images; then add 20, remove 5, touch 3; run 2 reuses run 1 into the same output."""
    root = tmp_path_factory.mktemp("reuse")
    source, out = root / "in", root / "out"
    images = fruit_images()
    later = images[::5]  # 20 images, two per class
    first = [p for p in images if p not in later]
    _copy(first, source)
    run(spark, JobConfig(input=str(source), output=str(out), weights=str(weights_file)))
    before = _features(out)
    removed = [source / p.parent.name / p.name for p in first[1:50:10]]  # 5
    touched = [source / p.parent.name / p.name for p in first[3:60:20]]  # 3
    for path in removed:
        path.unlink()
    for path in touched:
        mtime = path.stat().st_mtime + 120
        os.utime(path, (mtime, mtime))
    _copy(later, source)
    cfg = JobConfig(input=str(source), output=str(out), weights=str(weights_file), reuse=str(out))
    metadata = run(spark, cfg)
    return {
        "root": root,
        "source": source,
        "out": out,
        "before": before,
        "after": _features(out),
        "metadata": metadata,
        "removed": {f"file:{p}" for p in removed},
        "touched": {f"file:{p}" for p in touched},
        "added": {f"file:{source / p.parent.name / p.name}" for p in later},
    }


@pytest.mark.slow
def test_only_new_and_changed_images_go_through_the_model(incremental) -> None:
    counts = incremental["metadata"]["counts"]
    assert counts["model_processed"] == 23 == counts["new"] + counts["changed"]
    assert counts == {
        "listed": 95,
        "featurized": 95,
        "rejected": 0,
        "model_processed": 23,
        "reused": 72,
        "new": 20,
        "changed": 3,
        "removed": 5,
    }
    assert incremental["metadata"]["config"]["reuse"] == str(incremental["out"])
    assert "reuse" in incremental["metadata"]["timings_s"]
    assert json.loads((incremental["out"] / "metadata.json").read_text()) == incremental["metadata"]
    assert (incremental["out"] / "_SUCCESS").exists()
    leftovers = [p.name for p in incremental["root"].iterdir() if p.name not in ("in", "out")]
    assert leftovers == []


@pytest.mark.slow
def test_reused_features_are_bit_identical_and_files_recorded(incremental) -> None:
    before, after = incremental["before"], incremental["after"]
    assert set(after.index) == (set(before.index) - incremental["removed"]) | incremental["added"]
    reused = set(before.index) - incremental["removed"] - incremental["touched"]
    assert len(reused) == 72
    for path in reused:
        old = np.asarray(before.loc[path, "features"], dtype=np.float32)
        new = np.asarray(after.loc[path, "features"], dtype=np.float32)
        assert old.tobytes() == new.tobytes(), path
        assert after.loc[path, "modification_time"] == before.loc[path, "modification_time"]
    for path in incremental["touched"]:
        local = Path(path.removeprefix("file:"))
        assert after.loc[path, "modification_time"] == local.stat().st_mtime_ns // 1_000_000
        assert after.loc[path, "modification_time"] > before.loc[path, "modification_time"]
        assert after.loc[path, "size"] == local.stat().st_size
    schema = pq.read_schema(next((incremental["out"] / "features").glob("*.parquet")))
    assert schema.names == ["path", "label", "features", "pca_features", "size", "modification_time"]


@pytest.mark.slow
def test_pca_equals_a_full_recompute_on_the_final_set(spark, incremental, weights_file, tmp_path) -> None:
    after, metadata = incremental["after"], incremental["metadata"]
    x = np.stack(after["features"]).astype(np.float64)
    std = x.std(axis=0, ddof=1)
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    ratios = s**2 / np.sum(s**2)
    k = int(np.argmax(np.cumsum(ratios) >= 0.99) + 1)
    assert metadata["pca"]["k"] == k
    np.testing.assert_allclose(metadata["pca"]["explained_variance"][: len(ratios)], ratios, atol=1e-8)
    ours = np.stack(after["pca_features"])
    reference = z @ vt[:k].T
    signs = np.sign(np.sum(ours * reference, axis=0))
    gaps = np.abs(np.diff(s**2)) / (s[0] ** 2)
    separated = [j for j in range(k) if (j == 0 or gaps[j - 1] > 1e-6) and gaps[j] > 1e-6]
    assert len(separated) > k // 2
    np.testing.assert_allclose(
        ours[:, separated], (reference * signs)[:, separated], atol=1e-6 * np.abs(reference).max()
    )
    # The job without --reuse on the same final set: the same rows, features and spectrum.
    full_out = tmp_path / "full"
    full = run(spark, JobConfig(input=str(incremental["source"]), output=str(full_out), weights=str(weights_file)))
    assert full["counts"]["model_processed"] == 95 and "reused" not in full["counts"]
    recomputed = _features(full_out)
    assert list(recomputed.index) == list(after.index)
    np.testing.assert_allclose(np.stack(recomputed["features"]), x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full["pca"]["explained_variance"], metadata["pca"]["explained_variance"], atol=1e-5)


@pytest.mark.slow
def test_a_weights_mismatch_is_refused_and_changes_nothing(spark, incremental, weights_file, tmp_path) -> None:
    other = tmp_path / "other.weights.h5"
    other.write_bytes(weights_file.read_bytes() + b"\0")  # another digest; refused before it is loaded
    out = incremental["out"]
    listing_before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    for output in (out, tmp_path / "new"):
        cfg = JobConfig(input=str(incremental["source"]), output=str(output), weights=str(other), reuse=str(out))
        with pytest.raises(UsageError, match="weights digest"):
            run(spark, cfg)
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == listing_before
    assert not (tmp_path / "new").exists()
    assert not list(out.parent.glob("out.*")) and not list(tmp_path.glob("new.*"))


@pytest.mark.slow
def test_a_previous_output_without_success_is_refused(spark, incremental, weights_file, tmp_path) -> None:
    previous = tmp_path / "previous"
    shutil.copytree(incremental["out"], previous)
    (previous / "_SUCCESS").unlink()
    cfg = JobConfig(
        input=str(incremental["source"]), output=str(tmp_path / "new"), weights=str(weights_file), reuse=str(previous)
    )
    with pytest.raises(UsageError, match="not a complete featurizer output"):
        run(spark, cfg)
    assert not (tmp_path / "new").exists()


def _previous_output(root: Path, metadata: dict, rows: dict[str, tuple[int, int]]) -> Path:
    """A minimal previous output: features/ with the file columns, metadata.json and _SUCCESS."""
    (root / "features").mkdir(parents=True)
    table = pa.table(
        {
            "path": list(rows),
            "label": [path.rsplit("/", 2)[-2] for path in rows],
            "features": [[1.0] * 4 for _ in rows],
            "pca_features": [[0.5] for _ in rows],
            "size": [size for size, _ in rows.values()],
            "modification_time": [mtime for _, mtime in rows.values()],
        }
    )
    pq.write_table(table, root / "features" / "part-0.parquet")
    (root / "metadata.json").write_text(json.dumps(metadata))
    (root / "_SUCCESS").write_text("")
    return root


def test_dry_run_counts_what_would_be_reused(spark, tmp_path) -> None:
    previous = _previous_output(
        tmp_path / "prev",
        METADATA,
        {"s3://b/in/a/1.jpg": (10, 5), "s3://b/in/a/2.jpg": (10, 5), "s3://b/in/a/3.jpg": (10, 5)},
    )
    listed = spark.createDataFrame(
        [
            ("s3://b/in/a/1.jpg", 10, 5),
            ("s3://b/in/a/2.jpg", 11, 5),
            ("s3://b/in/b/4.jpg", 7, 5),
            ("s3://b/in/b/0.jpg", 0, 5),
        ],
        "path string, size long, modification_time long",
    )
    unknown_digest = {**METADATA, "weights": {"sha256": None}}  # a dry run with --weights imagenet
    counts = reuse.dry_run_counts(spark, str(previous), unknown_digest, listed)
    assert counts == {"would_featurize": 2, "would_reuse": 1, "new": 2, "changed": 1, "removed": 1}
    with pytest.raises(UsageError, match="engine"):
        reuse.dry_run_counts(spark, str(previous), {**unknown_digest, "engine": "tf"}, listed)
    with pytest.raises(UsageError, match="weights digest"):
        reuse.dry_run_counts(spark, str(previous), {**METADATA, "weights": {"sha256": "cd" * 32}}, listed)


def test_dry_run_identity_hashes_a_weights_file_only(spark, tmp_path) -> None:
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"weights")
    known = reuse.dry_run_identity(spark, "m", "onnx", "exact", str(weights))
    assert known["weights"]["sha256"] == "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"
    assert reuse.dry_run_identity(spark, "m", "onnx", "exact", "imagenet")["weights"]["sha256"] is None


@pytest.mark.slow
def test_nothing_changed_runs_no_image_through_the_model(spark, incremental, weights_file, tmp_path) -> None:
    out = tmp_path / "again"
    cfg = JobConfig(
        input=str(incremental["source"]), output=str(out), weights=str(weights_file), reuse=str(incremental["out"])
    )
    counts = run(spark, cfg)["counts"]
    assert counts["model_processed"] == 0 and counts["reused"] == counts["featurized"] == 95
    assert counts["new"] == counts["changed"] == counts["removed"] == 0
    again = _features(out)
    assert list(again.index) == list(incremental["after"].index)
    assert np.stack(again["features"]).tobytes() == np.stack(incremental["after"]["features"]).tobytes()


@pytest.mark.slow
def test_dry_run_reports_what_would_be_reused(spark, incremental, weights_file, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = JobConfig(
        input=str(incremental["source"]),
        output=str(out),
        weights=str(weights_file),
        reuse=str(incremental["out"]),
        dry_run=True,
    )
    report = run(spark, cfg)
    assert report["dry_run"] is True and not out.exists()
    assert report["counts"] == {
        "listed": 95,
        "would_featurize": 0,
        "would_reject": 0,
        "would_reuse": 95,
        "new": 0,
        "changed": 0,
        "removed": 0,
    }
    with pytest.raises(UsageError, match="engine"):
        run(spark, dataclasses.replace(cfg, engine="onnx"))


@pytest.mark.slow
def test_a_failed_incremental_run_into_its_previous_output_changes_nothing(
    spark, incremental, weights_file, monkeypatch
) -> None:
    out = incremental["out"]
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))

    def fail(*args, **kwargs):
        raise RuntimeError("injected: the PCA fit failed")

    monkeypatch.setattr("job.reduce.fit_pca", fail)  # after the reused rows were copied to staging
    cfg = JobConfig(input=str(incremental["source"]), output=str(out), weights=str(weights_file), reuse=str(out))
    with pytest.raises(RuntimeError, match="injected"):
        run(spark, cfg)
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["in", "out"]


def test_featurize_progress_counts_model_images_when_reusing() -> None:
    """With --reuse the scan's input records include the reused images' files: the model's count is used."""
    from types import SimpleNamespace

    from job.pipeline import featurize_count

    assert featurize_count(None, "group", SimpleNamespace(value=7), whole_listing=False)() == 7
