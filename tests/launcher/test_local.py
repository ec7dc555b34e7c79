"""`featurizer run` and `featurizer demo`: click commands whose options come from the job's one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

import job.__main__
import job.demo
from launcher.cli import main

from .conftest import invoke


def test_run_reaches_the_jobs_own_validation() -> None:
    result = invoke("run", "--input", "/tmp/x", "--output", "/tmp/x")
    assert result.exit_code == 2
    assert "--output must differ from --input" in result.stderr


def test_one_cli_style_with_defaults_and_help_everywhere() -> None:
    """run and demo are click commands like the rest; options come from the job's one table."""
    from job.config import OPTIONS, build_parser

    for argv in (["-h"], ["run", "-h"], ["demo", "-h"], ["submit", "-h"], ["cluster", "up", "-h"]):
        result = invoke(*argv)
        assert result.exit_code == 0, (argv, result.output)
        assert result.stdout.startswith("Usage: featurizer"), argv
    run_help = " ".join(invoke("run", "--help").stdout.split())
    for opt in OPTIONS:
        assert opt.flag in run_help
        if opt.default is not None and not opt.is_flag:
            assert f"[default: {opt.default}]" in run_help, opt.flag
    assert ".onnx" in run_help  # --weights names the exported-model form
    assert "demo Featurize synthetic images offline: the embedded default run." in " ".join(
        invoke("--help").stdout.split()
    )
    job_flags = {a.option_strings[0] for a in build_parser()._actions if a.option_strings and a.dest != "help"}
    assert job_flags == {opt.flag for opt in OPTIONS}  # spark-submit's argparse is the same table
    cluster_flags = {p.opts[0] for p in main.commands["submit"].params if isinstance(p, click.Option)}
    assert {
        "--weights",
        "--engine",
        "--variance",
        "--k",
        "--batch-size",
        "--glob",
        "--threads",
        "--resize",
        "--reuse",
    } <= cluster_flags


def test_run_passes_the_given_options_to_the_job_and_its_exit_code_back(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(job.__main__, "main", fake_main)
    result = invoke("run", "--input", "d ir", "--output", "é/ü", "--k", "3", "--quiet")
    assert seen == [["--input", "d ir", "--output", "é/ü", "--k", "3", "--quiet"]]  # defaults left to the job
    assert result.exit_code == 7


def test_run_leaves_combinations_to_the_jobs_own_parser() -> None:
    both = invoke("run", "--input", "a", "--output", "b", "--k", "3", "--variance", "0.9")
    assert both.exit_code == 2 and "not allowed with argument" in both.stderr  # one line, before any JVM


def test_demo_takes_output_like_run_and_passes_its_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[Path, dict[str, object]]] = []

    def fake_demo(output: Path, **kwargs: object) -> int:
        seen.append((output, kwargs))
        return 3

    monkeypatch.setattr(job.demo, "run_demo", fake_demo)
    result = invoke("demo", "--output", str(tmp_path), "--per-class", "2")
    assert result.exit_code == 3
    assert seen == [(tmp_path, {"per_class": 2, "weights": "random", "master": "local[*]"})]
    assert invoke("demo", "--out", str(tmp_path)).exit_code == 3  # the old spelling still works


@pytest.mark.slow
def test_featurizer_run_reports_a_local_s3_location_in_one_line(tmp_path) -> None:
    """Issue 14: no Spark banner, no Py4J stack: one line and exit code 2."""
    featurizer = Path(sys.executable).with_name("featurizer")
    (tmp_path / "spark-conf").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONF_DIR"))}
    env |= {"PYSPARK_PYTHON": sys.executable, "SPARK_CONF_DIR": str(tmp_path / "spark-conf")}
    env |= {"FEATURIZER_LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run(
        [str(featurizer), "run", "--input", "s3://bucket/images", "--output", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "featurizer: error: --input s3://bucket/images: no filesystem for s3:// here: local runs read local paths "
        "or hdfs://; run on EMR with featurizer submit"
    ]
