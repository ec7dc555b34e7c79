"""The two-level model cache (job/model_cache.py): this machine's folder, then --model-cache (any Hadoop URI).

The converter is replaced by a stub that returns a valid model, so these tests need no TensorFlow; the
shared level is a real HadoopStore over file:// through the session's JVM, as S3 is on EMR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job import model_cache, onnx_engine
from job.config import JobConfig, from_argv
from job.errors import UsageError
from job.model_cache import HadoopStore, LocalStore
from tests.job.fakes import noisy_model_onnx

MODEL = noisy_model_onnx()
SHA = "c" * 64


@pytest.fixture
def converter(monkeypatch) -> list[str]:
    """Replace the Keras -> ONNX conversion with a stub; the list records each conversion."""
    calls: list[str] = []
    monkeypatch.setattr(onnx_engine, "keras_weights_to_onnx", lambda data, suffix: calls.append(suffix) or MODEL)
    return calls


def convert(levels) -> tuple[bytes, dict]:
    return onnx_engine.cached_keras_weights_to_onnx(b"weights", ".weights.h5", SHA, None, levels)


def test_a_fresh_machine_takes_the_model_from_the_shared_level_and_keeps_a_local_copy(
    spark, converter: list[str], tmp_path: Path
) -> None:
    shared = f"file://{tmp_path / 'shared'}"
    data, record = convert([LocalStore(tmp_path / "node-1"), HadoopStore(spark, shared)])
    key = record["cache_key"]
    assert data == MODEL and converter == [".weights.h5"] and record["from_cache"] is False
    assert record["cache_error"] is None and record["cache_levels"] == [str(tmp_path / "node-1"), shared]
    for folder in (tmp_path / "node-1", tmp_path / "shared"):  # written to both levels, with what the key covers
        assert (folder / f"{key}.onnx").read_bytes() == MODEL
        assert json.loads((folder / f"{key}.json").read_text())["weights_sha256"] == SHA
    assert sorted(p.name for p in (tmp_path / "shared").iterdir() if not p.name.startswith(".")) == sorted(
        [f"{key}.onnx", f"{key}.json"]
    )
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.endswith(".tmp")]  # renamed into place

    again, hit = convert([LocalStore(tmp_path / "node-2"), HadoopStore(spark, shared)])
    assert again == MODEL and converter == [".weights.h5"]  # not converted again
    assert hit["from_cache"] is True and hit["cache_file"] == f"{shared}/{key}.onnx" and hit["conversion_s"] is None
    assert (tmp_path / "node-2" / f"{key}.onnx").read_bytes() == MODEL  # the next run on node 2 stays local
    assert (tmp_path / "node-2" / f"{key}.json").read_bytes() == (tmp_path / "shared" / f"{key}.json").read_bytes()

    _, local_hit = convert([LocalStore(tmp_path / "node-2"), HadoopStore(spark, shared)])
    assert local_hit["cache_file"] == str(tmp_path / "node-2" / f"{key}.onnx") and converter == [".weights.h5"]


def test_a_local_hit_still_fills_a_newly_given_shared_level(spark, converter: list[str], tmp_path: Path) -> None:
    """A model this machine already had reaches --model-cache when it is added, for the next cluster."""
    _, first = convert([LocalStore(tmp_path / "local")])
    key = first["cache_key"]
    shared = tmp_path / "shared"
    data, record = convert([LocalStore(tmp_path / "local"), HadoopStore(spark, f"file://{shared}")])
    assert data == MODEL and converter == [".weights.h5"]  # converted once, by the first run
    assert record["from_cache"] is True and record["cache_file"] == str(tmp_path / "local" / f"{key}.onnx")
    assert record["cache_error"] is None
    assert (shared / f"{key}.onnx").read_bytes() == MODEL
    assert (shared / f"{key}.json").read_bytes() == (tmp_path / "local" / f"{key}.json").read_bytes()

    class Unreachable:
        folder = "s3://b/cache"

        def location(self, name: str) -> str:
            return f"{self.folder}/{name}"

        def exists(self, name: str) -> bool:
            raise OSError("AccessDenied")

    _, record = convert([LocalStore(tmp_path / "local"), Unreachable()])
    assert record["from_cache"] is True  # the run goes on with its local copy
    assert record["cache_error"] == f"could not check the cache at s3://b/cache/{key}.onnx: AccessDenied"


def test_a_bad_copy_is_skipped_noted_and_replaced(spark, converter: list[str], tmp_path: Path) -> None:
    key, _ = onnx_engine.conversion_key(SHA, ".weights.h5")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / f"{key}.onnx").write_bytes(b"truncated")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / f"{key}.onnx").write_bytes(MODEL)
    data, record = convert([LocalStore(tmp_path / "local"), HadoopStore(spark, f"file://{shared}")])
    assert data == MODEL and converter == [] and record["from_cache"] is True
    assert "cached model ignored" in record["cache_error"] and str(tmp_path / "local") in record["cache_error"]
    assert (tmp_path / "local" / f"{key}.onnx").read_bytes() == MODEL  # replaced by the good copy

    (shared / f"{key}.onnx").write_bytes(b"also truncated")
    (tmp_path / "local" / f"{key}.onnx").unlink()
    data, record = convert([LocalStore(tmp_path / "local"), HadoopStore(spark, f"file://{shared}")])
    assert data == MODEL and converter == [".weights.h5"] and record["from_cache"] is False
    assert (shared / f"{key}.onnx").read_bytes() == MODEL  # the bad shared copy is replaced too


def test_a_shared_level_that_cannot_be_written_does_not_fail_the_run(
    spark, converter: list[str], tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    data, record = convert([LocalStore(tmp_path / "local"), HadoopStore(spark, f"file://{blocked}/models")])
    assert data == MODEL and record["from_cache"] is False
    assert "could not write the cache at file://" in record["cache_error"]
    assert "ParentNotDirectoryException" in record["cache_error"]  # Hadoop's own reason, not Py4J's call name
    assert (tmp_path / "local" / f"{record['cache_key']}.onnx").is_file()  # the local level still got it


def test_fetch_reports_an_unreadable_level_and_goes_on() -> None:
    class Unreadable:
        folder = "s3://b/cache"

        def location(self, name: str) -> str:
            return f"{self.folder}/{name}"

        def read(self, name: str) -> bytes | None:
            raise OSError("AccessDenied")

        def write(self, name: str, data: bytes) -> None:
            raise OSError("AccessDenied")

    record: dict = {"cache_error": None}
    assert model_cache.fetch([Unreadable()], "m.onnx", record, onnx_engine.validate) is None
    assert record["cache_error"] == "could not read the cache at s3://b/cache/m.onnx: AccessDenied"


def test_the_pipeline_passes_model_cache_to_the_conversion(spark, converter: list[str], tmp_path: Path, monkeypatch):
    from job import model as model_lib
    from job.pipeline import engine_spec

    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(tmp_path / "local"))
    shared = f"file://{tmp_path / 'shared'}"
    cfg = JobConfig(input="in", output="out", engine="onnx", model_cache=shared)
    blob = model_lib.WeightsBlob.of(b"weights", ".weights.h5", "w.weights.h5")
    spec = engine_spec(spark, cfg, blob)
    assert spec.onnx_model["cache_levels"] == [str(tmp_path / "local" / "onnx"), shared]
    assert converter == [".weights.h5"]
    assert (tmp_path / "shared" / f"{spec.onnx_model['cache_key']}.onnx").is_file()


def test_model_cache_none_turns_a_deployments_default_off(tmp_path: Path, monkeypatch) -> None:
    args = ["--input", "s3://b/raw/", "--output", "s3://b/results/r1/", "--model-cache", "none"]
    cfg = from_argv(args)
    assert cfg.model_cache == "none" and cfg.shared_model_cache is None
    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(tmp_path))
    assert [level.folder for level in model_cache.stores(None, cfg.shared_model_cache)] == [str(tmp_path / "onnx")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("s3://b/results/r1/models", "not --output or inside it"),
        ("s3://b/raw/", "not --input or inside it"),
    ],
)
def test_model_cache_must_be_a_folder_of_its_own(value: str, message: str) -> None:
    args = ["--input", "s3://b/raw/", "--output", "s3://b/results/r1/"]
    assert from_argv([*args, "--model-cache", "s3://b/cache/models/"]).model_cache == "s3://b/cache/models/"
    with pytest.raises(UsageError, match=message):
        from_argv([*args, "--model-cache", value])
