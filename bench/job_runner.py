"""The job as `python -m job` runs it, optionally repeated in the same session, for the benchmark.

Run 1 is the job as a user starts it (fresh JVM, fresh Python workers that import the engine and
build the model). A repeated run in the same session finds the workers and their cached model
alive (spark.python.worker.reuse), so its featurize stage shows what Spark, decode and Arrow cost
on top of inference alone. Each run prints one `RUN {json}` line with its wall-clock end.

With --raw-seconds, the raw model throughput (bench.raw) is measured right before each repeated
run and once after the last, while the session idles: each steady-state figure then has a raw
figure on either side of it, taken within a minute, so the machine's speed drift (several percent
over minutes here) cancels out of their ratio. Each prints one `RAW {json}` line.

    python -m bench.job_runner --input DIR --output DIR --weights FILE --engine tf [--repeat 2]
        [--raw-seconds 10 --raw-model FILE --raw-images DIR --raw-procs 2 --raw-threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the featurization job (benchmark driver).")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--engine", default="tf")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--raw-seconds", type=float, default=0.0, help="raw measurement around each repeat (0: none)")
    p.add_argument("--raw-model", help="the engine's model file for bench.raw (weights, or .onnx)")
    p.add_argument("--raw-images", help="JPEG folder for bench.raw's batch")
    p.add_argument("--raw-procs", type=int, default=1)
    p.add_argument("--raw-threads", type=int, default=1)
    p.add_argument("--raw-batch-size", type=int, default=64)
    args = p.parse_args(argv)

    def raw() -> None:
        from bench.run import run_raw

        result = run_raw(
            args.engine,
            Path(args.raw_model),
            Path(args.raw_images),
            threads=args.raw_threads,
            procs=args.raw_procs,
            batch=args.raw_batch_size,
            seconds=args.raw_seconds,
        )
        print("RAW " + json.dumps({"finished_at": time.time(), **result}), flush=True)

    from job.config import JobConfig
    from job.pipeline import run
    from job.session import start_spark

    cfg = JobConfig(input=args.input, output=args.output, weights=args.weights, engine=args.engine, master=args.master)
    spark = start_spark(cfg)
    try:
        for i in range(args.repeat):
            if i > 0 and args.raw_seconds:
                raw()
            metadata = run(spark, cfg)
            keep = {key: metadata[key] for key in ("counts", "timings_s", "engine")}
            keep["pca_k"] = metadata["pca"]["k"]
            keep["onnx_model"] = metadata.get("weights", {}).get("onnx_model")
            keep["jvm_class_archive"] = metadata["spark"].get("jvm_class_archive")
            print("RUN " + json.dumps({"finished_at": time.time(), "metadata": keep}), flush=True)
        if args.repeat > 1 and args.raw_seconds:
            raw()
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
