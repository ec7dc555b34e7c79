"""The job as `python -m job` runs it, optionally repeated in the same session, for the benchmark.

Run 1 is the job as a user starts it (fresh JVM, fresh Python workers that import the engine and
build the model). A repeated run in the same session finds the workers and their cached model
alive (spark.python.worker.reuse), so its featurize stage shows what Spark, decode and Arrow cost
on top of inference alone. Each run prints one `RUN {json}` line with its wall-clock end.

    python -m bench.job_runner --input DIR --output DIR --weights FILE --engine tf [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the featurization job (benchmark driver).")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--engine", default="tf")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)

    from job.config import JobConfig
    from job.pipeline import run
    from job.session import start_spark

    cfg = JobConfig(input=args.input, output=args.output, weights=args.weights, engine=args.engine, master=args.master)
    spark = start_spark(cfg)
    try:
        for _ in range(args.repeat):
            metadata = run(spark, cfg)
            keep = {key: metadata[key] for key in ("counts", "timings_s", "engine")}
            keep["pca_k"] = metadata["pca"]["k"]
            print("RUN " + json.dumps({"finished_at": time.time(), "metadata": keep}), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
