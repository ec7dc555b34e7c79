"""The only place that builds a SparkSession (the job's edge)."""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf
from pyspark.sql import SparkSession

from job.config import JobConfig

APP_NAME = "emr-image-featurizer"


def spark_conf(cfg: JobConfig) -> dict[str, str]:
    """Settings the job relies on; spark-submit/--conf values given by the user win."""
    return {
        # One Arrow batch = one model batch: executor memory does not grow with the input.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size),
        # Keep Python workers (and the model cached in them) alive across tasks.
        "spark.python.worker.reuse": "true",
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
