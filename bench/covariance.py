"""The covariance pass alone: Spark's RowMatrix against the job's numpy moments, on the same staged features.

    .venv/bin/python -m bench.covariance [--n 2000,8000] [--repeats 3] [--vector-blas]

Writes N synthetic 1280-d float32 vectors (MobileNetV2-like: non-negative, correlated, offset) as a
staged Parquet table like the job's, then, in one Spark session per JVM setting (local[cores], the
job's own session settings), times both routes alternately, `--repeats` times each, on the same
table, and checks that they agree. With --vector-blas a second session runs with
`--add-modules=jdk.incubator.vector`, so Spark's BLAS can use its VectorBLAS instead of the pure-Java
fallback. Prints one JSON object (medians, every sample, the BLAS implementation Spark loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VECTOR_OPTION = "--add-modules=jdk.incubator.vector"


def synthetic_features(n: int, d: int = 1280, seed: int = 0) -> np.ndarray:
    """Float32 rows shaped like pooled ReLU6 activations: non-negative, a few strong factors, offsets ~1."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    x = latent @ rng.normal(scale=0.15, size=(32, d)) + rng.uniform(0.2, 2.0, d) + rng.normal(scale=0.05, size=(n, d))
    return np.clip(x, 0.0, 6.0).astype(np.float32)


def stage(folder: Path, n: int, partitions: int) -> Path:
    """The staged table's shape: path, label, features (float32 bytes), error (null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = synthetic_features(n)
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in enumerate(np.array_split(np.arange(n), partitions)):
        table = pa.table(
            {
                "path": [f"file:/in/c/{i:06d}.jpg" for i in rows],
                "label": ["c"] * len(rows),
                "features": [x[i].tobytes() for i in rows],
                "error": pa.array([None] * len(rows), type=pa.string()),
            }
        )
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    return folder


def session_worker(tables: dict[int, str], repeats: int, cores: int) -> dict:
    """In this process: a job session, then RowMatrix and numpy moments alternately on each table."""
    from pyspark.sql import functions as F

    from job import reduce
    from job.config import JobConfig
    from job.session import start_spark

    spark = start_spark(JobConfig(input="unused-in", output="unused-out", master=f"local[{cores}]"))
    try:
        blas = spark._jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
        out: dict = {"blas": blas, "sizes": {}}
        for n, folder in tables.items():
            featurized = spark.read.parquet(folder).filter(F.col("error").isNull()).select("path", "label", "features")
            featurized.count()  # warm the Parquet reader and the Python workers before timing
            routes = {"rowmatrix": reduce.covariance_stats_rowmatrix, "moments": reduce.covariance_stats}
            samples: dict[str, list[float]] = {name: [] for name in routes}
            jobs: dict[str, int] = {}
            results = {}
            for repeat in range(repeats):
                for name, fn in routes.items():
                    group = f"{name}-{n}-{repeat}"
                    spark.sparkContext.setJobGroup(group, group)
                    start = time.perf_counter()
                    results[name] = fn(spark, featurized)
                    samples[name].append(time.perf_counter() - start)
                    jobs[name] = len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
            a, b = results["rowmatrix"], results["moments"]
            cov_a = a.correlation / np.outer(a.scale, a.scale)  # back to the covariance (no constant columns here)
            cov_b = b.correlation / np.outer(b.scale, b.scale)
            out["sizes"][str(n)] = {
                "partitions": featurized.rdd.getNumPartitions(),
                "seconds": samples,
                "median_s": {name: float(np.median(v)) for name, v in samples.items()},
                "spark_jobs": jobs,
                "count": [a.count, b.count],
                "max_abs_diff_covariance": float(np.abs(cov_a - cov_b).max()),
                "max_rel_diff_covariance": float(np.abs(cov_a - cov_b).max() / np.abs(cov_a).max()),
                "max_abs_diff_mean": float(np.abs(a.mean - b.mean).max()),
            }
        return out
    finally:
        spark.stop()


def run_session(tables: dict[int, Path], repeats: int, cores: int, vector_blas: bool, work: Path) -> dict:
    """One fresh JVM (optionally with the Vector API module) running session_worker."""
    conf_dir = work / ("conf-vector" if vector_blas else "conf-plain")
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text(
        f"spark.driver.extraJavaOptions {VECTOR_OPTION}\n" if vector_blas else ""
    )
    env = {
        **os.environ,
        "SPARK_CONF_DIR": str(conf_dir),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(REPO),
    }
    args = json.dumps({"tables": {str(n): str(p) for n, p in tables.items()}, "repeats": repeats, "cores": cores})
    proc = subprocess.run(
        [sys.executable, "-m", "bench.covariance", "--worker", args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"vector_blas_option": vector_blas, **result}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", default="2000,8000", help="comma-separated row counts")
    p.add_argument("--partitions", type=int, default=0, help="staged files per table (default: the cores)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--vector-blas", action="store_true", help="also time a JVM with the Vector API module")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = session_worker({int(n): f for n, f in spec["tables"].items()}, spec["repeats"], spec["cores"])
        print(json.dumps(result))
        return result
    sizes = [int(x) for x in args.n.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="featurizer-cov-") as tmp:
        work = Path(tmp)
        tables = {n: stage(work / f"staged-{n}", n, args.partitions or args.cores) for n in sizes}
        sessions = [run_session(tables, args.repeats, args.cores, False, work)]
        if args.vector_blas:
            sessions.append(run_session(tables, args.repeats, args.cores, True, work))
    result = {"load_before": os.getloadavg(), "cores": args.cores, "sessions": sessions}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
