"""`featurizer run` and `featurizer demo` hand every argument to the job unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import job.__main__
import job.demo

from .conftest import invoke


def test_run_reaches_the_jobs_own_validation() -> None:
    result = invoke("run", "--input", "/tmp/x", "--output", "/tmp/x")
    assert result.exit_code == 2
    assert "--output must differ from --input" in result.stderr


def test_run_help_is_the_jobs_help() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "usage: featurizer run" in result.stdout
    assert "--batch-size" in result.stdout


@pytest.mark.parametrize(("module", "command"), [(job.__main__, "run"), (job.demo, "demo")])
def test_arguments_and_exit_code_pass_through_unchanged(
    monkeypatch: pytest.MonkeyPatch, module: object, command: str
) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(module, "main", fake_main)
    args = ["--out", "d ir", "-x", "--k=3", "--", "--weights", "é/ü", "--help"]
    result = invoke(command, *args)
    assert seen == [args]
    assert result.exit_code == 7


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
