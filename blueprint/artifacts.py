"""Layout of the project bucket and the content-addressed keys of what is shipped to it.

The CDK stack uploads the bootstrap files and the launcher's ``deploy`` uploads them again when they
change; both compute the keys here so they always agree. Pure Python (no aws_cdk import): the launcher
uses it without CDK installed.

Bucket layout::

    raw/                                     input images (any sub-folders; labels are folder names)
    results/                                 job outputs, one prefix per run
    artifacts/job/<digest16>/job.zip         --py-files zip of the job package
    artifacts/job/<digest16>/entrypoint.py   spark-submit entry file
    artifacts/bootstrap/<digest16>/          install.sh + requirements files, versioned together
    artifacts/wheelhouse/<profile>/<digest16>/  the nodes' wheels + manifest.json (offline bootstrap)
    artifacts/weights/                       model weights staged onto the nodes by the bootstrap
    cache/models/                            converted/quantized ONNX models by digest (job --model-cache):
                                             the nodes read and write it, so a run converts once per cluster fleet

A digest is the first 16 hex digits of a SHA-256, so a changed file gets a new key and a running cluster
keeps reading the version it started with.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The bootstrap files travel as package data of the `bootstrap` package (pyproject), so this path is
# right in a checkout and in a non-editable install alike; found without importing anything.
BOOTSTRAP_DIR = Path(str(importlib.util.find_spec("bootstrap").origin)).parent  # type: ignore[union-attr]

RAW_PREFIX = "raw/"
RESULTS_PREFIX = "results/"
ARTIFACTS_PREFIX = "artifacts/"
JOB_PREFIX = f"{ARTIFACTS_PREFIX}job/"
BOOTSTRAP_PREFIX = f"{ARTIFACTS_PREFIX}bootstrap/"
WHEELHOUSE_PREFIX = f"{ARTIFACTS_PREFIX}wheelhouse/"
MODEL_CACHE_PREFIX = "cache/models/"

BOOTSTRAP_SCRIPT = "install.sh"
# Requirements file per bootstrap profile (see bootstrap/install.sh --profile).
REQUIREMENTS_BY_PROFILE = {"tf": "requirements.txt", "onnx": "requirements-onnx.txt"}
PROFILES = tuple(REQUIREMENTS_BY_PROFILE)
BOOTSTRAP_FILES = (BOOTSTRAP_SCRIPT, *REQUIREMENTS_BY_PROFILE.values())


@dataclass(frozen=True)
class Artifact:
    """A local file and the bucket key it is uploaded to."""

    path: Path
    key: str


def bootstrap_digest(root: Path = BOOTSTRAP_DIR) -> str:
    """Digest over the names and bytes of all bootstrap files: one changed file moves them all."""
    sha = hashlib.sha256()
    for name in BOOTSTRAP_FILES:
        data = (root / name).read_bytes()
        sha.update(name.encode())
        sha.update(b"\0")
        sha.update(len(data).to_bytes(8, "big"))
        sha.update(data)
    return sha.hexdigest()[:16]


def bootstrap_prefix(digest: str) -> str:
    """``artifacts/bootstrap/<digest16>/``."""
    _check_digest(digest)
    return f"{BOOTSTRAP_PREFIX}{digest}/"


def bootstrap_files(root: Path = BOOTSTRAP_DIR) -> list[Artifact]:
    """The files to ship for the bootstrap action, with their content-addressed keys."""
    prefix = bootstrap_prefix(bootstrap_digest(root))
    return [Artifact(root / name, prefix + name) for name in BOOTSTRAP_FILES]


def bootstrap_script_key(digest: str) -> str:
    """Key of the bootstrap action script."""
    return bootstrap_prefix(digest) + BOOTSTRAP_SCRIPT


def requirements_key(digest: str, profile: str) -> str:
    """Key of the requirements file the bootstrap installs for ``profile`` (tf or onnx)."""
    try:
        name = REQUIREMENTS_BY_PROFILE[profile]
    except KeyError:
        known = sorted(REQUIREMENTS_BY_PROFILE)
        raise ValueError(f"unknown bootstrap profile {profile!r}; expected one of {known}") from None
    return bootstrap_prefix(digest) + name


def wheelhouse_prefix(profile: str, digest: str) -> str:
    """``artifacts/wheelhouse/<profile>/<digest16>/``: the digest is the wheelhouse manifest's."""
    if profile not in REQUIREMENTS_BY_PROFILE:
        raise ValueError(f"unknown bootstrap profile {profile!r}; expected one of {sorted(REQUIREMENTS_BY_PROFILE)}")
    _check_digest(digest)
    return f"{WHEELHOUSE_PREFIX}{profile}/{digest}/"


def job_keys(digest: str) -> tuple[str, str]:
    """Keys of the job zip and its entry file for a package digest (blueprint.package computes it)."""
    _check_digest(digest)
    prefix = f"{JOB_PREFIX}{digest}/"
    return prefix + "job.zip", prefix + "entrypoint.py"


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def _check_digest(digest: str) -> None:
    if len(digest) != 16 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"expected 16 lowercase hex digits, got {digest!r}")
