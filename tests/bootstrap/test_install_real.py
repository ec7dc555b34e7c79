"""The bootstrap for real: python3.11 + pip from the package index, then a second run as a no-op.

Installs the lighter onnx profile (~0.5 GB, ~50 s here) into a temporary prefix; the tf profile is the
same code path with a 3 GB download.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.bootstrap.conftest import REPO, SCRIPT


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("python3.11") is None, reason="python3.11 is not installed")
def test_real_install_then_no_op(tmp_path: Path) -> None:
    venv = tmp_path / "opt" / "featurizer" / "venv"
    argv = [
        "bash", str(SCRIPT),
        "--venv", str(venv),
        "--profile", "onnx",
        "--requirements", str(REPO / "bootstrap" / "requirements-onnx.txt"),
        "--retry-delay", "5",
    ]  # fmt: skip
    first = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    versions = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import numpy, pandas, pyarrow, PIL, onnxruntime; "
         "print(numpy.__version__, pandas.__version__, pyarrow.__version__, PIL.__version__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert versions.stdout.split() == ["1.26.4", "2.3.3", "25.0.1", "13.0.0"]
    started = time.monotonic()
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stderr
    assert time.monotonic() - started < 20
