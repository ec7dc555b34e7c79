"""Issue 14 §2-3 without Spark: the error hierarchy, Java failures in words, progress lines, the log file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from job import errors, quiet
from job.__main__ import report
from job.progress import Progress, count_line, duration


class FakeThrowable:
    """What Py4J gives for a Java exception: getClass().getName(), getMessage(), getCause()."""

    def __init__(self, name: str, message: str, cause: FakeThrowable | None = None) -> None:
        self.name, self.message, self.cause = name, message, cause

    def getClass(self):  # Java's names
        return type("Class", (), {"getName": lambda _self: self.name})()

    def getMessage(self):
        return self.message

    def getCause(self):
        return self.cause

    def equals(self, other) -> bool:
        return other is self


class FakePy4JError(Exception):
    def __init__(self, throwable: FakeThrowable) -> None:
        super().__init__("An error occurred while calling o43.exists.")
        self.java_exception = throwable


def java(*chain: tuple[str, str]) -> FakePy4JError:
    cause = None
    for name, message in reversed(chain):
        cause = FakeThrowable(name, message, cause)
    assert cause is not None
    return FakePy4JError(cause)


def test_one_hierarchy_and_its_exit_codes() -> None:
    import job.config
    import job.model
    import job.pipeline
    import job.write

    assert job.config.UsageError is errors.UsageError  # still importable where other modules look
    assert job.pipeline.JobFailed is errors.JobFailed
    assert job.write.CommitFailed is errors.CommitFailed and issubclass(errors.CommitFailed, OSError)
    assert job.model.WeightsUnavailable is errors.WeightsUnavailable
    assert issubclass(errors.PcaUndefined, ValueError)
    usage = (errors.UsageError, errors.LocationError, errors.WeightsUnavailable)
    failed = (errors.JobFailed, errors.StorageError, errors.CommitFailed, errors.PcaUndefined)
    assert {cls("x").exit_code for cls in usage} == {2}  # imagenet offline is fixed with a flag: 2
    assert {cls("x").exit_code for cls in failed} == {1}


SPARK, PYTHON = "org.apache.spark.SparkException", "org.apache.spark.api.python.PythonException"
JAVA_CASES = [
    (("java.net.ConnectException", "Call From vm/127.0.0.1 to localhost:9 failed on connection exception"),),
    (("org.apache.hadoop.fs.UnsupportedFileSystemException", 'No FileSystem for scheme "s3"'),),
    (("java.nio.file.AccessDeniedException", "s3://b/x: getFileStatus on s3://b/x: Access Denied (Status Code: 403)"),),
    (("java.io.IOException", "wrapped"), ("com.amazonaws.AmazonS3Exception", "The specified bucket does not exist")),
    (("java.io.FileNotFoundException", "File file:/nope does not exist"),),
    (("java.net.UnknownHostException", "nosuchhost: Name or service not known"),),
    # A line number 403 in a stack trace is not an access problem; a Python worker's error wins.
    (
        (SPARK, "Job aborted\n\tat FileFormatWriter.scala:403"),
        (PYTHON, "Traceback (most recent call last):\nOSError: bad\n"),
    ),
    (("java.lang.IllegalStateException", "Cannot call methods on a stopped SparkContext.\nmore"),),
]
JAVA_WORDS = [
    ("connection refused to localhost:9", True),
    ("no filesystem for s3://", True),
    ("access denied", True),
    ("no such bucket", True),
    ("not found", True),
    ("unknown host nosuchhost", True),
    ("a Python worker failed: OSError: bad", False),
    ("IllegalStateException: Cannot call methods on a stopped SparkContext.", False),
]


@pytest.mark.parametrize(("chain", "expected"), list(zip(JAVA_CASES, JAVA_WORDS, strict=True)))
def test_java_failures_in_words(chain: tuple[tuple[str, str], ...], expected: tuple[str, bool]) -> None:
    words, location = expected
    assert errors.describe_java(errors.java_causes(java(*chain))) == (words, location)
    error = errors.at_location(java(*chain), "--input", "hdfs://h:9/x")
    assert isinstance(error, errors.LocationError if location else errors.StorageError)
    assert str(error) == f"--input hdfs://h:9/x: {words}"


def test_any_exception_becomes_one_line() -> None:
    assert errors.describe_java(errors.java_causes(ValueError("x"))) is None
    error = errors.as_job_error(RuntimeError("first line\nsecond line"))
    assert isinstance(error, errors.JobFailed) and str(error) == "RuntimeError: first line"
    assert errors.one_line(errors.UsageError("bad\n  thing")) == "featurizer: error: bad thing"
    assert errors.one_line(errors.JobFailed("x")) == "featurizer: run failed: x"


def test_report_puts_the_trace_in_the_log_and_one_line_on_stderr(tmp_path: Path, capsys) -> None:
    log = tmp_path / "run.log"
    log.touch()
    assert report(errors.StorageError("boom"), "Traceback ...\nboom\n", log, verbose=False) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"featurizer: run failed: boom (trace in {log}; or rerun with --verbose)"]
    assert "Traceback ..." in log.read_text()
    assert report(errors.LocationError("--input x: not found"), "trace", log, verbose=False) == 2
    assert capsys.readouterr().err.splitlines() == ["featurizer: error: --input x: not found"]
    assert report(errors.JobFailed("boom"), "Traceback ...", log, verbose=True) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["Traceback ...", "featurizer: run failed: boom"]
    # Under spark-submit (no log file of ours) stderr is the cluster's log: the trace goes above the line.
    assert report(errors.JobFailed("boom"), "Traceback ...", None, verbose=False) == 1
    assert capsys.readouterr().err.splitlines() == ["Traceback ...", "featurizer: run failed: boom"]


def test_progress_lines() -> None:
    assert [duration(s) for s in (0.42, 59.94, 102, 7500)] == ["0.4s", "59.9s", "1m42s", "2h05m"]
    assert count_line("featurize", 4096, 22688, 4096 / 183) == "featurize 4,096/22,688 images · 183 img/s · ETA 1m42s"
    assert count_line("featurize", 0, 6, 3.0) == "featurize 0/6 images · 3.0s"
    assert count_line("featurize", 1, 3, 10.0) == "featurize 1/3 images · 0.1 img/s · ETA 20.0s"
    out = io.StringIO()
    Progress(stream=out).stage("list", 0.42, "6 images")
    Progress(stream=out, enabled=False).stage("list", 0.42, "6 images")
    assert out.getvalue() == "list 6 images · 0.4s\n"


def test_progress_prints_periodic_lines_without_a_terminal() -> None:
    import time

    out = io.StringIO()
    counts = iter(range(0, 10_000, 5))
    progress = Progress(stream=out, tty=False, interval=0.2)
    with progress.counting("featurize", 10_000, lambda: next(counts)):
        time.sleep(1.5)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("featurize ") and "/10,000 images" in line for line in lines)
    assert "\r" not in out.getvalue()
    out = io.StringIO()
    with Progress(stream=out, tty=False, interval=0.2, enabled=False).counting("featurize", 10, lambda: 1):
        time.sleep(0.5)
    assert out.getvalue() == ""


def test_progress_on_a_terminal_redraws_one_line() -> None:
    import time

    out = io.StringIO()
    progress = Progress(stream=out, tty=True)
    with progress.counting("featurize", 100, lambda: 40):
        time.sleep(1.2)
    progress.stage("featurize", 2.0, "100 images")
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 2 and "featurize 40/100 images" in text
    assert text.endswith("\r\x1b[Kfeaturize 100 images · 2.0s\n")


def test_native_stderr_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    code = (
        "import os, sys\n"
        "from job import quiet\n"
        f"with quiet.native_stderr({str(log)!r}):\n"
        "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stderr == "after\n"
    assert "oneDNN" in log.read_text()


def test_the_jvm_log4j_config_is_ours_only_when_nobody_chose_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    monkeypatch.delenv("JAVA_TOOL_OPTIONS", raising=False)
    log = tmp_path / "run.log"
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    options = quiet.driver_java_options({"spark.driver.extraJavaOptions": "-Dx=1"}, str(conf_dir), log, verbose=False)
    assert options is not None and options.startswith("-Dx=1 -Dlog4j2.configurationFile=file:")
    config = log.with_suffix(".log4j2.properties").read_text()
    assert f"appender.file.fileName = {log}" in config and "appenderRef.console" not in config
    quiet.driver_java_options({}, str(conf_dir), log, verbose=True)
    assert "rootLogger.appenderRef.console.ref = console" in log.with_suffix(".log4j2.properties").read_text()
    assert (
        quiet.driver_java_options(
            {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=x"}, str(conf_dir), log, False
        )
        is None
    )
    (conf_dir / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert quiet.driver_java_options({}, str(conf_dir), log, verbose=False) is None
