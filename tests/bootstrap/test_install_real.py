"""The bootstrap for real, on a node with no package index: python3.11, pip, the AWS CLI and S3 (moto_server).

The onnx-profile wheelhouse is built with blueprint/wheelhouse.py (downloaded once, then cached under
~/.cache/featurizer/wheelhouse), uploaded to a moto_server with the real AWS CLI, and install.sh runs with
`--wheelhouse s3://...` while every package index and HTTPS proxy points at a closed port: the install
can only succeed from the wheelhouse. This machine is x86_64 CPython 3.11 on glibc 2.36, so the nodes'
manylinux wheels install here. A second run is a no-op; the same environment without a wheelhouse fails,
which shows that the index really is unreachable. The tf profile is the same code path with 480 MB of wheels.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from blueprint import wheelhouse
from tests.bootstrap.conftest import REPO, SCRIPT
from tests.offline import no_index_env

AWS_CLI = Path(sys.executable).with_name("aws")
MOTO_SERVER = Path(sys.executable).with_name("moto_server")

PREFIX_ONNX = "artifacts/wheelhouse/onnx"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("python3.11") is None, reason="python3.11 is not installed"),
    pytest.mark.skipif(not AWS_CLI.exists() or not MOTO_SERVER.exists(), reason="needs the dev extra (awscli, moto)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto_server process on 127.0.0.1, stopped afterwards."""
    port = _free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def node_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """A node's environment: the AWS CLI on PATH (pointed at moto), and no way to reach a package index."""
    bin_dir = tmp_path / "node-bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "aws").exists():
        (bin_dir / "aws").symlink_to(AWS_CLI)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TMPDIR")}
    return {
        **keep,
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),  # no ~/.config/pip, ~/.aws or pip cache of this machine
        **no_index_env(),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def real_python311() -> str:
    """The interpreter behind `python3.11` (a pyenv shim needs the real HOME; the node env has another)."""
    out = subprocess.run(["python3.11", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return out.stdout.strip()


def test_bootstrap_installs_from_an_s3_wheelhouse_with_the_index_unreachable(tmp_path: Path, s3_endpoint: str) -> None:
    started = time.monotonic()
    built = wheelhouse.build("onnx", tmp_path / "wheelhouse")
    digest = wheelhouse.manifest_digest(built)
    build_s = time.monotonic() - started

    env = node_env(tmp_path, s3_endpoint)
    uri = f"s3://wheels/{PREFIX_ONNX}/{digest[:16]}"
    for argv in (["s3", "mb", "s3://wheels"], ["s3", "sync", "--only-show-errors", str(built), uri]):
        upload = subprocess.run([str(AWS_CLI), *argv], env=env, capture_output=True, text=True, timeout=300)
        assert upload.returncode == 0, upload.stderr
    upload_s = time.monotonic() - started - build_s

    venv = tmp_path / "opt" / "featurizer" / "venv"
    argv = [
        "bash", str(SCRIPT),
        "--venv", str(venv),
        "--python", real_python311(),
        "--profile", "onnx",
        "--requirements", str(REPO / "bootstrap" / "requirements-onnx.txt"),
        "--wheelhouse", uri,
        "--retry-delay", "1",
    ]  # fmt: skip
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "from the wheelhouse, no package index" in first.stderr
    install_s = time.monotonic() - started - build_s - upload_s

    probe = (
        "import importlib.util, numpy, pandas, pyarrow, PIL, cv2, onnxruntime, matplotlib, numba\n"
        "print(numpy.__version__, pandas.__version__, pyarrow.__version__, PIL.__version__, cv2.__version__,"
        " onnxruntime.__version__, numba.__version__)\n"
        "print(importlib.util.find_spec('tensorflow') is None, importlib.util.find_spec('keras') is None)\n"
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    versions, no_tf = out.stdout.splitlines()
    assert versions.split() == ["1.26.4", "2.3.3", "25.0.1", "13.0.0", "4.11.0", "1.32.0", "0.68.1"]
    assert no_tf == "True True"
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "tensorflow" not in listed

    again = time.monotonic()
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stderr and "fetching wheelhouse" not in second.stderr
    assert time.monotonic() - again < 20

    # Negative control: the same node without --wheelhouse cannot install (the index is really closed).
    control = [*argv[: argv.index("--wheelhouse")], "--retries", "1"]
    control[control.index("--venv") + 1] = str(tmp_path / "control-venv")
    failed = subprocess.run(control, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode == 1
    assert "ERROR: pip install failed" in failed.stderr
    assert "No matching distribution found" in failed.stderr
    print(f"\nwheelhouse build {build_s:.1f}s, upload {upload_s:.1f}s, install {install_s:.1f}s")
