"""The bootstrap requirements: fully hash-pinned, consistent with the top-level pins and the job extra."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from tests.bootstrap.conftest import REPO

BOOTSTRAP = REPO / "bootstrap"
LINE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)==(?P<version>[^ ]+) --hash=sha256:[0-9a-f]{64}$")


def pins(path: Path) -> dict[str, str]:
    """name -> version of a lock file, failing on any line that is not `name==version --hash=...`."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = LINE.match(line)
        assert match, f"{path.name}: not hash-pinned: {line!r}"
        out[match["name"]] = match["version"]
    return out


def top_level(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.in", "requirements.txt"), ("requirements-onnx.in", "requirements-onnx.txt")]
)
def test_lock_contains_the_top_level_pins(source: str, lock: str) -> None:
    locked = pins(BOOTSTRAP / lock)
    for name, version in top_level(BOOTSTRAP / source).items():
        assert locked.get(name) == version, name
    assert "pyspark" not in locked  # EMR's Spark provides pyspark; a pip copy could disagree with its JVM side


def test_profiles_differ_only_by_engine() -> None:
    tf, onnx = pins(BOOTSTRAP / "requirements.txt"), pins(BOOTSTRAP / "requirements-onnx.txt")
    assert "tensorflow-cpu" in tf and "tensorflow-cpu" not in onnx and "tensorflow" not in onnx
    assert "onnxruntime" in onnx
    for shared in ("numpy", "pandas", "pyarrow", "pillow", "opencv-python-headless", "matplotlib"):
        assert tf[shared] == onnx[shared]


def test_cluster_pins_match_the_job_extra() -> None:
    """The venv on the nodes runs the same versions the tests run locally (pyproject's `job` extra)."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["job"]
    wanted = dict(re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(.+)", spec).groups() for spec in extra)
    tf = pins(BOOTSTRAP / "requirements.txt")
    for name, version in wanted.items():
        key = name.lower().replace("_", "-")
        if key == "pyspark":
            continue
        if version.endswith(".*"):
            assert tf[key].startswith(version[:-1]), key
        else:
            assert tf[key] == version, key
