"""The README's first command: `featurizer demo` works offline, with no sample data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_offline(tmp_path) -> None:
    featurizer = Path(sys.executable).with_name("featurizer")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [str(featurizer), "demo", "--out", str(tmp_path / "demo"), "--per-class", "3", "--master", "local[2]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = tmp_path / "demo" / "results"
    assert "featurized 27 of 27 images" in proc.stdout
    assert str(results / "explained_variance.png") in proc.stdout
    assert (results / "_SUCCESS").exists()
    metadata = json.loads((results / "metadata.json").read_text())
    assert metadata["weights"]["random"] is True
    assert metadata["counts"] == {"listed": 27, "featurized": 27, "rejected": 0, "model_processed": 27}
    labels = {p.name for p in (tmp_path / "demo" / "images").iterdir()}
    assert len(labels) == 9 and "red circle" in labels
