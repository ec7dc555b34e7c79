"""The onnx-int8 engine's model: the fp32 ONNX model statically quantized with ONNX Runtime.

Static quantization (QDQ format, per-channel int8 weights in 7 bits, uint8 activations, MinMax ranges)
needs activation ranges measured on real images: the calibration set. It is decoded with the
job's own decode (`job.decode.decode_batch`, the run's --resize), so the ranges are those of the
pixels the engine will see.

Where the calibration images come from (recorded in metadata.json, "quantization"):
- `--calibration URI` (a folder of images, same --glob), else the run's own --input;
- `--calibration-images N` of them (default 256), spread evenly over the sorted paths (every
  len/N-th), so the set is deterministic and covers every class folder rather than the first one.
The driver reads those N files (a few MB) itself; they are featurized again like every other image.

uint8 activations with int8 weights (U8S8) are what ONNX Runtime's AVX-512 VNNI kernels run
fastest: measured here at 1 thread, 276 img/s against fp32's 126 (2.2x); int8 activations
(S8S8) ran at 145. The graph is first optimized with `quant_pre_process` (folds the depthwise
convolutions' BatchNorm Mul/Add into the Conv): without it the float Mul/Add between the QDQ
pairs left the int8 model only 1.3x faster.

ONNX Runtime's `CalibMaxIntermediateOutputs` option is not used: in onnxruntime 1.32 it drops
the collected ranges instead of merging them (MinMaxCalibrater.clear_collected_data), so only
the last chunk would be calibrated. The calibrator keeps only per-batch minima and maxima.

The quantized model is cached beside the fp32 one ($FEATURIZER_CACHE_DIR/onnx/int8-<key>.onnx, and
under --model-cache when given: job/model_cache.py),
keyed by the fp32 model's digest, the calibration set's digest (of the files' bytes, in order)
and count, the resize mode, the settings below and onnxruntime's and onnx's versions.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job import onnx_engine

if TYPE_CHECKING:
    from job.model_cache import Store

DEFAULT_CALIBRATION_IMAGES = 256
MAX_CALIBRATION_IMAGES = 10_000
CALIBRATION_BATCH = 16  # images per calibration run: bounds the driver's memory (~1 GB at 16)
# Bump when the quantization changes in a way the key does not see.
CACHE_FORMAT = 1
SETTINGS = {
    "format": "QDQ",
    "per_channel": True,
    # 7-bit weights: without AVX-512 VNNI (AVX2 hosts such as Zen 3 m6a, Skylake-generation m5) ONNX Runtime's U8S8
    # kernels add pairs of uint8 x int8 products in int16 (vpmaddubsw), which saturates with full
    # 8-bit weights. Measured on an AVX2 host (fixture images, cosine to fp32, min / median): 0.907 /
    # 0.942 with 8-bit weights, 0.950 / 0.960 with 7-bit, ~9 % slower; the AVX-512 VNNI host had
    # 0.944 / 0.960 with 8-bit. (tests/job/test_int8.py's gate, min > 0.9, failed on the AVX2 host.)
    # The driver quantizes once for executors whose CPU it cannot see, so always.
    "reduce_range": True,
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "calibrate_method": "MinMax",
    "pre_process": "quant_pre_process(skip_symbolic_shape)",
}


def calibration_paths(files: Iterable[str], count: int) -> list[str]:
    """`count` paths spread evenly over the sorted `files` (all of them if fewer): deterministic, every class."""
    ordered = sorted(files)
    if len(ordered) <= count:
        return ordered
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def calibration_digest(contents: Iterable[bytes]) -> str:
    """sha256 over the files' bytes in order (length-prefixed): the calibration set's identity, path-free."""
    digest = hashlib.sha256()
    for content in contents:
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    return digest.hexdigest()


def calibration_batch(contents: list[bytes], resize: str) -> np.ndarray:
    """The job's own decode of the calibration files; undecodable ones are left out (they are rejected later)."""
    from job.decode import decode_batch

    pixels, valid, _ = decode_batch(contents, resize)
    if not valid:
        raise ValueError("none of the calibration images could be decoded")
    return pixels


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over uint8 pixels, CALIBRATION_BATCH images at a time."""

    def __init__(self, input_name: str, pixels: np.ndarray) -> None:
        self._feeds = iter(
            {input_name: pixels[i : i + CALIBRATION_BATCH]} for i in range(0, len(pixels), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize(onnx_bytes: bytes, pixels: np.ndarray) -> bytes:
    """fp32 ONNX model bytes + uint8 calibration pixels (n, 224, 224, 3) -> the int8 QDQ model's bytes."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="featurizer-int8-") as tmp:
        fp32, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(onnx_bytes)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # static shapes; no sympy on nodes
        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        quantize_static(
            str(pre),
            str(out),
            _Batches(input_name, pixels),
            quant_format=QuantFormat.QDQ,
            per_channel=SETTINGS["per_channel"],
            reduce_range=SETTINGS["reduce_range"],
            weight_type=QuantType[SETTINGS["weight_type"]],
            activation_type=QuantType[SETTINGS["activation_type"]],
            calibrate_method=CalibrationMethod[SETTINGS["calibrate_method"]],
        )
        return out.read_bytes()


def quantization_key(fp32_sha256: str, calibration_sha256: str, count: int, resize: str) -> tuple[str, dict]:
    """The int8 model's cache key and what it covers: the fp32 model, the calibration set, the settings."""
    covers = {
        "format": CACHE_FORMAT,
        "fp32_model_sha256": fp32_sha256,
        "calibration_sha256": calibration_sha256,
        "calibration_images": count,
        "resize": resize,
        "settings": SETTINGS,
        "onnxruntime": onnx_engine._version("onnxruntime"),
        "onnx": onnx_engine._version("onnx"),
    }
    key = hashlib.sha256(json.dumps(covers, sort_keys=True).encode()).hexdigest()[:32]
    return key, covers


def cached_quantize(
    onnx_bytes: bytes, contents: list[bytes], resize: str, levels: Sequence[Store] | None = None
) -> tuple[bytes, dict]:
    """`quantize` through the model cache (job.model_cache; `levels` nearest first, default: this machine's).

    Returns (int8 ONNX bytes, record for metadata.json). The calibration files are decoded on a miss
    only. A cache that cannot be read or written does not fail the run (the record's cache_error says
    why), as for the fp32 conversion.
    """
    from job import model_cache

    calibration_sha256 = calibration_digest(contents)
    fp32_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    key, covers = quantization_key(fp32_sha256, calibration_sha256, len(contents), resize)
    record: dict = {**covers, "cache_key": key, "quantization_s": None, "calibration_decoded": None}

    def make() -> bytes:
        start = time.perf_counter()
        pixels = calibration_batch(contents, resize)
        quantized = quantize(onnx_bytes, pixels)
        record["calibration_decoded"] = len(pixels)
        record["quantization_s"] = round(time.perf_counter() - start, 3)
        return quantized

    data = model_cache.through(levels, f"int8-{key}.onnx", covers, record, onnx_engine.validate, make)
    return data, record


def qdq_summary(onnx_bytes: bytes) -> dict:
    """What a quantized graph holds: op counts, and the Conv weights' DequantizeLinear axes and scale sizes.

    Per-channel weights show as a DequantizeLinear of an int8 initializer with one scale per output channel.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    inits = {t.name: t for t in graph.initializer}
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    weights = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values = inits[node.input[0]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            scales = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else np.zeros(0)
            weights.append(
                {"dtype": values.data_type, "dims": list(values.dims), "axis": axis, "scales": int(scales.size)}
            )
    return {"ops": ops, "weights": weights}


def read_calibration(spark, paths: Collection[str]) -> list[bytes]:
    """Driver side: the calibration files' bytes, in the given order (unreadable ones left out)."""
    from job.read import read_file

    contents = [read_file(spark, path) for path in paths]
    return [content for content in contents if content]


def for_run(spark, cfg, input_files: Collection[str], onnx_bytes: bytes) -> tuple[bytes, dict]:
    """Driver side, for `--engine onnx-int8`: pick, read and digest the calibration set; quantize (cached).

    `input_files`: candidate paths of the run's input (all of them, or already spread by job.read.spread_paths).
    """
    if cfg.calibration:
        from job.read import list_inputs, spread_paths

        files = spread_paths(list_inputs(spark, cfg.calibration, cfg.glob), cfg.calibration_images)
        source = cfg.calibration
    else:
        source, files = "input", input_files
    paths = calibration_paths(files, cfg.calibration_images)
    contents = read_calibration(spark, paths)
    if not contents:
        from job.errors import UsageError

        raise UsageError(f"--engine onnx-int8: no readable calibration image under {cfg.calibration or cfg.input}")
    from job import model_cache

    data, record = cached_quantize(onnx_bytes, contents, cfg.resize, model_cache.stores(spark, cfg.shared_model_cache))
    record = {
        "calibration_source": source,
        "calibration_uri": cfg.calibration or cfg.input,
        "calibration_selection": "evenly spaced over the sorted paths",
        "calibration_requested": cfg.calibration_images,
        "calibration_first": paths[0],
        **record,
    }
    return data, record
