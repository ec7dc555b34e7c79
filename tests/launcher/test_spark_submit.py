"""What `submit` ships to EMR runs: the same spark-submit arguments, local paths for S3, local Spark.

The editable install would let any Python import the repository's `job/`, which would hide a
file missing from the zip; a `sitecustomize` on PYTHONPATH removes that finder in the driver and
the workers, so `job` can only come from the zip, as on a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blueprint.package import build_package
from blueprint.run_spec import RunSpec
from launcher import submit as submitting

REPO = Path(__file__).resolve().parents[2]
FRUITS = REPO / "tests" / "data" / "fruits360" / "Test"  # vendored: see its ATTRIBUTION.txt
PYSPARK_BIN = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
    / "pyspark"
    / "bin"
)
HIDE_EDITABLE = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')"
    " and 'editable' not in getattr(f, '__name__', '')]\n"
)


def _sample(tmp_path: Path, classes: int = 4, per_class: int = 10) -> Path:
    """~40 real images as symlinks (nothing copied), label folders kept."""
    if not FRUITS.is_dir():
        pytest.skip(f"sample images not found at {FRUITS.resolve()}")
    root = tmp_path / "input"
    for folder in sorted(p for p in FRUITS.iterdir() if p.is_dir())[:classes]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            (root / folder.name / image.name).symlink_to(image.resolve())
    return root


@pytest.mark.slow
def test_the_shipped_zip_runs_under_local_spark_submit(tmp_path: Path) -> None:
    if not (PYSPARK_BIN / "spark-submit").is_file():
        pytest.skip(f"no spark-submit at {PYSPARK_BIN}")
    images = _sample(tmp_path)
    built = build_package(tmp_path / "dist")
    s3_in, s3_out = "s3://proj-bucket/raw/fruits", "s3://proj-bucket/results/run"
    zip_uri, entry_uri = "s3://proj-bucket/artifacts/job/d/job.zip", "s3://proj-bucket/artifacts/job/d/entrypoint.py"
    args = submitting.step_args(RunSpec(input=s3_in, output=s3_out, weights="random", k=5, batch_size=16))
    step = submitting.spark_step(name="t", zip_uri=zip_uri, entry_uri=entry_uri, args=args)
    output = tmp_path / "output"
    local = {zip_uri: str(built.zip_path), entry_uri: str(built.entry_path), s3_in: str(images), s3_out: str(output)}
    argv = [local.get(a, a) for a in step["HadoopJarStep"]["Args"]]
    assert argv[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    argv = [str(PYSPARK_BIN / "spark-submit"), "--master", "local[2]", "--deploy-mode", "client", *argv[3:]]

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_EDITABLE)
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(hide),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    probe = subprocess.run([sys.executable, "-c", "import job"], cwd=run_dir, env=env, capture_output=True, check=False)
    assert probe.returncode != 0, "the repository's job/ is still importable: the test would prove nothing"

    done = subprocess.run(argv, cwd=run_dir, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (output / "_SUCCESS").is_file()
    assert (output / "features").is_dir() and (output / "rejected").is_dir()
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["spark"]["master"] == "local[2]"  # spark-submit's, not one the job chose
    assert metadata["spark"]["settings"]["spark.yarn.maxAppAttempts"] == "1"  # the step's own --conf
    counts = metadata["counts"]
    assert counts["listed"] == 40
    assert counts["featurized"] == counts["listed"] - counts["rejected"]
    assert counts["featurized"] > 0
