"""Scale benchmark (issue 13 §1): the dry run on trees of 20,000 and 200,000 files, one real job on the first.

Each tree: tiny valid JPEGs in 1,000 class folders, plus 1 % zero-byte and 1 % corrupt (truncated)
files. Each dry run is a fresh process (`python -m bench.scale child ...`: the job's own
pipeline.run with --dry-run), sampled by bench.procs for the driver's peak RSS (its Python and its
JVM; in local mode the JVM is driver and executor at once, so this overstates a cluster's driver).
Per stage seconds come from the run's own timer. The trees are deleted afterwards.

    python -m bench.scale [--sizes 20000 200000] [--real-n 20000] [--work DIR]

With --real-n 0 no real job runs, and the previous scale.json's real run is kept with its date.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.run import REPO, machine, timed_tree

CLASSES = 1000
EMPTY_EVERY = 100  # 1 % zero-byte files
CORRUPT_EVERY = 100  # 1 % truncated JPEGs (offset by half a period from the empty ones)
VARIANTS = 64
STAGES = ("list", "account", "not_inputs", "plan")


def jpeg_variants(count: int = VARIANTS) -> list[bytes]:
    """`count` distinct tiny JPEGs (32x32, a colour gradient each): encoded once, written many times."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    out = []
    for i in range(count):
        pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(i * 4)), axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


def generate(root: Path, n: int, classes: int = CLASSES) -> dict[str, int]:
    """Write `n` files over `classes` folders; return how many of each kind were written."""
    variants = jpeg_variants()
    folders = [root / f"class_{c:04d}" for c in range(classes)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    kinds = {"valid": 0, "empty": 0, "corrupt": 0}
    for i in range(n):
        data = variants[i % VARIANTS]
        if i % EMPTY_EVERY == 0:
            data, kind = b"", "empty"
        elif i % CORRUPT_EVERY == CORRUPT_EVERY // 2:
            data, kind = data[: len(data) // 3], "corrupt"
        else:
            kind = "valid"
        (folders[i % classes] / f"img_{i:07d}.jpg").write_bytes(data)
        kinds[kind] += 1
    for folder in folders[::10]:  # not inputs: a hidden file and a file the glob does not match
        (folder / "._resource_fork.jpg").write_bytes(variants[0])
        (folder / "notes.txt").write_text("not an image")
        kinds["hidden"] = kinds.get("hidden", 0) + 1
        kinds["no_glob_match"] = kinds.get("no_glob_match", 0) + 1
    return kinds


def child(argv: list[str]) -> None:
    """In a fresh process: the job's dry run (or a real run), printed as one `RUN {json}` line."""
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--sequential-listing", action="store_true", help="list on the driver (no Spark listing job)")
    args = p.parse_args(argv)
    from job.config import JobConfig
    from job.pipeline import run
    from job.session import start_spark

    cfg = JobConfig(
        input=args.input,
        output=args.output,
        weights="random",
        engine="onnx",
        master="local[2]",
        dry_run=args.dry_run,
    )
    spark = start_spark(cfg)
    try:
        if args.sequential_listing:
            spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", str(10**9))
        report = run(spark, cfg)
        keep = {key: report.get(key) for key in ("counts", "timings_s", "listing_spark_jobs", "featurize", "rejected")}
        keep["not_inputs"] = report.get("not_inputs")
        keep["jvm_heap_live_mib"] = live_heap_mib(spark)
        keep["jvm_heap_live_released_mib"] = released_heap_mib(spark)
        print("RUN " + json.dumps({"finished_at": time.time(), "report": keep}), flush=True)
    finally:
        spark.stop()


def live_heap_mib(spark) -> float:
    """The driver JVM's heap in use after a full GC: what it retains (the file index among it), not
    what the collector happened to grow the heap to (RSS)."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    return round(jvm.java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed() / 2**20, 1)


def released_heap_mib(spark, settle_s: float = 2.0, tries: int = 10) -> float:
    """The live heap once Python's references to the run's JVM objects are gone: Py4J tells the JVM
    from a finalizer thread, seconds after Python drops them, so measure until two readings agree."""
    import gc

    last = None
    for _ in range(tries):
        gc.collect()
        time.sleep(settle_s)
        now = live_heap_mib(spark)
        if last is not None and abs(now - last) < 1:
            break
        last = now
    return now


def measure(root: Path, out: Path, log: Path, dry_run: bool, sequential: bool = False) -> dict:
    cmd = [sys.executable, "-m", "bench.scale", "child", "--input", str(root), "--output", str(out)]
    cmd += ["--dry-run"] if dry_run else []
    cmd += ["--sequential-listing"] if sequential else []
    wall, _, _, marks = timed_tree(cmd, log, timeout=3600)
    if not marks:
        raise RuntimeError(f"no RUN line from {' '.join(cmd[:5])}; see {log}")
    at_run = marks[0]["peaks"]
    return {
        "wall_s": round(wall, 1),
        "driver_python_peak_mib": round(at_run["driver_python_mib"], 1),
        "jvm_peak_mib": round(at_run["jvm_mib"], 1),
        "driver_peak_mib": round(at_run["driver_python_mib"] + at_run["jvm_mib"], 1),
        "workers_peak_pss_mib": round(at_run["workers_total_pss_mib"], 1),
        **marks[0]["report"],
    }


def growth(results: dict) -> dict:
    """Driver RSS growth and time ratios between the smallest and the largest tree."""
    sizes = sorted(int(n) for n in results["dry_runs"])
    small, large = results["dry_runs"][str(sizes[0])], results["dry_runs"][str(sizes[-1])]
    ratio = sizes[-1] / sizes[0]
    out = {
        "files_ratio": ratio,
        "driver_rss_growth_mib": round(large["driver_peak_mib"] - small["driver_peak_mib"], 1),
        "jvm_live_heap_growth_mib": round(large["jvm_heap_live_mib"] - small["jvm_heap_live_mib"], 1),
        "jvm_live_heap_released_growth_mib": round(
            large.get("jvm_heap_live_released_mib", 0) - small.get("jvm_heap_live_released_mib", 0), 1
        ),
        "target_driver_rss_growth_mib": 100,
    }
    for stage in STAGES:
        a, b = small["timings_s"].get(stage), large["timings_s"].get(stage)
        if a and b:
            out[f"{stage}_time_ratio"] = round(b / a, 2)
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Scale benchmark (issue 13 §1)",
        "",
        f"`python -m bench.scale` on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, local[2]; "
        f"{r['when']}. Trees: tiny JPEGs in {CLASSES:,} class folders, 1 % zero-byte, 1 % corrupt. "
        "Each run is a fresh process; driver RSS = peak of its Python + peak of its JVM (local mode: "
        "the JVM is also the executor, so a cluster's driver is smaller). Other sessions shared the "
        "machine's 2 cores: times are upper bounds.",
        "",
        "## Dry runs (`--dry-run`: list, account, plan; no model, nothing written)",
        "",
        "| files | listed | would featurize | empty | hidden / no glob match | list s | account s "
        "| not_inputs s | wall s | listing Spark jobs | driver Python MiB | JVM MiB | driver MiB | JVM live heap MiB "
        "| JVM live heap, released MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, d in sorted(r["dry_runs"].items(), key=lambda kv: int(kv[0])):
        c, t, ni = d["counts"], d["timings_s"], d.get("not_inputs") or {}
        hidden = sum(v for k, v in ni.items() if k.startswith("hidden"))
        lines.append(
            f"| {int(n):,} | {c['listed']:,} | {c['would_featurize']:,} | {c['would_reject']:,} | "
            f"{hidden} / {sum(ni.values()) - hidden} | {t['list']} | {t['account']} | {t['not_inputs']} | "
            f"{d['wall_s']} | {d['listing_spark_jobs']} | {d['driver_python_peak_mib']} | {d['jvm_peak_mib']} | "
            f"{d['driver_peak_mib']} | {d['jvm_heap_live_mib']} | {d.get('jvm_heap_live_released_mib', '')} |"
        )
    g = r["growth"]
    lines += [
        "",
        f"Driver RSS growth {g['driver_rss_growth_mib']} MiB for {g['files_ratio']:.0f}x the files "
        f"(target < {g['target_driver_rss_growth_mib']} MB); the JVM's live heap after a full GC grew "
        f"{g['jvm_live_heap_growth_mib']} MiB right after the run, "
        f"{g.get('jvm_live_heap_released_growth_mib', '?')} MiB once Py4J had released the run's references. "
        "Time ratios (large/small): "
        + ", ".join(f"{k.removesuffix('_time_ratio')} {v}" for k, v in g.items() if k.endswith("_time_ratio"))
        + f" for {g['files_ratio']:.0f}x the files.",
    ]
    if r.get("sequential"):
        lines += ["", "## Listing on the driver instead (parallelPartitionDiscovery.threshold raised)", ""]
        lines += ["| files | list s | listing Spark jobs | JVM MiB | driver MiB |", "|---:|---:|---:|---:|---:|"]
        for n, d in sorted(r["sequential"].items(), key=lambda kv: int(kv[0])):
            cells = (f"{int(n):,}", d["timings_s"]["list"], d["listing_spark_jobs"])
            cells += (d["jvm_peak_mib"], d["driver_peak_mib"])
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if r.get("real_run"):
        d = r["real_run"]
        c = d["counts"]
        lines += [
            "",
            f"## One real run on the {r['real_n']:,}-file tree (engine onnx, --weights random; "
            f"{r.get('real_run_when', r['when'])})",
            "",
            f"listed {c['listed']:,}, featurized {c['featurized']:,}, rejected {c['rejected']:,}, "
            f"model processed {c['model_processed']:,}; wall {d['wall_s']} s; driver Python "
            f"{d['driver_python_peak_mib']} MiB, JVM {d['jvm_peak_mib']} MiB, Python workers (PSS) "
            f"{d['workers_peak_pss_mib']} MiB.",
            "",
            "| stage | s |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v} |" for k, v in d["timings_s"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child(argv[1:])
        return {}
    p = argparse.ArgumentParser(description="Dry runs at 20k/200k files and one real run (issue 13 §1).")
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    p.add_argument("--real-n", type=int, default=20_000, help="real run on the tree of this size (0: none)")
    p.add_argument("--sequential", action="store_true", help="also list each tree on the driver alone")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="featurizer-scale-"))
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    results.update({"dry_runs": {}, "generate_s": {}, "sequential": {}, "real_n": args.real_n})
    previous = json.loads((args.out / "scale.json").read_text()) if (args.out / "scale.json").exists() else {}
    if not args.real_n and previous.get("real_run"):  # no real run now: keep the last one, with its date
        results["real_n"] = previous["real_n"]
        results["real_run"] = previous["real_run"]
        results["real_run_when"] = previous.get("real_run_when", previous.get("when"))
    try:
        for n in args.sizes:
            root = work / f"tree-{n}"
            start = time.perf_counter()
            results.setdefault("kinds", {})[str(n)] = generate(root, n)
            results["generate_s"][str(n)] = round(time.perf_counter() - start, 1)
            print(f"generated {n:,} files in {results['generate_s'][str(n)]} s", file=sys.stderr, flush=True)
            dry = measure(root, work / f"out-{n}", work / f"dry-{n}.log", dry_run=True)
            assert not (work / f"out-{n}").exists(), "the dry run wrote its output"
            results["dry_runs"][str(n)] = dry
            print(f"dry run {n:,}: {json.dumps(dry)}", file=sys.stderr, flush=True)
            if args.sequential:
                seq = measure(root, work / f"out-{n}", work / f"seq-{n}.log", dry_run=True, sequential=True)
                results["sequential"][str(n)] = seq
            if n == args.real_n:
                results["real_run"] = measure(root, work / f"out-{n}", work / f"real-{n}.log", dry_run=False)
                print(f"real run {n:,}: {json.dumps(results['real_run'])}", file=sys.stderr, flush=True)
                shutil.rmtree(work / f"out-{n}", ignore_errors=True)
            shutil.rmtree(root)
        results["growth"] = growth(results)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "SCALE.md").write_text(markdown(results))
    return results


if __name__ == "__main__":
    main()
