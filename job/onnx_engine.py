"""The ONNX Runtime engine: the exact Keras model converted once on the driver, run without TensorFlow.

The driver builds the job's Keras model from the weights file and converts, with tf2onnx, the
very traced function the TensorFlow engine runs (`job.model.inference_function`: uint8 pixels,
[-1, 1] scaling, MobileNetV2; batch dimension None). Executors receive the ONNX bytes once (a
broadcast) and only import onnxruntime, so a node running this engine needs no TensorFlow at all
(the bootstrap's lighter "onnx" profile).
This module imports neither TensorFlow nor Keras at import time: only the driver-side
converter does, lazily.

The conversion (~7 s, and ~1.5 GB of TensorFlow in the driver) is cached on the driver's disk:
`$FEATURIZER_CACHE_DIR/onnx/<key>.onnx` (default `~/.cache/featurizer/onnx/`), where the key
digests the weights, the opset, the converter's and TensorFlow's versions and the source of the
code that builds the traced graph. A hit reads the file and checks it with onnxruntime only: the
driver never imports TensorFlow then.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job.config import CACHE_ENV, local_cache_root  # noqa: F401 (CACHE_ENV: re-exported)
from job.config import FEATURE_DIM as FEATURES
from job.decode import IMAGE_SIZE

if TYPE_CHECKING:
    from job.model_cache import Store

# Opset 17: supported by tf2onnx 1.17 and every onnxruntime 1.x we pin; ops are plain conv/BN/relu6.
OPSET = 17
INPUT_TYPE = "tensor(uint8)"


class IncompatibleModel(ValueError):
    """An .onnx file that is not a model exported by this version of `python -m job.onnx_engine`."""


def keras_weights_to_onnx(weights_bytes: bytes, suffix: str) -> bytes:
    """Driver side: build the job's Keras model from a weights file and return it as ONNX bytes.

    tf2onnx's `from_keras` depends on Keras internals that changed in Keras 3, so the model is
    converted through the explicit `tf.function` the TensorFlow engine runs.
    """
    import tf2onnx

    from job.model import inference_function, load_model

    infer = inference_function(load_model(weights_bytes, suffix))
    proto, _ = tf2onnx.convert.from_function(infer, input_signature=infer.input_signature, opset=OPSET)
    return proto.SerializeToString()


# Bump when the conversion changes in a way the key below does not see.
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where converted models are kept: $FEATURIZER_CACHE_DIR/onnx, else ~/.cache/featurizer/onnx."""
    return Path(local_cache_root()) / "onnx"


def _version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def conversion_key(weights_sha256: str, suffix: str) -> tuple[str, dict]:
    """The cache key of a conversion and what it covers; computed without importing TensorFlow.

    Covers the weights (their sha256 and file type), the opset, the versions of tf2onnx, onnx,
    TensorFlow and Keras, and the source of the functions that build the converted graph, so a
    code change in the graph never reuses a stale model.
    """
    from job import decode, model

    graph = [model.build_model, model.load_model, model.inference_function, decode.preprocess_input]
    graph.append(keras_weights_to_onnx)
    source = hashlib.sha256("\n".join(inspect.getsource(fn) for fn in graph).encode()).hexdigest()
    covers = {
        "format": CACHE_FORMAT,
        "weights_sha256": weights_sha256,
        "weights_suffix": suffix,
        "opset": OPSET,
        "tf2onnx": _version("tf2onnx"),
        "onnx": _version("onnx"),
        "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
        "keras": _version("keras"),
        "graph_source_sha256": source,
    }
    key = hashlib.sha256(json.dumps(covers, sort_keys=True).encode()).hexdigest()[:32]
    return key, covers


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def cached_keras_weights_to_onnx(
    weights_bytes: bytes,
    suffix: str,
    weights_sha256: str,
    before_conversion: Callable[[], object] | None = None,
    levels: Sequence[Store] | None = None,
) -> tuple[bytes, dict]:
    """Driver side: `keras_weights_to_onnx`, through the model cache. Returns (ONNX bytes, record).

    `before_conversion` runs on a miss only, before TensorFlow is imported (job.quiet's import).
    `levels`: where to look, nearest first (job.model_cache.stores; default: this machine's cache only).

    The record goes into metadata.json (weights.onnx): from_cache, cache_key, cache_file (where the
    model came from, or where it was first written), cache_levels, conversion_s (None on a hit),
    cache_error (why a level could not be read or written, if so). A cached file that onnxruntime
    cannot load as this job's model is converted again and replaced. A cache that cannot be written
    (read-only home, full disk, no S3 permission) does not fail the run.
    """
    from job import model_cache

    key, covers = conversion_key(weights_sha256, suffix)
    record: dict = {"cache_key": key, "conversion_s": None, "cache_error": None}

    def convert() -> bytes:
        start = time.perf_counter()
        if before_conversion is not None:
            before_conversion()
        converted = keras_weights_to_onnx(weights_bytes, suffix)
        record["conversion_s"] = round(time.perf_counter() - start, 3)
        return converted

    return model_cache.through(levels, f"{key}.onnx", covers, record, validate, convert), record


def validate(onnx_bytes: bytes) -> None:
    """Driver side: load a user's .onnx file once, so a wrong file fails before any task runs."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise IncompatibleModel(f"not a loadable ONNX model ({exc})") from None
    check_model(session)


def check_model(session) -> None:
    """Refuse a model whose input/output are not this job's (e.g. exported by an older version)."""
    (given,), (output,) = session.get_inputs(), session.get_outputs()
    expected_shape = [None, *IMAGE_SIZE, 3]
    shape = [dim if isinstance(dim, int) else None for dim in given.shape]
    if given.type != INPUT_TYPE or shape != expected_shape or output.shape[-1] != FEATURES:
        raise IncompatibleModel(
            f"the ONNX model takes {given.type} {given.shape} and returns {output.shape}; this job needs "
            f"{INPUT_TYPE} [batch, {IMAGE_SIZE[0]}, {IMAGE_SIZE[1]}, 3] -> [batch, {FEATURES}]. "
            "Export it again with `python -m job.onnx_engine --weights FILE --out model.onnx`."
        )


def onnx_predictor(onnx_bytes: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Executor side: an onnxruntime session; uint8 pixels (n, 224, 224, 3) -> float32 (n, 1280).

    intra-op threads = `threads` (when > 0) and one inter-op thread, so concurrent tasks on one
    executor do not oversubscribe its cores; spinning is off so idle pool threads do not steal
    the CPU that JPEG decoding between two model calls needs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    check_model(session)
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch, dtype=np.uint8)
        return session.run([output_name], {input_name: images})[0].astype(np.float32, copy=False)

    return predict


def main(argv: list[str] | None = None) -> int:
    """`python -m job.onnx_engine --weights FILE --out model.onnx`: export once, where TensorFlow is.

    A cluster built with the bootstrap's light "onnx" profile has no TensorFlow, so its driver
    cannot convert: give the job `--engine onnx --weights s3://.../model.onnx` exported here.
    """
    import argparse
    from pathlib import Path

    from job.model import file_suffix

    parser = argparse.ArgumentParser(prog="python -m job.onnx_engine", description=main.__doc__)
    parser.add_argument("--weights", required=True, help="MobileNetV2 no-top weights (.h5 / .weights.h5)")
    parser.add_argument("--out", required=True, help="where to write the .onnx model")
    ns = parser.parse_args(argv)
    source, out = Path(ns.weights), Path(ns.out)
    if not source.is_file():
        parser.error(f"weights file not found: {source}")
    if not out.name.endswith(".onnx"):
        parser.error("--out must end with .onnx")
    out.write_bytes(keras_weights_to_onnx(source.read_bytes(), file_suffix(source.name)))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
