"""Issue 14 §2-3, as a user sees it: `python -m job` in a fresh process, stdout and stderr captured (no TTY).

Every failure is one line on stderr with its exit code, and no Spark banner before it; a run's stderr
holds its progress lines and nothing from Spark, Hadoop, netlib, absl or TensorFlow; stdout holds the
summary; a local output has no `.crc` files. Most runs use the fake ONNX model (tests/job/fakes.py) on
tiny images, so they cost about a JVM start-up; one runs TensorFlow (`--weights random`) in the
driver and in a Python worker, where its start-up lines come from.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.job.fakes import tiny_jpegs, write_noisy_model

pytestmark = pytest.mark.slow

# What a quiet run must not show: the Spark banner, log4j lines, Hadoop's and netlib's start-up
# warnings, absl/TensorFlow's native start-up lines, Python tracebacks.
NOISE = re.compile(
    r"Setting default log level|sc\.setLogLevel|NativeCodeLoader|netlib|absl|InitializeLog|oneDNN|"
    r"port\.cc|cpu_feature_guard|^I0000|\b(WARN|INFO|ERROR)\b|Traceback|Py4J|java\.",
    re.MULTILINE,
)


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh job process: its own empty SPARK_CONF_DIR (no log4j of the user's) and log folder."""
    conf_dir = tmp_path / "spark-conf"
    conf_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONF_DIR", "FEATURIZER"))}
    env.update(
        {
            "SPARK_CONF_DIR": str(conf_dir),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONPATH": str(REPO),
            "FEATURIZER_LOG_DIR": str(tmp_path / "logs"),
        }
    )
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the job must quieten TensorFlow itself
    env.update(extra)
    return env


def run_job(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "job", *args],
        cwd=tmp_path,
        env=job_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def broken_onnx_model(folder: Path) -> Path:
    """An ONNX model with the job's input and output that fails when it runs (a Reshape to 224x224)."""
    from onnx import TensorProto, helper

    images = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 224, 224, 3])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280])
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Slice", ["shape", "one", "three"], ["hw"]),
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "hw"], ["features"]),
    ]
    constants = [
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("three", TensorProto.INT64, [1], [3]),
    ]
    graph = helper.make_graph(nodes, "fails_at_run_time", [images], [features], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# A finished stage's line, or a progress line of the featurize stage (on a pipe, one every 30 s or 10 %).
STAGE = re.compile(r"(list|weights|featurize|account|pca_fit|write) .*· [\dmh.]+s$|featurize [\d,]+/[\d,]+ images · ")


def one_line(done: subprocess.CompletedProcess[str], after_stages: bool = False) -> str:
    """The failure's line: the only one on stderr, or (`after_stages`) the last, after progress lines."""
    lines = done.stderr.splitlines()
    assert lines and done.stdout == "", done.stderr[-3000:]
    before = lines[:-1]
    assert all(STAGE.match(line) for line in before) if after_stages else not before, done.stderr[-3000:]
    return lines[-1]


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("s3 input", 2, "featurizer: error: --input s3://bucket/images: no filesystem for s3:// here: local runs read "
         "local paths or hdfs://; run on EMR with featurizer submit"),
        ("s3a output", 2, "featurizer: error: --output s3a://bucket/out: no filesystem for s3a:// here"),
        ("s3 weights", 2, "featurizer: error: --weights s3://bucket/model.onnx: no filesystem for s3:// here"),
        ("unknown scheme", 2, "featurizer: error: --input nosuchfs://x/images: no filesystem for nosuchfs://"),
        ("hdfs refused", 2, "featurizer: error: --input hdfs://127.0.0.1:9/images: connection refused to "),
        ("no input", 2, "featurizer: error: input not found: "),
        ("unusable images", 1, "featurizer: run failed: only 0 of 2 images could be featurized"),
        ("worker fails", 1, "featurizer: run failed: featurize: the task of input partition 0 failed 1 times (a Python "
                            "worker failed: "),
    ],
)  # fmt: skip
def test_each_failure_is_one_line_with_its_exit_code(tmp_path: Path, case: str, code: int, expected: str) -> None:
    images = tiny_jpegs(tmp_path / "in", 4)
    model = write_noisy_model(tmp_path)
    inputs = {"s3 input": "s3://bucket/images", "unknown scheme": "nosuchfs://x/images"}
    inputs |= {"hdfs refused": "hdfs://127.0.0.1:9/images", "no input": str(tmp_path / "missing")}
    if case == "unusable images":
        bad = tmp_path / "bad" / "class0"
        bad.mkdir(parents=True)
        for name in ("a.jpg", "b.jpg"):
            (bad / name).write_text("not a picture")
        inputs[case] = str(tmp_path / "bad")
    output = "s3a://bucket/out" if case == "s3a output" else str(tmp_path / "out")
    weights = {"s3 weights": "s3://bucket/model.onnx", "worker fails": str(broken_onnx_model(tmp_path))}
    args = ["--input", inputs.get(case, str(images)), "--output", output, "--k", "2", "--master", "local[1]"]
    done = run_job(tmp_path, *args, "--engine", "onnx", "--weights", weights.get(case, str(model)))
    line = one_line(done, after_stages=code == 1)  # a failed run has shown the stages it finished
    assert done.returncode == code, line
    assert line.startswith(expected)
    if code == 1:  # the trace is in the log file the line names
        log = re.search(r"\(trace in (\S+); or rerun with --verbose\)$", line)
        assert log and "Traceback" in Path(log.group(1)).read_text()
    assert not (tmp_path / "out").exists()


def test_imagenet_without_internet_is_a_usage_error(tmp_path: Path) -> None:
    images = tiny_jpegs(tmp_path / "in", 4)
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    offline |= {"https_proxy": offline["HTTPS_PROXY"], "http_proxy": offline["HTTP_PROXY"], "no_proxy": ""}
    keras_home = tmp_path / "keras"  # no cached download
    args = ["--input", str(images), "--output", str(tmp_path / "out"), "--weights", "imagenet", "--quiet"]
    done = run_job(tmp_path, *args, "--k", "2", "--master", "local[1]", KERAS_HOME=str(keras_home), **offline)
    line = one_line(done)
    assert done.returncode == 2, line
    assert line.startswith("featurizer: error: could not download the ImageNet weights (no internet on the driver?)")
    assert "--weights PATH_OR_S3_URI" in line


def test_a_tensorflow_run_shows_progress_and_no_noise(tmp_path: Path) -> None:
    """--weights random: TensorFlow in the driver and in the Python worker; stderr is not a terminal."""
    images = tiny_jpegs(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = ["--input", str(images), "--output", str(out), "--weights", "random", "--k", "2", "--master", "local[1]"]
    done = run_job(tmp_path, *args, FEATURIZER_PROGRESS_INTERVAL="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not NOISE.search(done.stderr), done.stderr
    err = done.stderr.splitlines()
    assert err[0] == "list 4 images · " + err[0].split(" · ")[-1]
    assert any(line.startswith("featurizer: warning: --weights random") for line in err)
    # Periodic lines while the featurize stage runs, then its own line.
    final = next(i for i, line in enumerate(err) if re.fullmatch(r"featurize 4 images · .* img/s · .*s", line))
    live = [line for line in err[:final] if re.match(r"featurize \d/4 images · ", line)]
    assert live, done.stderr
    assert [line.split(" ")[0] for line in err[final:]] == ["featurize", "account", "pca_fit", "write"]
    # stdout holds the results only, and the log the summary names.
    assert "warning" not in done.stdout and "featurize " not in done.stdout
    assert done.stdout.startswith("featurized 4 of 4 images")
    log = re.search(r"^log: (.+)$", done.stdout, re.MULTILINE)
    assert log and Path(log.group(1)).is_file()
    assert not list(out.rglob("*.crc"))
    assert (out / "_SUCCESS").is_file()


def test_quiet_prints_nothing_but_the_summary(tmp_path: Path) -> None:
    images = tiny_jpegs(tmp_path / "in", 4)
    out = tmp_path / "out"
    model = write_noisy_model(tmp_path)
    args = ["--input", str(images), "--output", str(out), "--engine", "onnx", "--weights", str(model), "--quiet"]
    done = run_job(tmp_path, *args, "--k", "2", "--master", "local[1]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    assert done.stdout.startswith("featurized 4 of 4 images")
    assert not list(out.rglob("*.crc")) and (out / "_SUCCESS").is_file()
