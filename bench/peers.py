"""Peers (issue 12 §4): what a user would pick instead of the job, on the same images and cores.

- `spark-udf`: Spark's own batch inference, `pyspark.ml.functions.predict_batch_udf`, with the
  Keras model called as Spark's documentation shows (`model.predict` on each batch), then Spark ML
  `StandardScaler(withMean, withStd)` + `PCA`: fit once with k = 1280, k = the smallest reaching
  the variance target by Spark's own explained variance, `VectorSlicer` keeps those components.
  The features are cached (`persist`), so inference runs once.
- `ray-data`: Ray Data `read_binary_files` + `map_batches` with an actor per concurrent task
  running the same model. Ray has no PCA: the features are gathered on the driver, standardized
  and decomposed with numpy, and projected there (optional: `pip install -e '.[bench-peers]'`).

Both decode with the job's default decode (job.decode.decode_batch, the seed's pixels), load the
bench's weights file into Keras' MobileNetV2 (no top, average pooling), and use the job's layout
(concurrent tasks x threads per task), so their features are comparable with the job's. Each
prints one `RUN {json}` line when its output is written (the bench's end-to-end mark), then the
spark-udf peer checks Spark ML's PCA against numpy on the same standardized features (FACTS.md:
it was numerically wrong on an AVX-512 host) and prints `PEER_CHECK {json}`.

    python -m bench.peers spark-udf --input DIR --output DIR --weights FILE [--cores 2 --threads 1]
    python -m bench.peers ray-data  --input DIR --output DIR --weights FILE [--cores 2 --threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PEERS = ("spark-udf", "ray-data")
FEATURE_DIM = 1280
# How many leading components the PCA check compares one by one.
COMPARED_COMPONENTS = 10
EXTRA = "pip install -e '.[bench-peers]'"


def missing_requirement(peer: str) -> str | None:
    """Why `peer` cannot run in this environment (an optional package is absent), or None."""
    if peer == "ray-data" and importlib.util.find_spec("ray") is None:
        return f"not installed: Ray Data is an optional bench extra ({EXTRA})"
    return None


def k_for_variance(ratios: np.ndarray, target: float) -> int:
    """The smallest k whose leading explained-variance ratios sum to `target` (all of them if none do)."""
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= target - 1e-12)[0]
    return int(reached[0] + 1) if len(reached) else len(ratios)


def standardize(features: np.ndarray) -> np.ndarray:
    """Centre and scale each column as Spark ML's StandardScaler(withMean, withStd) does (std with n - 1)."""
    x = features.astype(np.float64)
    std = x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def numpy_pca(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(explained-variance ratios, components as columns), largest first, from the covariance."""
    x = scaled - scaled.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)
    return values / values.sum(), vectors[:, order]


def pca_deviation(scaled: np.ndarray, components: np.ndarray, explained: np.ndarray, variance: float) -> dict:
    """How far a PCA fit (`components` d x k as columns, `explained` ratios) is from numpy's on `scaled`.

    Reports the k each chooses for `variance`; the share of the total variance the fit's k
    components really capture (its subspace, measured on the data) against the best k components
    (numpy's); the leading explained-variance ratios both report; |cosine| of each leading component
    with numpy's; and how far the fit's components are from orthonormal.
    """
    ratios, vectors = numpy_pca(scaled)
    x = scaled - scaled.mean(axis=0)
    total = float((x**2).sum())
    k_fit, k_numpy = k_for_variance(explained, variance), k_for_variance(ratios, variance)
    basis = components[:, :k_fit]
    captured = float(((x @ basis) ** 2).sum() / total) if total > 0 else 0.0
    shown = min(COMPARED_COMPONENTS, components.shape[1], vectors.shape[1])
    cosines = np.abs((components[:, :shown] * vectors[:, :shown]).sum(axis=0))
    cosines /= np.linalg.norm(components[:, :shown], axis=0) * np.linalg.norm(vectors[:, :shown], axis=0)
    gram = basis.T @ basis
    return {
        "variance_target": variance,
        "k_fit": k_fit,
        "k_numpy": k_numpy,
        "captured_by_fit_k": captured,
        "captured_by_best_k": float(ratios[:k_fit].sum()),
        "first_ratio_fit": float(explained[0]),
        "first_ratio_numpy": float(ratios[0]),
        "max_ratio_diff_leading": float(np.abs(explained[:shown] - ratios[:shown]).max()),
        "leading_cosines": [round(float(c), 6) for c in cosines],
        "orthonormality_error": float(np.abs(gram - np.eye(len(gram))).max()),
    }


def pca_is_wrong(check: dict, tolerance: float = 1e-6) -> bool:
    """Whether a pca_deviation() result shows a fit that is not numpy's (beyond rounding)."""
    return (
        check["k_fit"] != check["k_numpy"]
        or check["max_ratio_diff_leading"] > tolerance
        or abs(check["captured_by_fit_k"] - check["captured_by_best_k"]) > tolerance
        or min(check["leading_cosines"], default=1.0) < 1 - tolerance
        or check["orthonormality_error"] > tolerance
    )


def feature_agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Per image: max |theirs - ours| / max |ours| (as bench/decode.py), and cosine; worst and median."""
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    relative = np.abs(b - a).max(axis=1) / np.maximum(np.abs(a).max(axis=1), 1e-30)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    cosine = (a * b).sum(axis=1) / norms
    return {
        "images": len(a),
        "max_relative": float(relative.max()) if len(a) else None,
        "median_relative": float(np.median(relative)) if len(a) else None,
        "min_cosine": float(cosine.min()) if len(a) else None,
    }


def normalize_path(path: str) -> str:
    """A file URI or path as a plain absolute path (Spark writes `file:/x`, Ray `/x`)."""
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    return "/" + path.lstrip("/")


def match_rows(
    ours: tuple[Sequence[str], np.ndarray], theirs: tuple[Sequence[str], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Both feature matrices on the images both have, in one order; counts of the unmatched ones."""
    index = {normalize_path(p): i for i, p in enumerate(ours[0])}
    pairs = [(index[key], j) for j, p in enumerate(theirs[0]) if (key := normalize_path(p)) in index]
    rows_ours = np.array([i for i, _ in pairs], dtype=int)
    rows_theirs = np.array([j for _, j in pairs], dtype=int)
    missing = {"only_ours": len(ours[0]) - len(pairs), "only_theirs": len(theirs[0]) - len(pairs)}
    return ours[1][rows_ours], theirs[1][rows_theirs], missing


def read_features(folder: Path) -> tuple[list[str], np.ndarray]:
    """(paths, n x d float32 features) from a Parquet output folder with `path` and `features` columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["path", "features"])
    flat = pc.list_flatten(table.column("features")).to_numpy()
    return table.column("path").to_pylist(), flat.astype(np.float32).reshape(table.num_rows, -1)


def compare_outputs(ours: Path, theirs: Path) -> dict:
    """The feature agreement of two runs' outputs on the images both wrote."""
    a, b, missing = match_rows(read_features(ours), read_features(theirs))
    return {**feature_agreement(a, b), **missing}


# --- the report ---------------------------------------------------------------------------------


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def peers_section(results: dict) -> list[str]:
    """RESULTS.md's "Peers" section: end-to-end time, ratio to each job engine, feature agreement."""
    peers = results.get("peers")
    if not peers:
        return []
    n = peers["images"]
    ours = {j["engine"]: j["wall_s"] for j in results["jobs"] if j["images"] == n}
    engines = sorted(ours)
    rows = list(peers["runs"])
    seed = results.get("seed")
    if seed and seed["images"] == n:
        keep = {key: seed[key] for key in ("images", "model_processed", "k") if key in seed}
        rows.insert(0, {"name": "seed notebook", "wall_s": seed["wall_s"], **keep, "note": "bench/seed_notebook.py"})
    reference = peers.get("reference_engine")
    lines = [
        "",
        f"## Peers (N={n}, same images, local[{results['config']['layout']['cores']}], same layout)",
        "",
        "End-to-end: spawn to output written, in a fresh process, as for the job (its first run). "
        "Ratio: the peer's end-to-end time over the job's at the same N (> 1: the job is faster). "
        f"Agreement: each image's features against the job's ({reference or '-'} engine) output, "
        "max |peer - job| / max |job| per image, worst image; and the lowest cosine.",
        "",
        "| peer | end-to-end s | "
        + " | ".join(f"peer / job ({e})" for e in engines)
        + " | images | model processed | features max rel. diff | min cosine | PCA k | note |",
        "|---|---|" + "---|" * len(engines) + "---|---|---|---|---|---|",
    ]
    for run in rows:
        if run.get("skipped"):
            lines.append(f"| {run['name']} | - |" + " - |" * len(engines) + f" - | - | - | - | - | {run['skipped']} |")
            continue
        agree = run.get("agreement") or {}
        ratios = " | ".join(f"{run['wall_s'] / ours[e]:.2f}" for e in engines)
        lines.append(
            f"| {run['name']} | {run['wall_s']:.1f} | {ratios} | {run.get('images', n)} | "
            f"{run.get('model_processed', '-')} | {_cell(agree.get('max_relative'), '.2e')} | "
            f"{_cell(agree.get('min_cosine'), '.7f')} | {run.get('k', '-')} | {run.get('note', '')} |"
        )
    lines += _lead_lines(rows, ours)
    check = next((r.get("pca_check") for r in rows if r.get("pca_check")), None)
    if check:
        verdict = (
            "**Spark ML's PCA is numerically wrong here** (as FACTS.md found on 600 x 1280 features; pure-Java LAPACK)"
            if pca_is_wrong(check)
            else "Spark ML's PCA agreed with numpy in this run (FACTS.md found it wrong on 600 x 1280 features "
            "on an AVX-512 host; checked in every run)"
        )
        lines += [
            "",
            f"{verdict}: on the spark-udf "
            f"peer's standardized features, numpy's eigendecomposition gives {check['first_ratio_numpy']:.4f} "
            f"explained variance for the first component, Spark ML {check['first_ratio_fit']:.4f} (leading "
            f"ratios differ by up to {check['max_ratio_diff_leading']:.4f}). For {check['variance_target']} "
            f"Spark chose k = {check['k_fit']}, numpy k = {check['k_numpy']}; Spark's {check['k_fit']} components "
            f"capture {check['captured_by_fit_k']:.4f} of the variance where the best {check['k_fit']} capture "
            f"{check['captured_by_best_k']:.4f}. |cosine| of Spark's leading components with numpy's: "
            + ", ".join(f"{c:.3f}" for c in check["leading_cosines"])
            + f"; orthonormality error {check['orthonormality_error']:.1e}."
            + (
                " The peer's time is reported anyway; its PCA output is not usable as is."
                if pca_is_wrong(check)
                else ""
            ),
        ]
    return lines


def _lead_lines(rows: list[dict], ours: dict[str, float]) -> list[str]:
    """Whether the job's fastest engine leads every peer, said plainly."""
    timed = [r for r in rows if not r.get("skipped")]
    if not ours or not timed:
        return []
    engine = min(ours, key=ours.get)
    behind = [r["name"] for r in timed if r["wall_s"] <= ours[engine]]
    if behind:
        return [
            "",
            f"The job ({engine}, {ours[engine]:.1f} s) does NOT lead: {', '.join(behind)} ran as fast or faster.",
        ]
    slowest_margin = min(r["wall_s"] / ours[engine] for r in timed)
    return ["", f"The job ({engine}, {ours[engine]:.1f} s) leads every peer; the closest takes {slowest_margin:.2f}x."]


# --- the peers themselves (subprocesses of bench/run.py) -----------------------------------------


def _label(path: str) -> str:
    return path.rstrip("/").split("/")[-2]


def _keras_model(weights: str, threads: int):
    """MobileNetV2 without its top (average pooling, 1280-d), the bench's weights loaded; TF on `threads`."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    model.load_weights(weights)
    return model


def _predict(model, contents: Sequence[bytes]) -> np.ndarray:
    """The job's decode, Keras' preprocessing and `model.predict` (Spark's documented pattern), one batch."""
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input

    from job.decode import decode_batch

    pixels, _, reasons = decode_batch(list(contents))
    if reasons:
        raise ValueError(f"undecodable images in the batch: {reasons}")
    return model.predict(preprocess_input(pixels.astype(np.float32)), batch_size=len(pixels), verbose=0)


def run_spark_udf(args: argparse.Namespace) -> dict:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler, VectorSlicer
    from pyspark.ml.functions import array_to_vector, predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType

    timings: dict[str, float] = {}
    start = time.perf_counter()
    spark = (
        SparkSession.builder.appName("peer-predict-batch-udf")
        .master(f"local[{args.cores}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        .config("spark.task.cpus", str(args.task_cpus))
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    processed = spark.sparkContext.accumulator(0)
    weights, threads = args.weights, args.threads
    timings["session"] = time.perf_counter() - start

    def make_predict_fn():
        # predict_batch_udf caches this function across tasks (ModelCache), but a task reports only the
        # accumulator it deserialized itself: look the current one up by id at each call.
        from pyspark.accumulators import _accumulatorRegistry

        model, aid = _keras_model(weights, threads), processed.aid

        def predict(contents: np.ndarray) -> np.ndarray:
            out = _predict(model, contents)
            _accumulatorRegistry[aid].add(len(out))
            return out

        return predict

    featurize = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=args.batch_size)
    tick = time.perf_counter()
    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(args.input)
    )
    features = images.select(
        "path", F.element_at(F.split("path", "/"), -2).alias("label"), featurize("content").alias("features")
    ).withColumn("vector", array_to_vector("features"))
    features = features.persist()
    n = features.count()
    timings["featurize"] = time.perf_counter() - tick

    tick = time.perf_counter()
    scaler = StandardScaler(inputCol="vector", outputCol="scaled", withMean=True, withStd=True)
    pca = PCA(k=FEATURE_DIM, inputCol="scaled", outputCol="all_components")
    model = Pipeline(stages=[scaler, pca]).fit(features)
    explained = model.stages[-1].explainedVariance.toArray()
    k = args.k or k_for_variance(explained, args.variance)
    timings["pca_fit"] = time.perf_counter() - tick

    tick = time.perf_counter()
    slicer = VectorSlicer(inputCol="all_components", outputCol="pca_features", indices=list(range(k)))
    projected = slicer.transform(model.transform(features))
    projected.select("path", "label", "features", "pca_features").write.mode("overwrite").parquet(args.output)
    timings["write"] = time.perf_counter() - tick
    report = {"images": n, "model_processed": int(processed.value), "k": k, "timings_s": timings}
    print("RUN " + json.dumps({"finished_at": time.time(), "report": report}), flush=True)

    # Not timed: Spark ML's PCA against numpy on the very features it was fitted on.
    rows = model.stages[0].transform(features).select("scaled").collect()
    scaled = np.array([r[0].toArray() for r in rows])
    check = pca_deviation(scaled, model.stages[-1].pc.toArray(), explained, args.variance)
    print("PEER_CHECK " + json.dumps(check), flush=True)
    features.unpersist()
    spark.stop()
    return {**report, "pca_check": check}


def run_ray_data(args: argparse.Namespace) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.data

    # Ray kills its own workers when the host's memory passes 95 %, whoever uses it; Spark has no such
    # monitor, and on a shared machine other processes would decide the peer's fate: leave it to the kernel.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    ray.init(
        num_cpus=args.cores,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 2**20,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    weights, threads = args.weights, args.threads
    timings["session"] = time.perf_counter() - start

    class Featurizer:
        def __init__(self) -> None:
            self.model = _keras_model(weights, threads)

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"path": batch["path"], "features": _predict(self.model, batch["bytes"])}

    tick = time.perf_counter()
    # Reading is file I/O (decode runs in the actors): with a CPU each, reads wait forever for the
    # cores the actors hold, so they take none.
    images = ray.data.read_binary_files(
        args.input, include_paths=True, file_extensions=["jpg"], ray_remote_args={"num_cpus": 0}
    )
    featurized = images.map_batches(
        Featurizer,
        batch_size=args.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, args.cores // args.task_cpus)),
        num_cpus=args.task_cpus,
    ).materialize()
    batches = list(featurized.iter_batches(batch_size=None, batch_format="numpy"))
    paths = [str(p) for b in batches for p in b["path"]]
    features = np.concatenate([b["features"] for b in batches]).astype(np.float32)
    timings["featurize"] = time.perf_counter() - tick

    tick = time.perf_counter()  # Ray has no PCA: numpy on the driver, as a Ray user would
    scaled = standardize(features)
    ratios, vectors = numpy_pca(scaled)
    k = args.k or k_for_variance(ratios, args.variance)
    projected = scaled @ vectors[:, :k]
    timings["pca_fit"] = time.perf_counter() - tick

    tick = time.perf_counter()
    table = pa.table(
        {
            "path": paths,
            "label": [_label(p) for p in paths],
            "features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), features.shape[1]),
            "pca_features": pa.FixedSizeListArray.from_arrays(pa.array(projected.ravel()), k),
        }
    )
    Path(args.output).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, Path(args.output) / "part-0.parquet")
    timings["write"] = time.perf_counter() - tick
    report = {"images": len(paths), "model_processed": len(paths), "k": k, "timings_s": timings}
    print("RUN " + json.dumps({"finished_at": time.time(), "report": report}), flush=True)
    ray.shutdown()
    return report


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A peer of the featurization job (benchmark comparison).")
    p.add_argument("peer", choices=PEERS)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", required=True, help="the bench's MobileNetV2 no-top weights file")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores for the peer (local[cores])")
    p.add_argument("--task-cpus", type=int, default=1, help="cores per concurrent task (the job's layout)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads per task (the job's layout)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--variance", type=float, default=0.99)
    p.add_argument("--k", type=int, default=None, help="fixed k instead of the variance target")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    reason = missing_requirement(args.peer)
    if reason:
        raise SystemExit(f"{args.peer}: {reason}")
    return run_spark_udf(args) if args.peer == "spark-udf" else run_ray_data(args)


if __name__ == "__main__":
    main()
