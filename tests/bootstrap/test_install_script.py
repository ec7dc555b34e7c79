"""bootstrap/install.sh, really run by bash: idempotence, retries, failures, weights, quoting."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bootstrap.conftest import REPO, SCRIPT, Fakes

WEIGHTS = b"not really an h5 file, but bytes with a known digest"
WEIGHTS_SHA = hashlib.sha256(WEIGHTS).hexdigest()
# Spaces, quotes, $(...) and ; in the S3 path must reach `aws` as one argument and never run.
ODD_URI = "s3://bucket/we ird/$(touch PWNED);'x'/mobilenet_v2_no_top.h5"


def test_bash_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_shellcheck_clean() -> None:
    run = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout


def test_installs_once_then_is_a_no_op(fakes: Fakes) -> None:
    first = fakes.run()
    assert first.returncode == 0, first.stderr
    assert fakes.count("pip_installs") == 1
    assert (fakes.state / "installed_requirements").read_bytes() == (
        REPO / "bootstrap" / "requirements.txt"
    ).read_bytes()
    assert (fakes.venv / ".featurizer-bootstrap").is_file()
    second = fakes.run()
    assert second.returncode == 0, second.stderr
    assert fakes.count("pip_installs") == 1
    assert "up to date" in second.stderr


def test_pip_is_called_hash_checked_and_binary_only(fakes: Fakes) -> None:
    assert fakes.run().returncode == 0
    pip_call = next(line for line in (fakes.state / "calls").read_text().splitlines() if " -m pip " in line)
    for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps", "--no-cache-dir"):
        assert flag in pip_call


def test_changed_requirements_reinstall(fakes: Fakes, tmp_path: Path) -> None:
    req = tmp_path / "req.txt"
    req.write_text("numpy==1.26.4 --hash=sha256:" + "0" * 64 + "\n")
    assert fakes.run("--profile", "onnx", requirements=req).returncode == 0
    req.write_text("numpy==1.26.4 --hash=sha256:" + "1" * 64 + "\n")
    assert fakes.run("--profile", "onnx", requirements=req).returncode == 0
    assert fakes.count("pip_installs") == 2
    # A different profile is a different environment too.
    assert fakes.run("--profile", "tf", requirements=req).returncode == 0
    assert fakes.count("pip_installs") == 3


def test_transient_pip_failures_are_retried(fakes: Fakes) -> None:
    (fakes.state / "pip_failures").write_text("2")
    result = fakes.run("--retries", "3")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying") == 2
    assert fakes.count("pip_installs") == 1


def test_persistent_pip_failure_fails_the_node(fakes: Fakes) -> None:
    (fakes.state / "pip_failures").write_text("9")
    result = fakes.run("--retries", "2")
    assert result.returncode == 1
    assert "giving up after 2 attempts" in result.stderr
    assert "ERROR: pip install failed" in result.stderr
    assert not (fakes.venv / ".featurizer-bootstrap").exists()


def test_failed_import_check_fails_and_leaves_no_marker(fakes: Fakes) -> None:
    (fakes.state / "import_fails").touch()
    result = fakes.run()
    assert result.returncode == 1
    assert "ERROR: import check failed" in result.stderr
    assert not (fakes.venv / ".featurizer-bootstrap").exists()
    # Once the environment is healthy, the next run repairs it (the half-built venv is replaced).
    (fakes.state / "import_fails").unlink()
    assert fakes.run().returncode == 0
    assert fakes.count("pip_installs") == 2


def test_requirements_from_s3_go_through_aws(fakes: Fakes) -> None:
    uri = "s3://bucket/artifacts/bootstrap/0123456789abcdef/requirements-onnx.txt"
    fakes.s3_put(uri, b"pillow==13.0.0 --hash=sha256:" + b"a" * 64 + b"\n")
    (fakes.state / "aws_failures").write_text("1")
    result = fakes.run("--profile", "onnx", requirements=uri)
    assert result.returncode == 0, result.stderr
    assert fakes.count("aws_calls") == 2  # one throttled, one retried
    assert (fakes.state / "installed_requirements").read_bytes().startswith(b"pillow==13.0.0")


def test_weights_are_staged_verified_and_odd_uris_stay_one_argument(fakes: Fakes, tmp_path: Path) -> None:
    fakes.s3_put(ODD_URI, WEIGHTS)
    args = ("--weights-uri", ODD_URI, "--weights-sha256", WEIGHTS_SHA, "--weights-dir", str(fakes.weights_dir))
    result = fakes.run(*args)
    assert result.returncode == 0, result.stderr
    assert (fakes.weights_dir / "mobilenet_v2_no_top.h5").read_bytes() == WEIGHTS
    (call,) = (fakes.state / "aws_calls").read_text().splitlines()
    assert f"<{ODD_URI}>" in call
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    # Staged and verified: a second run downloads nothing.
    assert fakes.run(*args).returncode == 0
    assert fakes.count("aws_calls") == 1


def test_weights_checksum_mismatch_fails_and_keeps_nothing(fakes: Fakes) -> None:
    fakes.s3_put("s3://bucket/w/model.h5", WEIGHTS + b"tampered")
    args = (
        "--weights-uri",
        "s3://bucket/w/model.h5",
        "--weights-sha256",
        WEIGHTS_SHA,
        "--weights-dir",
        str(fakes.weights_dir),
    )
    result = fakes.run(*args)
    assert result.returncode == 1
    assert f"SHA-256 mismatch for s3://bucket/w/model.h5: expected {WEIGHTS_SHA}" in result.stderr
    assert list(fakes.weights_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--profile", "torch"), "unknown --profile 'torch'"),
        (("--weights-uri", "s3://b/w.h5"), "--weights-uri and --weights-sha256 go together"),
        (("--weights-uri", "s3://b/w.h5", "--weights-sha256", "XYZ"), "64 lowercase hex"),
        (("--weights-uri", "s3://b/..", "--weights-sha256", "a" * 64), "weights file name '..'"),
        (("--retries", "0"), "--retries must be a positive integer"),
        (("--python", "python3.99"), "python3.99 not found on PATH"),
        (("--bogus",), "unknown argument: --bogus"),
        (("--venv",), "option --venv needs a value"),
    ],
)
def test_bad_arguments_fail_clearly(fakes: Fakes, args: tuple[str, ...], message: str) -> None:
    result = fakes.run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert fakes.count("pip_installs") == 0


def test_missing_requirements_file_fails(fakes: Fakes, tmp_path: Path) -> None:
    result = fakes.run(requirements=tmp_path / "absent.txt")
    assert result.returncode == 1
    assert "could not fetch requirements" in result.stderr


# --- --wheelhouse: install from a folder of wheels, never from an index ----------------------------------------

WHEELHOUSE = "s3://bucket/artifacts/wheelhouse/0123456789abcdef"


def put_wheelhouse(fakes: Fakes, uri: str = WHEELHOUSE, requirements: Path | None = None, python: str = "3.11") -> None:
    """A wheelhouse as blueprint/wheelhouse.py lays it out (one fake wheel + manifest.json) in the fake S3."""
    req = requirements or REPO / "bootstrap" / "requirements.txt"
    manifest = {
        "files": [{"name": "demo-1.0-py3-none-any.whl", "sha256": "a" * 64, "size": 4}],
        "python_version": python,
        "requirements_sha256": hashlib.sha256(req.read_bytes()).hexdigest(),
    }
    fakes.s3_put(f"{uri}/manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    fakes.s3_put(f"{uri}/demo-1.0-py3-none-any.whl", b"fake")


def pip_call(fakes: Fakes) -> str:
    return next(line for line in (fakes.state / "calls").read_text().splitlines() if " -m pip " in line)


def test_wheelhouse_from_s3_is_synced_and_pip_never_uses_an_index(fakes: Fakes) -> None:
    put_wheelhouse(fakes)
    (fakes.state / "aws_failures").write_text("1")
    result = fakes.run("--wheelhouse", WHEELHOUSE + "/")
    assert result.returncode == 0, result.stderr
    sync_calls = (fakes.state / "aws_calls").read_text().splitlines()
    assert len(sync_calls) == 2  # one throttled, one retried
    assert sync_calls[-1].startswith(f"ARGV <s3> <sync> <--only-show-errors> <{WHEELHOUSE}/> <")
    local = sync_calls[-1].rsplit(" <", 1)[1].rstrip(">")
    call = pip_call(fakes)
    for flag in ("--no-index", f"--find-links {local}", "--require-hashes", "--only-binary=:all:", "--no-deps"):
        assert flag in call
    assert "--retries" not in call
    assert "from the wheelhouse, no package index" in result.stderr
    assert not Path(local).exists()  # the temporary copy is removed with the run's work folder


def test_without_a_wheelhouse_pip_uses_the_index(fakes: Fakes) -> None:
    assert fakes.run().returncode == 0
    call = pip_call(fakes)
    assert "--no-index" not in call and "--find-links" not in call
    assert "--require-hashes" in call


def test_local_wheelhouse_is_used_in_place(fakes: Fakes) -> None:
    put_wheelhouse(fakes)
    local = fakes.state / "s3" / WHEELHOUSE.removeprefix("s3://")
    result = fakes.run("--wheelhouse", str(local))
    assert result.returncode == 0, result.stderr
    assert f"--no-index --find-links {local} " in pip_call(fakes)
    assert fakes.count("aws_calls") == 0


def test_an_up_to_date_environment_fetches_no_wheelhouse(fakes: Fakes) -> None:
    put_wheelhouse(fakes)
    assert fakes.run("--wheelhouse", WHEELHOUSE).returncode == 0
    assert fakes.count("aws_calls") == 1
    second = fakes.run("--wheelhouse", WHEELHOUSE)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stderr
    assert fakes.count("aws_calls") == 1 and fakes.count("pip_installs") == 1


@pytest.mark.parametrize(
    ("arrange", "wheelhouse", "message"),
    [
        (lambda f: None, WHEELHOUSE, f"wheelhouse {WHEELHOUSE} has no manifest.json"),
        (lambda f: None, "/nonexistent/wheelhouse", "could not fetch wheelhouse from /nonexistent/wheelhouse"),
        (lambda f: put_wheelhouse(f, requirements=REPO / "bootstrap" / "requirements-onnx.txt"), WHEELHOUSE,
         "was built for other requirements"),
        (lambda f: put_wheelhouse(f, python="3.9"), WHEELHOUSE,
         "holds wheels for Python 3.9, but python3.11 is 3.11.99"),
        (lambda f: None, "s3://bucket-only", "--wheelhouse must be an s3://bucket/prefix"),
    ],
)  # fmt: skip
def test_a_wrong_wheelhouse_fails_before_touching_the_environment(
    fakes: Fakes, arrange, wheelhouse: str, message: str
) -> None:
    arrange(fakes)
    result = fakes.run("--wheelhouse", wheelhouse)
    assert result.returncode == 1
    assert message in result.stderr
    assert fakes.count("pip_installs") == 0
    assert not fakes.venv.exists()


@pytest.mark.parametrize("profile", ["tf", "onnx"])
def test_import_check_covers_opencv(fakes: Fakes, profile: str) -> None:
    assert fakes.run("--profile", profile).returncode == 0
    # The fake python logs `python -c CODE MODULE...`; CODE ends with import_module(name).
    calls = (fakes.state / "calls").read_text()
    modules = calls.split("importlib.import_module(name)", 1)[1].splitlines()[0].split()
    assert "cv2" in modules and "numpy" in modules and "PIL" in modules
    assert ("tensorflow" in modules) == (profile == "tf") and ("onnxruntime" in modules) == (profile == "onnx")
