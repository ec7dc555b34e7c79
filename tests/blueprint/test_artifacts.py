"""Content-addressed keys: the CDK stack and the launcher must compute the same ones."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from blueprint import artifacts


def test_bootstrap_files_share_one_digest_prefix() -> None:
    files = artifacts.bootstrap_files()
    digest = artifacts.bootstrap_digest()
    assert [f.path.name for f in files] == ["install.sh", "requirements.txt", "requirements-onnx.txt"]
    assert [f.key for f in files] == [f"artifacts/bootstrap/{digest}/{f.path.name}" for f in files]
    assert all(f.path.is_file() for f in files)
    assert artifacts.bootstrap_script_key(digest) == files[0].key
    assert artifacts.requirements_key(digest, "onnx") == files[2].key


def test_digest_changes_with_any_file_and_only_with_content(tmp_path: Path) -> None:
    copy = tmp_path / "bootstrap"
    shutil.copytree(artifacts.BOOTSTRAP_DIR, copy)
    same = artifacts.bootstrap_digest(copy)
    assert same == artifacts.bootstrap_digest()
    (copy / "unrelated.txt").write_text("not shipped")
    assert artifacts.bootstrap_digest(copy) == same
    with (copy / "requirements-onnx.txt").open("a") as f:
        f.write("# changed\n")
    assert artifacts.bootstrap_digest(copy) != same


def test_job_keys_use_the_launcher_digest() -> None:
    digest = hashlib.sha256(b"zip" + b"entry").hexdigest()[:16]
    assert artifacts.job_keys(digest) == (
        f"artifacts/job/{digest}/job.zip",
        f"artifacts/job/{digest}/entrypoint.py",
    )


@pytest.mark.parametrize("digest", ["", "ABCDEF0123456789", "0123", "0123456789abcdef0"])
def test_malformed_digests_are_rejected(digest: str) -> None:
    with pytest.raises(ValueError, match="16 lowercase hex"):
        artifacts.job_keys(digest)


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown bootstrap profile"):
        artifacts.requirements_key("0" * 16, "torch")
