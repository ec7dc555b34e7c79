"""The cost estimate's throughput table (blueprint/throughput.json), derived from a bench run's results.json.

Per engine, a straight line through the two first-run end-to-end points (N and N x scale images, each a
fresh process, JVM start-up included): the slope times the run's vCPUs is the vCPU-seconds one image
costs in the job's layout (one inference thread per vCPU, as on the cluster's executors), the intercept
the fixed time of a run. onnx-int8 has no job run in the bench: its figure is onnx's, less the raw
inference time the measured int8 speed-up saves (the other stages are the same code).

    python -m bench.throughput [bench/results.json] [--out blueprint/throughput.json]

tests/blueprint/test_estimate.py checks that the committed table is what this derives from the
committed results, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results.json"
TABLE = REPO / "blueprint" / "throughput.json"


def record(results: dict[str, Any]) -> dict[str, Any]:
    """The table for blueprint/throughput.json; raises ValueError when a job engine lacks two sizes."""
    cores = int(results["config"]["layout"]["cores"])
    engines: dict[str, Any] = {}
    for engine in results["config"]["engines"]:
        runs = sorted((j["images"], j["wall_s"]) for j in results["jobs"] if j["engine"] == engine)
        if len({n for n, _ in runs}) < 2:
            raise ValueError(f"{engine}: need first runs at two sizes for a slope, got {runs}")
        (n1, w1), (n2, w2) = runs[0], runs[-1]
        slope = (w2 - w1) / (n2 - n1)
        engines[engine] = {
            "vcpu_seconds_per_image": round(slope * cores, 6),
            "fixed_seconds": round(max(w1 - slope * n1, 0.0), 2),
            "derivation": (
                f"bench end-to-end {w1:.1f} s for {n1} images and {w2:.1f} s for {n2} on {cores} vCPUs: "
                f"slope {slope * 1000:.3f} ms/image x {cores} vCPUs"
            ),
        }
    int8 = results.get("int8") or {}
    if "onnx" in engines and int8.get("raw_speedup"):
        speedup = float(int8["raw_speedup"])
        raw = max(r["images_per_s"] for r in results["raw"]["onnx"] if r["procs"] * r["threads"] == cores)
        inference = cores / raw  # vCPU-seconds of raw fp32 inference per image
        onnx = engines["onnx"]
        engines["onnx-int8"] = {
            "vcpu_seconds_per_image": round(onnx["vcpu_seconds_per_image"] - inference * (1 - 1 / speedup), 6),
            "fixed_seconds": onnx["fixed_seconds"],
            "derivation": (
                f"onnx's {onnx['vcpu_seconds_per_image']:.4f} vCPU-s less its raw inference {inference:.4f} "
                f"x (1 - 1/{speedup:.2f}), the measured int8 raw speed-up"
            ),
        }
    machine = results["machine"]
    return {
        "machine": f"{machine['cpu']}, {machine['cores']} vCPUs, {machine['memory_gib']} GiB",
        "measured": results["started"],
        "source": "bench/results.json (python -m bench.run), derived by python -m bench.throughput",
        "vcpu_note": (
            "A vCPU here is taken as equal to an EMR node's vCPU (m5/m6i: Intel, m5a: AMD, all with "
            "AVX-512 or AVX2); not measured on EC2."
        ),
        "engines": engines,
    }


def write(results: dict[str, Any], out: Path = TABLE) -> dict[str, Any]:
    """Derive the table from `results` and write it to `out`; the table."""
    table = record(results)
    out.write_text(json.dumps(table, indent=2) + "\n")
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=TABLE)
    args = p.parse_args(argv)
    table = write(json.loads(args.results.read_text()), args.out)
    print(f"wrote {args.out}: {', '.join(table['engines'])}")


if __name__ == "__main__":
    main()
