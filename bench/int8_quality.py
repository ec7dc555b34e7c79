"""How far the onnx-int8 engine's features are from the fp32 onnx engine's (issue 12 §3), and how fast it runs.

The metrics are pure numpy functions of two feature matrices (same images, same order) and the
labels, used by the bench on ../shared/data/fruits360-sample and by tests/job/test_int8.py on the
vendored fixture:

- cosine similarity of each image's int8 features to its fp32 features (min, median), and the
  same after removing the fp32 mean vector (centred), with the share of the images whose int8
  features are nearest to their own fp32 features (self_match; chance is 1/n);
- the share of images whose 10 nearest neighbours in PCA space are the same images for both
  engines (each engine standardized and PCA-projected on its own features, as the job does);
- a linear probe: multinomial logistic regression on the PCA features, trained on a split by
  image and scored on the held-out images, for int8 and for fp32 (the same split).

sklearn is not installed here, so the probe is a small full-batch gradient-descent logistic
regression (deterministic; no randomness once the split is drawn).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

NEIGHBOURS = 10
PCA_COMPONENTS = 50
TEST_SHARE = 0.3


def cosine_to_reference(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of `other` to `reference` (n, d) -> (n,)."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    return (reference * other).sum(axis=1) / np.maximum(norms, 1e-30)


def centred_cosine(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-row cosine after subtracting the reference's mean vector: the image-specific part only.

    With random calibrated weights ~90 % of a feature vector's energy is a vector common to every
    image, which the plain cosine rewards; this one measures what tells images apart.
    """
    mean = np.asarray(reference, np.float64).mean(axis=0)
    return cosine_to_reference(reference - mean, other - mean)


def self_match(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of images whose `other` features are nearest (centred cosine) to their own `reference` features."""
    mean = np.asarray(reference, np.float64).mean(axis=0)
    a, b = reference - mean, other - mean
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    return float(np.mean(np.argmax(b @ a.T, axis=1) == np.arange(len(a))))


def signal_share(features: np.ndarray) -> float:
    """Share of the features' energy that varies between images (the rest is their common mean vector)."""
    x = np.asarray(features, np.float64)
    return float(((x - x.mean(axis=0)) ** 2).sum() / (x**2).sum())


def pca_features(features: np.ndarray, k: int) -> np.ndarray:
    """Standardize, then project on the top-k principal components (numpy SVD): the job's reduction."""
    x = np.asarray(features, np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[: min(k, vt.shape[0])].T


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k nearest other rows (Euclidean), nearest first."""
    sq = (points**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * points @ points.T
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def neighbour_agreement(reference: np.ndarray, other: np.ndarray, k: int = NEIGHBOURS) -> dict[str, float]:
    """identical: share of images whose k nearest neighbours are the same set; overlap: mean shared share."""
    ref, oth = nearest_neighbours(reference, k), nearest_neighbours(other, k)
    shared = np.array([len(set(a) & set(b)) for a, b in zip(ref, oth, strict=True)])
    return {"identical": float(np.mean(shared == k)), "overlap": float(shared.mean() / k)}


def split_by_image(labels: Sequence[str], test_share: float = TEST_SHARE, seed: int = 0) -> np.ndarray:
    """A boolean test mask: `test_share` of each class's images (at least one when a class has 2+)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        take = max(1, round(len(rows) * test_share))
        test[rng.permutation(rows)[:take]] = True
    return test


def logistic_regression(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3, steps: int = 500, lr: float = 0.5
) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent; returns a predict(x) -> class ids."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = (x - mean) / std
    w, b = np.zeros((z.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(z)
        w -= lr * (z.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return lambda new: np.argmax(((new - mean) / std) @ w + b, axis=1)


def probe_accuracy(features: np.ndarray, labels: Sequence[str], test: np.ndarray) -> float:
    """Linear-probe accuracy on the held-out images (`test` mask) of a model trained on the others."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    predict = logistic_regression(features[~test], y[~test], len(names))
    return float(np.mean(predict(features[test]) == y[test]))


def quality(
    fp32: np.ndarray, int8: np.ndarray, labels: Sequence[str], components: int = PCA_COMPONENTS, seed: int = 0
) -> dict:
    """Every metric of the module for one pair of feature matrices (rows: the same images)."""
    if fp32.shape != int8.shape or len(labels) != len(fp32):
        raise ValueError(f"shapes differ: fp32 {fp32.shape}, int8 {int8.shape}, {len(labels)} labels")
    cosine, centred = cosine_to_reference(fp32, int8), centred_cosine(fp32, int8)
    k = min(components, len(fp32) - 1)
    pca32, pca8 = pca_features(fp32, k), pca_features(int8, k)
    test = split_by_image(labels, seed=seed)
    agree = neighbour_agreement(pca32, pca8)
    return {
        "images": len(fp32),
        "classes": len(set(labels)),
        "cosine_min": float(cosine.min()),
        "cosine_median": float(np.median(cosine)),
        "centred_cosine_median": float(np.median(centred)),
        "fp32_signal_share": signal_share(fp32),
        "self_match": self_match(fp32, int8),
        "pca_components": k,
        "neighbours": NEIGHBOURS,
        "neighbours_identical": agree["identical"],
        "neighbours_overlap": agree["overlap"],
        "probe_test_images": int(test.sum()),
        "probe_accuracy_fp32": probe_accuracy(pca32, labels, test),
        "probe_accuracy_int8": probe_accuracy(pca8, labels, test),
    }


# ---- the bench's int8 section (bench/run.py) ---------------------------------------------------------

TARGET_RAW_SPEEDUP = 2.0  # int8 raw throughput / fp32 onnx raw throughput, same run, same shape, >=
CALIBRATION_IMAGES = 256  # the job's default --calibration-images


def onnx_features(model: bytes, files: Sequence[Path], batch: int = 32) -> np.ndarray:
    """The engine's features of `files`, decoded with the job's decode, `batch` images at a time."""
    from job.decode import decode_batch
    from job.onnx_engine import onnx_predictor

    predict, out = onnx_predictor(model, 0), []
    for start in range(0, len(files), batch):
        pixels, valid, _ = decode_batch([p.read_bytes() for p in files[start : start + batch]])
        if len(valid) != len(pixels) or len(pixels) != len(files[start : start + batch]):
            raise ValueError(f"undecodable images among {files[start]}...")
        out.append(predict(pixels))
    return np.concatenate(out)


def bench_int8(fp32_model: Path, images: Path, work: Path, raw: Callable[[str, Path], dict], cache: Path) -> dict:
    """Quantize as the job does (the images' evenly spaced sample), then raw throughput and quality.

    `raw(engine, model)` measures one raw figure (bench.run.run_raw in the job's layout). fp32 and
    int8 alternate twice, so drift over the minutes hits both; the ratio is best against best.
    `cache`: the bench's model cache ($FEATURIZER_CACHE_DIR while quantizing), never the user's.
    """
    from job.quantize import cached_quantize, calibration_paths

    files = sorted(images.rglob("*.jpg"))
    fp32 = fp32_model.read_bytes()
    calibration = [Path(p).read_bytes() for p in calibration_paths(map(str, files), CALIBRATION_IMAGES)]
    start = time.perf_counter()
    from job.onnx_engine import CACHE_ENV

    previous, os.environ[CACHE_ENV] = os.environ.get(CACHE_ENV), str(cache)
    try:
        int8, record = cached_quantize(fp32, calibration, "exact")
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
    record["wall_s"] = time.perf_counter() - start
    int8_model = work / "model-int8.onnx"
    int8_model.write_bytes(int8)
    figures = {"onnx": [], "onnx-int8": []}
    for _ in range(2):
        for engine, model in (("onnx", fp32_model), ("onnx-int8", int8_model)):
            figures[engine].append(raw(engine, model))
    best = {engine: max(x["images_per_s"] for x in runs) for engine, runs in figures.items()}
    labels = [p.parent.name for p in files]
    report = quality(onnx_features(fp32, files), onnx_features(int8, files), labels)
    return {
        "quantization": record,
        "raw": figures,
        "raw_speedup": best["onnx-int8"] / best["onnx"],
        "quality": {**report, "images_dir": str(images), "calibration_images": len(calibration)},
    }


def markdown_section(r: dict) -> list[str]:
    """RESULTS.md's INT8 section."""
    if not r:
        return []
    qual, rec = r["quality"], r["quantization"]
    speedup = r["raw_speedup"]
    made = "from the cache" if rec["from_cache"] else f"{rec['wall_s']:.1f} s"
    verdict = "met" if speedup >= TARGET_RAW_SPEEDUP else "NOT met"
    lines = [
        "## INT8 engine (`--engine onnx-int8`)",
        "",
        f"Static QDQ quantization ({', '.join(f'{k} {v}' for k, v in rec['settings'].items())}), calibrated on "
        f"{qual['calibration_images']} images evenly spaced over the sorted sample "
        f"({made}; calibration and evaluation images overlap, as a job's own input does).",
        "",
        "| engine | processes x threads | images/s (two measurements, alternated) |",
        "|---|---|---|",
    ]
    for engine, runs in r["raw"].items():
        shape = f"{runs[0]['procs']} x {runs[0]['threads']}"
        speeds = " / ".join(f"{x['images_per_s']:.1f}" for x in runs)
        name = "onnx (fp32)" if engine == "onnx" else engine  # not counted as the main tables' onnx rows
        lines.append(f"| {name} | {shape} | {speeds} |")
    lines += [
        "",
        f"Raw speed-up int8 / fp32 (best against best): **{speedup:.2f}x** ({verdict}; target >= "
        f"{TARGET_RAW_SPEEDUP}).",
        "",
        f"Quality against fp32 on {qual['images']} images of {qual['classes']} classes (`{qual['images_dir']}`), "
        "calibrated random weights:",
        "",
        "| metric | value |",
        "|---|---|",
        f"| cosine to fp32, min / median | {qual['cosine_min']:.4f} / {qual['cosine_median']:.4f} |",
        f"| centred cosine (fp32 mean removed), median | {qual['centred_cosine_median']:.3f} |",
        f"| share of fp32 energy that varies between images | {qual['fp32_signal_share']:.3f} |",
        f"| int8 nearest to its own fp32 image (self-match; chance 1/{qual['images']}) | {qual['self_match']:.3f} |",
        f"| same {qual['neighbours']} nearest neighbours in PCA-{qual['pca_components']} space | "
        f"{qual['neighbours_identical']:.3f} (mean overlap {qual['neighbours_overlap']:.3f}) |",
        f"| linear probe accuracy, fp32 / int8 ({qual['probe_test_images']} held-out images) | "
        f"{qual['probe_accuracy_fp32']:.3f} / {qual['probe_accuracy_int8']:.3f} |",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> dict:
    """`python -m bench.int8_quality`: the bench's INT8 section alone; bench.run runs it so, in a fresh process
    (its own holds TensorFlow, and quantizing beside it overflowed a shared 24 GB machine)."""
    import argparse
    import hashlib
    import json
    import tempfile

    from bench.dataset import FRUITS, make_weights, source_images
    from bench.run import job_layout, run_raw
    from job.onnx_engine import cached_keras_weights_to_onnx

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--images", type=Path, default=FRUITS, help="class folders of JPEGs (default: the bench's)")
    p.add_argument("--model", type=Path, help="the fp32 ONNX model (default: convert the bench's weights)")
    p.add_argument("--cache", type=Path, help="model cache folder (default: a temporary one)")
    p.add_argument("--raw-seconds", type=float, default=15.0)
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    layout = job_layout(args.cores)
    with tempfile.TemporaryDirectory(prefix="featurizer-int8-bench-") as tmp:
        work = Path(tmp)
        cache = args.cache or work / "model-cache"
        fp32_model = args.model
        if fp32_model is None:
            weights = make_weights(work / "mobilenet_v2_calibrated.weights.h5", source_images()).read_bytes()
            fp32_model = work / "model.onnx"
            os.environ["FEATURIZER_CACHE_DIR"] = str(cache)
            fp32_model.write_bytes(
                cached_keras_weights_to_onnx(weights, ".weights.h5", hashlib.sha256(weights).hexdigest())[0]
            )

        def raw(engine: str, model: Path) -> dict:
            procs, threads = layout["concurrent_tasks"], layout["threads_per_task"]
            return run_raw(engine, model, args.images, threads, procs, layout["batch_size"], args.raw_seconds)

        result = bench_int8(fp32_model, args.images, work, raw, cache)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("\n".join(markdown_section(result)))
    return result


if __name__ == "__main__":
    main()
