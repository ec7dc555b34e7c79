"""Test doubles that run inside Spark's Python workers without any seam in the job's code.

`noisy_model_onnx` is a real ONNX model with the job's input and output (uint8 [batch, 224, 224, 3]
-> float [batch, 1280]), so `--engine onnx --weights fake.onnx` runs it on the executors like an
exported MobileNetV2. Each output element is the size of the batch it was computed in plus fresh
uniform noise in [0, 0.5) (RandomUniformLike without a seed: a different draw on every call), so
  - floor(features) tells the model batch each image went through, and
  - features computed twice are never equal: a stage that re-ran the model cannot hide.
Small tiny-image inputs keep these tests free of TensorFlow and fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = 1280
NOISE = 0.5


def noisy_model_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    images = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 224, 224, 3])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURES])
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),  # [batch]
        helper.make_node("Concat", ["n", "width"], ["target"], axis=0),  # [batch, 1280]
        helper.make_node("Cast", ["n"], ["n_float"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["n_float", "target"], ["size"]),
        helper.make_node("RandomUniformLike", ["size"], ["noise"], low=0.0, high=NOISE),
        helper.make_node("Add", ["size", "noise"], ["features"]),
    ]
    constants = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("width", TensorProto.INT64, [1], [FEATURES]),
    ]
    graph = helper.make_graph(nodes, "noisy_batch_size", [images], [features], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_noisy_model(folder: Path) -> Path:
    path = folder / "noisy.onnx"
    path.write_bytes(noisy_model_onnx())
    return path


def tiny_jpegs(root: Path, n: int, classes: int = 2, seed: int = 0) -> Path:
    """`n` small valid JPEGs in `classes` label folders (decoded and resized like any image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root
