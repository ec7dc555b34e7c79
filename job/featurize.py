"""DataFrame(path, label, content) -> DataFrame(path, label, features, error), on the executors.

The model is built once per Python worker (cached in this module, which Spark keeps alive
with spark.python.worker.reuse) from bytes broadcast once by the driver. Each Arrow batch is
cut into model batches of at most `batch_size` images, so memory does not grow with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import Accumulator, Broadcast
from pyspark.sql import DataFrame

from job import quiet
from job.config import ONNX_ENGINES
from job.decode import decode_batch

# Features are staged as raw little-endian float32 bytes: the JVM copies a binary value, where an
# array<float> costs it 1280 element writes per image (measured: ~20 % of a 2-core machine's CPU).
# size and modification_time (ms) are the file's, passed through for features/ (job/reuse.py).
STAGED_SCHEMA = "path string, label string, features binary, error string, size long, modification_time long"
PASSED_THROUGH = ("size", "modification_time")
FEATURE_DTYPE = np.dtype("<f4")
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to build its predictor: small, picklable, shipped with the task."""

    engine: str  # "tf" (Keras weights file), "onnx" or "onnx-int8" (serialized ONNX model)
    blob: Broadcast  # bytes of the weights file / ONNX model
    suffix: str
    digest: str
    threads: int
    resize: str = "exact"  # job.decode's resize mode (JobConfig.resize)
    onnx_model: dict | None = None  # where a converted ONNX model came from (metadata weights.onnx_model)
    quantization: dict | None = None  # onnx-int8: how the int8 model was made (metadata quantization)


_PREDICTORS: dict[tuple[str, str, int], Predictor] = {}


def forget_zip_finders() -> int:
    """Drop the import finders of zip archives from sys.path_importer_cache.

    PySpark's worker calls importlib.invalidate_caches() before every task, and on Python < 3.12
    each cached zipimporter then re-reads its whole archive's directory (in pure Python). Workers
    import pyspark and py4j from zips, with one zipimporter per archive and per subpackage, so a
    reused worker spent ~0.6 s per task re-reading them (measured with py-spy: 5 % of an ONNX task
    of 1,000 images); dropping the subpackages' finders left the two archives' re-reads, still
    1.7 % of the workers' CPU in a steady featurize stage. The finders are a cache: an import that
    needs one builds it again from zipimport's directory cache, without re-reading the archive.
    Returns how many were dropped.
    """
    from zipimport import zipimporter

    cached = [path for path, finder in sys.path_importer_cache.items() if isinstance(finder, zipimporter)]
    for path in cached:
        del sys.path_importer_cache[path]
    return len(cached)


def worker_predictor(spec: EngineSpec) -> Predictor:
    """This worker's predictor, built on first use and reused by every later task."""
    key = (spec.engine, spec.digest, spec.threads)
    if key not in _PREDICTORS:
        if spec.engine in ONNX_ENGINES:  # the int8 model runs on the same uint8 pixels
            from job.onnx_engine import onnx_predictor

            quiet.quiet_onnxruntime()
            _PREDICTORS[key] = onnx_predictor(spec.blob.value, spec.threads)
        else:
            from job.model import configure_threads, load_model, tf_predictor

            quiet.import_tensorflow()  # TensorFlow's native start-up lines go to the log, not the console
            configure_threads(spec.threads)
            _PREDICTORS[key] = tf_predictor(load_model(spec.blob.value, spec.suffix))
    return _PREDICTORS[key]


def featurize_batch(pdf: pd.DataFrame, predict: Predictor, resize: str = "exact") -> tuple[pd.DataFrame, int]:
    """Decode and featurize one batch; return (path, label, features bytes, error, size, mtime) rows, model calls."""
    images, valid, reasons = decode_batch(list(pdf["content"]), resize)
    features: list[bytes | None] = [None] * len(pdf)
    if valid:
        out = np.asarray(predict(images), dtype=np.float32)
        for row, vector in zip(valid, out, strict=True):
            if not np.all(np.isfinite(vector)):
                reasons[row] = "model produced non-finite features"
            elif not np.any(vector):
                reasons[row] = "model produced an all-zero feature vector"
            else:
                features[row] = vector.astype(FEATURE_DTYPE, copy=False).tobytes()
    result = pd.DataFrame(
        {
            "path": pdf["path"].to_numpy(),
            "label": pdf["label"].to_numpy(),
            "features": features,
            "error": [reasons.get(i) for i in range(len(pdf))],
        }
    )
    for column in PASSED_THROUGH:  # absent when the caller's images have no file columns
        result[column] = pdf[column].to_numpy() if column in pdf else None
    return result, len(valid)


def featurize(images: DataFrame, spec: EngineSpec, batch_size: int, processed: Accumulator) -> DataFrame:
    """The executor-side stage; `processed` counts images that went through the model."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        forget_zip_finders()  # makes the next task in this worker start 0.6 s sooner
        predict = worker_predictor(spec)
        for pdf in batches:
            for start in range(0, len(pdf), batch_size):
                out, n = featurize_batch(pdf.iloc[start : start + batch_size], predict, spec.resize)
                processed.add(n)
                yield out

    return images.mapInPandas(run, schema=STAGED_SCHEMA)


def unpack(features: bytes) -> np.ndarray:
    """A staged feature vector back to float32."""
    return np.frombuffer(features, dtype=FEATURE_DTYPE)
