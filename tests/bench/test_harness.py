"""Smoke test of the benchmark harness on a handful of images (structure and counts, no timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.dataset import make_image_set, source_images
from bench.procs import TreeSampler
from bench.run import main
from tests.conftest import fruit_images


def test_image_set_repeats_the_sources_under_distinct_paths(tmp_path: Path) -> None:
    fruit_images()  # the vendored images, which bench.dataset falls back to without ../shared
    sources = source_images()
    n = len(sources) + 7
    root = make_image_set(tmp_path / "set", n, sources)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == n
    assert {f.parent.name for f in files} == {p.parent.name for p in sources}
    assert not (root.resolve().is_relative_to(Path(__file__).resolve().parents[2]))  # never inside the repo
    repeated = root / sources[3].parent.name / f"r001_{sources[3].name}"
    assert repeated.read_bytes() == sources[3].read_bytes()


def test_tree_sampler_sees_the_process_memory() -> None:
    code = "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    with TreeSampler(proc.pid, interval=0.1) as sampler:
        proc.wait(timeout=60)
    assert sampler.peaks.samples >= 3
    assert 300 <= sampler.peaks.driver_python_mib < 600
    assert sampler.peaks.jvm_mib == 0 and sampler.peaks.workers_max_count == 0


def test_tree_sampler_stop_keeps_the_peaks_and_ends_sampling() -> None:
    with TreeSampler(os.getpid(), interval=0.01) as sampler:
        time.sleep(0.2)
        sampler.stop()
        taken = sampler.peaks.samples
        time.sleep(0.1)
        assert taken >= 3 and sampler.peaks.samples == taken
        assert sampler.peaks.driver_python_mib > 0


@pytest.mark.slow
def test_harness_smoke_on_a_handful_of_images(tmp_path: Path) -> None:
    fruit_images()
    args = ["--n", "6", "--scale", "2", "--engines", "onnx", "--seed-n", "0", "--peers", "none"]  # peers: test_peers
    args += ["--raw-seconds", "1", "--warm-repeats", "2", "--decode-rounds", "1"]
    results = main([*args, "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["config"] == results["config"]
    assert [(j["engine"], j["images"]) for j in on_disk["jobs"]] == [("onnx", 6), ("onnx", 12)]
    for job in on_disk["jobs"]:
        assert job["counts"]["model_processed"] == job["images"] == job["counts"]["featurized"]
        assert job["featurize_images_per_s"] > 0 and job["wall_s"] > job["timings_s"]["featurize"]
        assert job["memory_mib"]["jvm_mib"] > 0 and job["memory_mib"]["workers_max_count"] >= 1
    warm = on_disk["jobs"][0]["warm"]
    assert warm["repeats"] == 2 and [c["model_processed"] for c in warm["all_counts"]] == [6, 6]
    # each warm repeat sits between two raw measurements; the steady ratio is the median pair's
    pairs = warm["pairs"]
    assert len(pairs) == 2 and pairs[0]["raw_after"] == pairs[1]["raw_before"]
    for pair in pairs:
        assert pair["ratio"] == pytest.approx(
            pair["featurize_images_per_s"] / max(pair["raw_before"], pair["raw_after"])
        )
    assert on_disk["ratios"]["onnx"]["featurize_vs_raw"] == min(p["ratio"] for p in pairs)  # median of 2: lower
    layout = on_disk["config"]["layout"]
    shapes = {(r["procs"], r["threads"]) for r in on_disk["raw"]["onnx"]}
    assert (layout["concurrent_tasks"], layout["threads_per_task"]) in shapes
    assert all(r["images_per_s"] > 0 for r in on_disk["raw"]["onnx"])
    assert set(on_disk["ratios"]["onnx"]) == {
        "end_to_end_vs_raw",
        "end_to_end_vs_raw_4n",
        "featurize_vs_raw",
        "featurize_vs_raw_cold",
        "featurize_vs_raw_cold_4n",
        "worker_startup_s",
        "scaling_4n_wall",
        "scaling_4n_in_job",
    }
    assert [r["when"] for r in on_disk["raw"]["onnx"]][-1] == "after the jobs"
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Raw model throughput" in report and "## Job runs" in report and "## Targets" in report
    assert "## Steady state against raw, paired" in report
    assert report.count("| onnx | ") == 3 + 2 + 2 + 2  # rows: raw table, job runs, whole run, pairs
    assert "model processed == image count in every job run: yes" in report
    assert "seed notebook" not in report  # skipped with --seed-n 0
    # The whole run: each stage's share of the end-to-end time, the raw engine's time, and a chart.
    assert "## The whole run: where the end-to-end time goes" in report
    assert "- onnx: end to end / raw at N=12" in report
    for job in on_disk["jobs"]:
        shares = job["stage_shares"]
        assert set(shares) >= {"list", "weights", "featurize", "account", "pca_fit", "write", "outside stages"}
        assert sum(shares.values()) == pytest.approx(1.0)
        assert shares["featurize"] == pytest.approx(job["timings_s"]["featurize"] / job["wall_s"])
        # The bench's own conversion filled the job's model cache (in its work folder): every run hits it.
        assert job["onnx_model"]["from_cache"] is True and job["onnx_model"]["conversion_s"] is None
    assert on_disk["onnx_conversion"]["from_cache"] is False and on_disk["onnx_conversion"]["conversion_s"] > 0
    assert not Path(on_disk["onnx_conversion"]["cache_file"]).exists()  # the work folder is gone
    ratio = on_disk["ratios"]["onnx"]["end_to_end_vs_raw_4n"]
    raw = max(r["images_per_s"] for r in on_disk["raw"]["onnx"])
    raw = max([raw] + [v for p in pairs for v in (p["raw_before"], p["raw_after"])])
    assert ratio == pytest.approx(12 / raw / on_disk["jobs"][1]["wall_s"])
    assert (tmp_path / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Decode + exact resize against ONNX inference (bench/decode.py), the compiled resize in use.
    decode = on_disk["decode"]
    assert decode["exact_resize"].startswith("numba ") and decode["rounds"] == 1
    assert on_disk["resize_kernels"]["status"] == decode["exact_resize"]  # compiled into the jobs' cache first
    # The jobs' JVMs mapped this machine's class archive (made by setup, or here if missing).
    assert on_disk["jvm_archive"]["used"] is True, on_disk["jvm_archive"]
    for job in on_disk["jobs"]:
        assert job["jvm_class_archive"]["mapped"] is True, job["jvm_class_archive"]
    assert "JVM class archive: used by every job run" in report
    assert "## Decode + resize against ONNX inference" in report
    assert "- decode + exact resize / ONNX inference, per image on one thread: " in report
    assert "FEATURIZER_CACHE_DIR" not in os.environ or os.environ["FEATURIZER_CACHE_DIR"] != str(
        Path(on_disk["onnx_conversion"]["cache_file"]).parents[1]
    )
