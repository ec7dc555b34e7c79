"""Decode + resize cost per image against ONNX Runtime inference, on one core; fast-vs-exact features.

The budget (issue 12): decoding must cost at most 5 % of what ONNX Runtime needs to run
MobileNetV2 on the image. Each round times, in turn, one ONNX call on a batch of 64, the job's
decode_batch over all images in both resize modes, and the seed's own expression
(`np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((224, 224)))`); rounds alternate so
the machine's drift falls on all of them. CPU time of this process, one thread everywhere (a
Spark task has one core). Then the features of both resize modes, with calibrated random
weights, are compared (cosine, and the largest difference over the largest feature).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m bench.decode [--images DIR] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.dataset import FRUITS, WEIGHTS_SEED, source_images


def _seed(contents: list[bytes]) -> None:
    from PIL import Image

    for content in contents:
        np.asarray(Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=FRUITS, help="folder of .jpg files (default: the sample)")
    p.add_argument("--rounds", type=int, default=7, help="alternating measurement rounds (median reported)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here (bench.run does)")
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var) != "1":
            raise SystemExit(f"set {var}=1 before starting Python (BLAS reads it once)")

    from job import exact_resize
    from job.decode import decode_batch
    from job.model import model_to_blob, random_model, tf_predictor
    from job.onnx_engine import keras_weights_to_onnx, onnx_predictor

    contents = [path.read_bytes() for path in source_images(args.images)]
    # tests/conftest.py:weights_file's recipe: BatchNorm calibrated on (up to) 100 of the images.
    calibration, _, _ = decode_batch(contents[:: max(1, len(contents) // 100)][:100])
    model = random_model(calibration, seed=WEIGHTS_SEED)
    onnx = onnx_predictor(keras_weights_to_onnx(model_to_blob(model, "bench").data, ".weights.h5"), threads=1)
    batch, _, _ = decode_batch(contents[:64])
    onnx(batch)  # warm-up

    def decode(mode: str):
        return lambda: [decode_batch(contents[i : i + 64], mode) for i in range(0, len(contents), 64)]

    tasks = {
        "onnx inference (batch 64)": (lambda: onnx(batch), len(batch)),
        "decode, --resize exact (default)": (decode("exact"), len(contents)),
        "decode, --resize fast": (decode("fast"), len(contents)),
        "the seed's expression (Pillow)": (lambda: _seed(contents), len(contents)),
    }
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(args.rounds):
        for name, (run, images) in tasks.items():
            start = time.process_time()
            run()
            times[name].append((time.process_time() - start) / images * 1e3)
    ms = {name: float(np.median(values)) for name, values in times.items()}
    onnx_ms = ms["onnx inference (batch 64)"]
    print(f"{len(contents)} images from {args.images}, one thread, CPU ms per image (median of {args.rounds} rounds):")
    for name, value in ms.items():
        print(f"  {name:34s} {value:6.3f} ms  {100 * value / onnx_ms:5.1f} % of ONNX inference")

    predict = tf_predictor(model)
    exact = predict(decode_batch(contents, "exact")[0]).astype(np.float64)
    fast = predict(decode_batch(contents, "fast")[0]).astype(np.float64)
    cosine = (exact * fast).sum(axis=1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    relative = np.abs(fast - exact).max(axis=1) / np.abs(exact).max(axis=1)
    print(
        f"features, fast vs exact: cosine min {cosine.min():.4f} mean {cosine.mean():.4f}; "
        f"max |fast - exact| / max |exact| per image: mean {relative.mean():.3f}, max {relative.max():.3f}"
    )
    resize_status = exact_resize.status()
    print(f"exact resize: {resize_status}")
    result = {
        "images": len(contents),
        "rounds": args.rounds,
        "ms_per_image": ms,
        "exact_resize": resize_status,
        "cosine": cosine.tolist(),
        "relative": relative.tolist(),
    }
    if args.out:
        args.out.write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
