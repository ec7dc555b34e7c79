"""The only place that builds a SparkSession (the job's edge)."""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf
from pyspark.sql import SparkSession

from job.config import JobConfig

APP_NAME = "emr-image-featurizer"
# Spark's default cost of opening a file, made explicit because partition sizing relies on it.
OPEN_COST_BYTES = 4 * 1024 * 1024
# At most this many model batches of small files per task. Each task costs ~0.7 s of fixed work
# (measured: Parquet writer, commit, scheduling, Python worker hand-over), which at 2 batches per
# task took 18 % of the featurize stage. Below the cap Spark gives each core one partition
# (bytes / default parallelism), so small inputs run in one wave; the cap keeps tasks at ~25 s of
# TensorFlow work on big inputs, so dynamic allocation has tasks to give new executors.
MAX_BATCHES_PER_TASK = 16


def spark_conf(cfg: JobConfig) -> dict[str, str]:
    """Settings the job relies on; spark-submit/--conf values given by the user win."""
    return {
        # One Arrow batch = one model batch: executor memory does not grow with the input.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size),
        # Keep Python workers (and the model cached in them) alive across tasks.
        "spark.python.worker.reuse": "true",
        # One core per task and one inference thread per Python worker (--threads N reserves N
        # cores per task). Measured on 2 cores (bench/RESULTS.md): 2 workers x 1 thread beat
        # 1 worker x 2 threads for TensorFlow (91 vs 78 img/s), equal within noise for ONNX Runtime;
        # and untuned TF threads in concurrent workers oversubscribe the cores.
        "spark.task.cpus": str(max(cfg.threads, 1)),
        # binaryFile packs files into partitions by bytes + open cost: small images are costed at
        # OPEN_COST_BYTES, so a partition holds at most MAX_BATCHES_PER_TASK full model batches of
        # them (the default ~32 files made half-size model batches and many tasks); large images
        # are packed by size. Inputs below cores x the cap split into one partition per core.
        "spark.sql.files.openCostInBytes": str(OPEN_COST_BYTES),
        "spark.sql.files.maxPartitionBytes": str(OPEN_COST_BYTES * cfg.batch_size * MAX_BATCHES_PER_TASK),
        "spark.sql.parquet.compression.codec": "snappy",
        "spark.ui.showConsoleProgress": "false",
    }


def start_spark(cfg: JobConfig) -> SparkSession:
    """Local mode by default (driver bound to 127.0.0.1, workers on this interpreter), else spark-submit's."""
    existing = SparkConf()
    master = cfg.master or existing.get("spark.master", None) or "local[*]"
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(APP_NAME).master(master)
    for key, value in spark_conf(cfg).items():
        if not existing.contains(key):
            builder = builder.config(key, value)
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.memory", "2g")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
