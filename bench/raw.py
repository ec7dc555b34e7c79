"""Raw model throughput: the job's exact predictor on one batch decoded up front; no Spark, decode untimed.

`procs` processes with `threads` inference threads each run concurrently, as `procs` concurrent
Spark tasks of `threads` cores would; each warms up (tracing/graph optimisation), waits at a
barrier, measures for `seconds`, then keeps the CPU busy until every process has reported, so
no measurement runs on a machine emptied by the others.

    python -m bench.raw --engine tf --model W.weights.h5 --images DIR --threads 1 --procs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import time
from pathlib import Path

import numpy as np


def _batch(images: Path, batch_size: int) -> np.ndarray:
    from job.decode import decode_batch

    files = sorted(images.rglob("*.jpg"))
    if not files:
        raise ValueError(f"no .jpg under {images}")
    batch, valid, _ = decode_batch([files[i % len(files)].read_bytes() for i in range(batch_size)])
    if len(valid) < batch_size:
        raise ValueError(f"undecodable images under {images}")
    return batch


def _predictor(engine: str, model: Path, threads: int):
    """The same builders job.featurize.worker_predictor uses."""
    if engine in ("onnx", "onnx-int8"):  # an int8 model runs through the same predictor
        from job.onnx_engine import onnx_predictor

        return onnx_predictor(model.read_bytes(), threads)
    from job.model import configure_threads, load_model, tf_predictor

    configure_threads(threads)
    suffix = ".weights.h5" if model.name.endswith(".weights.h5") else ".h5"
    return tf_predictor(load_model(model.read_bytes(), suffix))


def _worker(args: argparse.Namespace, barrier, results, stop) -> None:
    predict = _predictor(args.engine, Path(args.model), args.threads)
    batch = _batch(Path(args.images), args.batch_size)
    for _ in range(args.warmup):
        predict(batch)
    barrier.wait()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        out = predict(batch)
        done += len(out)
    results.put({"images": done, "seconds": time.perf_counter() - start, "dim": int(out.shape[1])})
    while not stop.is_set():
        predict(batch)


def measure(args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")  # fresh interpreters: no thread pools inherited
    barrier, results, stop = ctx.Barrier(args.procs), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(args, barrier, results, stop)) for _ in range(args.procs)]
    for p in procs:
        p.start()
    reports: list[dict] = []
    deadline = time.monotonic() + args.seconds + 600
    while len(reports) < len(procs):
        if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
            stop.set()
            for p in procs:
                p.terminate()
            raise RuntimeError(f"a raw-throughput process failed or hung (exit codes {[p.exitcode for p in procs]})")
        try:
            reports.append(results.get(timeout=1))
        except queue.Empty:
            continue
    stop.set()
    for p in procs:
        p.join()
    return {
        "engine": args.engine,
        "threads": args.threads,
        "procs": args.procs,
        "batch_size": args.batch_size,
        "images_per_s": sum(r["images"] / r["seconds"] for r in reports),
        "per_process": reports,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("tf", "onnx", "onnx-int8"), required=True)
    p.add_argument("--model", required=True, help="Keras weights file (tf) or ONNX model (onnx, onnx-int8)")
    p.add_argument("--images", required=True, help="folder of real JPEGs for the batch")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(measure(parse())))
