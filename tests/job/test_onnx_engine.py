"""The ONNX Runtime engine: same features as the TensorFlow engine, and no TensorFlow on executors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from job.config import JobConfig
from job.decode import decode_batch
from job.pipeline import run
from tests.conftest import REPO, fruit_images

pytestmark = pytest.mark.slow
HEAVY = ("tensorflow", "keras", "tf2onnx", "tf_keras")


def assert_close_to_tf(ours: np.ndarray, tf_features: np.ndarray) -> None:
    """Within 1e-4 relative: the largest error over the largest feature, and element-wise (1e-4 relative
    plus 5e-5 absolute: the two engines' float32 kernels accumulate differently over 53 layers, which
    moves features of ~0.3 by up to ~5e-5 with the test weights, a few parts in 1e5 of the scale)."""
    assert float(np.abs(tf_features).mean()) > 1e-3  # calibrated weights: not degenerate
    np.testing.assert_allclose(ours, tf_features, rtol=1e-4, atol=5e-5)
    assert float(np.abs(ours - tf_features).max() / np.abs(tf_features).max()) < 1e-4


@pytest.fixture(autouse=True)
def own_model_cache(tmp_path: Path, monkeypatch) -> Path:
    """Each test converts into its own cache folder: a run here never reads or fills ~/.cache."""
    from job.onnx_engine import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "model-cache"))
    return tmp_path / "model-cache"


@pytest.fixture(scope="module")
def onnx_bytes(onnx_model_file: Path) -> bytes:
    return onnx_model_file.read_bytes()  # weights_file, exported once per run (tests/conftest.py)


@pytest.fixture(scope="module")
def sample() -> list[Path]:
    return [p for i, p in enumerate(fruit_images()) if i % 5 < 2]  # 40 images, 4 of each of the 10 classes


def test_onnx_predictor_equals_the_tf_engine(weights_file: Path, onnx_bytes: bytes, sample: list[Path]) -> None:
    from job.model import load_model, tf_predictor
    from job.onnx_engine import onnx_predictor

    batch, valid, _ = decode_batch([p.read_bytes() for p in sample])
    assert len(valid) == len(sample)
    expected = tf_predictor(load_model(weights_file.read_bytes(), ".weights.h5"))(batch)
    predict = onnx_predictor(onnx_bytes, threads=1)
    ours = predict(batch)
    assert ours.dtype == np.float32 and ours.shape == (len(sample), 1280)
    assert_close_to_tf(ours, expected)
    # The batch dimension is dynamic: a short last batch gives the same rows.
    np.testing.assert_allclose(predict(batch[:3]), ours[:3], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def small_input(sample: list[Path], tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx") / "in"
    for src in sample:
        dest = root / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    return root


@pytest.fixture(scope="module")
def tf_run(spark, small_input: Path, weights_file: Path, tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    """The tf engine's run on small_input (metadata, features by path): the reference of both job-level
    comparisons below. It must never convert to ONNX (keras_weights_to_onnx raises while it runs)."""
    from job import onnx_engine

    def no_conversion(*args, **kwargs):
        raise AssertionError("the tf engine must not convert the weights to ONNX")

    root = tmp_path_factory.mktemp("tf-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(onnx_engine.CACHE_ENV, str(root / "model-cache"))
        patch.setattr(onnx_engine, "keras_weights_to_onnx", no_conversion)
        out = root / "out"
        cfg = JobConfig(input=str(small_input), output=str(out), weights=str(weights_file), engine="tf", k=5)
        metadata = run(spark, cfg)
    return metadata, pq.read_table(out / "features").to_pandas().sort_values("path").reset_index(drop=True)


def test_job_with_onnx_engine_equals_tf_engine(
    spark, small_input: Path, weights_file: Path, tf_run: tuple[dict, pd.DataFrame], tmp_path: Path
) -> None:
    features: dict[str, pd.DataFrame] = {}
    for engine in ("tf", "onnx"):
        if engine == "tf":
            metadata, features[engine] = tf_run
        else:
            out = tmp_path / engine
            cfg = JobConfig(input=str(small_input), output=str(out), weights=str(weights_file), engine=engine, k=5)
            metadata = run(spark, cfg)
            features[engine] = pq.read_table(out / "features").to_pandas().sort_values("path").reset_index(drop=True)
        assert metadata["engine"] == engine
        assert metadata["counts"] == {"listed": 40, "featurized": 40, "rejected": 0, "model_processed": 40}
    assert list(features["onnx"]["path"]) == list(features["tf"]["path"])
    assert list(features["onnx"]["label"]) == list(features["tf"]["label"])
    assert_close_to_tf(np.stack(features["onnx"]["features"]), np.stack(features["tf"]["features"]))


EXECUTOR = """
import json, sys
from types import SimpleNamespace
import pandas as pd
from job.featurize import EngineSpec, featurize_batch, unpack, worker_predictor
engine, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
blob = SimpleNamespace(value=open(model, "rb").read())  # what the broadcast holds
suffix = ".onnx" if engine == "onnx" else ".weights.h5"
spec = EngineSpec(engine=engine, blob=blob, suffix=suffix, digest="test", threads=1)
pdf = pd.DataFrame({"path": paths, "label": ["x"] * len(paths), "content": [open(p, "rb").read() for p in paths]})
out, n = featurize_batch(pdf, worker_predictor(spec))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in @HEAVY@)
print(json.dumps({"n": n, "features": [unpack(v).tolist() for v in out["features"]], "heavy": heavy}))
""".replace("@HEAVY@", repr(HEAVY))


@pytest.mark.parametrize("engine", ["onnx", "tf"])
def test_executor_imports_tensorflow_only_for_the_tf_engine(
    engine: str, onnx_bytes: bytes, weights_file: Path, sample: list[Path], tmp_path: Path
) -> None:
    """The executor's code path (worker_predictor + featurize_batch) in a fresh interpreter.

    The tf engine is the control: it must show tensorflow in sys.modules, so the check can fail.
    """
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_bytes)
    images = [str(p) for p in sample[:5]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", EXECUTOR, engine, str(model if engine == "onnx" else weights_file), *images],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 5 and {len(v) for v in result["features"]} == {1280}
    if engine == "onnx":
        assert result["heavy"] == []
    else:
        assert "tensorflow" in result["heavy"]
    from job.onnx_engine import onnx_predictor

    batch, _, _ = decode_batch([Path(p).read_bytes() for p in images])
    assert_close_to_tf(np.asarray(result["features"], dtype=np.float32), onnx_predictor(onnx_bytes, 1)(batch))


def test_exported_onnx_model_runs_without_conversion(
    spark, small_input: Path, weights_file: Path, tf_run: tuple[dict, pd.DataFrame], tmp_path: Path, monkeypatch
) -> None:
    """For clusters without TensorFlow: export once, then the job only reads the .onnx bytes."""
    from job import onnx_engine

    model = tmp_path / "mobilenet_v2.onnx"
    assert onnx_engine.main(["--weights", str(weights_file), "--out", str(model)]) == 0

    def no_conversion(*args, **kwargs):
        raise AssertionError("an exported .onnx model must not be converted again")

    monkeypatch.setattr(onnx_engine, "keras_weights_to_onnx", no_conversion)
    outputs = {}
    for engine in ("onnx", "tf"):
        if engine == "tf":  # the same run with the tf engine (features do not depend on k), without conversion
            metadata, outputs[engine] = tf_run
        else:
            out = tmp_path / f"out-{engine}"
            metadata = run(
                spark, JobConfig(input=str(small_input), output=str(out), weights=str(model), engine=engine, k=3)
            )
            outputs[engine] = pq.read_table(out / "features").to_pandas().sort_values("path").reset_index(drop=True)
        assert metadata["counts"]["model_processed"] == 40
    assert metadata["weights"]["source"] == str(weights_file)
    assert_close_to_tf(np.stack(outputs["onnx"]["features"]), np.stack(outputs["tf"]["features"]))


def test_onnx_model_needs_the_onnx_engine() -> None:
    from job.config import UsageError

    with pytest.raises(UsageError, match="needs --engine onnx"):
        JobConfig(input="in", output="out", weights="s3://b/m.onnx", engine="tf")


def float_input_model() -> bytes:
    """A model with the right output but float32 input, as an older export took: must be refused."""
    from onnx import TensorProto, helper

    pool = helper.make_node("GlobalAveragePool", ["x"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["y"])
    graph = helper.make_graph(
        [pool, flat],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1280, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1280])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not a protobuf", "not a loadable ONNX model"), (float_input_model(), "needs tensor\\(uint8\\)")],
)
def test_incompatible_onnx_file_is_refused_before_any_task(
    spark, small_input: Path, tmp_path: Path, content: bytes, reason: str
) -> None:
    from job.config import UsageError

    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=reason):
        run(spark, JobConfig(input=str(small_input), output=str(out), weights=str(model), engine="onnx", k=3))
    assert not out.exists() and not list(tmp_path.glob("out.incomplete-*"))


def test_exported_model_takes_uint8_pixels(onnx_bytes: bytes) -> None:
    import onnxruntime as ort

    from job.onnx_engine import check_model

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    check_model(session)
    assert session.get_inputs()[0].name == "images" and session.get_inputs()[0].type == "tensor(uint8)"


# ---- the converted model's cache ------------------------------------------------------------------


def test_cache_key_covers_weights_opset_and_converter(monkeypatch) -> None:
    from job import onnx_engine

    key, covers = onnx_engine.conversion_key("a" * 64, ".weights.h5")
    assert covers["weights_sha256"] == "a" * 64 and covers["opset"] == onnx_engine.OPSET
    assert covers["tf2onnx"] and covers["tensorflow"] and covers["graph_source_sha256"]
    assert onnx_engine.conversion_key("b" * 64, ".weights.h5")[0] != key
    assert onnx_engine.conversion_key("a" * 64, ".h5")[0] != key
    monkeypatch.setattr(onnx_engine, "OPSET", onnx_engine.OPSET + 1)
    assert onnx_engine.conversion_key("a" * 64, ".weights.h5")[0] != key
    monkeypatch.undo()
    real_version = onnx_engine._version
    monkeypatch.setattr(onnx_engine, "_version", lambda name: "0.0" if name == "tf2onnx" else real_version(name))
    assert onnx_engine.conversion_key("a" * 64, ".weights.h5")[0] != key


def test_cache_miss_converts_and_writes_atomically_then_hits(tmp_path: Path, monkeypatch) -> None:
    """The converter is replaced by a stub returning a valid model, so this test needs no TensorFlow."""
    from job import onnx_engine
    from tests.job.fakes import noisy_model_onnx

    model = noisy_model_onnx()
    calls: list[str] = []
    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_engine, "keras_weights_to_onnx", lambda data, suffix: calls.append(suffix) or model)
    prepared: list[int] = []

    first, record = onnx_engine.cached_keras_weights_to_onnx(b"w", ".weights.h5", "d" * 64, lambda: prepared.append(1))
    assert first == model and calls == [".weights.h5"] and prepared == [1]
    assert record["from_cache"] is False and record["conversion_s"] is not None and record["cache_error"] is None
    cached = Path(record["cache_file"])
    assert cached.parent == tmp_path / "cache" / "onnx" and cached.name == f"{record['cache_key']}.onnx"
    assert cached.read_bytes() == model
    assert json.loads(cached.with_suffix(".json").read_text())["weights_sha256"] == "d" * 64
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted([cached.name, cached.with_suffix(".json").name])

    second, record2 = onnx_engine.cached_keras_weights_to_onnx(
        b"w", ".weights.h5", "d" * 64, lambda: prepared.append(1)
    )
    assert second == model and calls == [".weights.h5"] and prepared == [1]  # neither converted nor prepared
    assert record2["from_cache"] is True and record2["conversion_s"] is None
    assert record2["cache_key"] == record["cache_key"]


def test_default_cache_folder_is_under_home(monkeypatch, tmp_path: Path) -> None:
    from job import onnx_engine

    monkeypatch.delenv(onnx_engine.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert onnx_engine.cache_dir() == tmp_path / ".cache" / "featurizer" / "onnx"


def test_a_bad_cached_file_is_converted_again_and_an_unwritable_cache_does_not_fail(
    tmp_path: Path, monkeypatch
) -> None:
    from job import onnx_engine
    from tests.job.fakes import noisy_model_onnx

    model = noisy_model_onnx()
    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_engine, "keras_weights_to_onnx", lambda data, suffix: model)
    key, _ = onnx_engine.conversion_key("e" * 64, ".h5")
    cached = tmp_path / "cache" / "onnx" / f"{key}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    data, record = onnx_engine.cached_keras_weights_to_onnx(b"w", ".h5", "e" * 64)
    assert data == model and record["from_cache"] is False and "cached model ignored" in record["cache_error"]
    assert cached.read_bytes() == model  # replaced

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(blocked))
    data, record = onnx_engine.cached_keras_weights_to_onnx(b"w", ".h5", "e" * 64)
    assert data == model and record["from_cache"] is False and "could not write the cache" in record["cache_error"]


NO_TENSORFLOW_RUN = """
import json, sys
for name in @HEAVY@:
    sys.modules[name] = None  # any import of these now raises ImportError
from job.config import JobConfig
from job.pipeline import run
from job.session import start_spark
cfg = JobConfig(input=sys.argv[1], output=sys.argv[2], weights=sys.argv[3], engine="onnx", k=3, master="local[2]")
spark = start_spark(cfg)
try:
    metadata = run(spark, cfg)
finally:
    spark.stop()
print("METADATA " + json.dumps(metadata))
""".replace("@HEAVY@", repr(HEAVY))


def test_second_onnx_run_uses_the_cache_and_never_imports_tensorflow(
    spark, small_input: Path, weights_file: Path, tmp_path: Path, monkeypatch
) -> None:
    """Run 1 converts (miss) and fills the cache; run 2, in a fresh driver whose `tensorflow`, `keras`
    and `tf2onnx` imports are poisoned, hits it and writes the same features."""
    from job import onnx_engine

    cache = tmp_path / "cache"
    monkeypatch.setenv(onnx_engine.CACHE_ENV, str(cache))
    first = tmp_path / "first"
    metadata = run(
        spark, JobConfig(input=str(small_input), output=str(first), weights=str(weights_file), engine="onnx", k=3)
    )
    record = metadata["weights"]["onnx_model"]
    assert record["from_cache"] is False and record["conversion_s"] > 0
    assert Path(record["cache_file"]).is_file() and Path(record["cache_file"]).parent == cache / "onnx"

    second = tmp_path / "second"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", onnx_engine.CACHE_ENV: str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_RUN, str(small_input), str(second), str(weights_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    hit = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("METADATA "))[9:])
    assert hit["weights"]["onnx_model"]["from_cache"] is True
    assert hit["weights"]["onnx_model"]["cache_key"] == record["cache_key"]
    assert hit["weights"]["onnx_model"]["conversion_s"] is None
    assert hit["counts"]["model_processed"] == 40
    tables = [pq.read_table(out / "features").to_pandas().sort_values("path") for out in (first, second)]
    np.testing.assert_array_equal(np.stack(tables[0]["features"]), np.stack(tables[1]["features"]))
