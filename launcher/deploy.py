"""Upload the job package and the bootstrap files to content-addressed S3 keys.

Keys carry a digest of the content (`blueprint.artifacts` defines the layout, shared with the CDK
stack), so an unchanged file is found in place and skipped, and a running cluster keeps reading
the version it started with. Each object also records the SHA-256 of its bytes in its metadata:
an object under our key with other bytes (hand-edited, or written by an older tool) is replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from blueprint import artifacts
from blueprint.artifacts import Artifact
from blueprint.package import Package
from launcher.aws import Aws
from launcher.errors import ConfigError

DEFAULT_PREFIX = artifacts.ARTIFACTS_PREFIX
SHA256_METADATA = "sha256"

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""(name, total bytes) -> callback receiving byte increments; used for large uploads only."""


@dataclass(frozen=True)
class Deployed:
    """What happened to one artifact: uploaded, or already in S3 with the same bytes."""

    uri: str
    size: int
    uploaded: bool


def normalize_prefix(prefix: str) -> str:
    """`artifacts`, `/artifacts/` and `artifacts/` all mean the folder `artifacts/`; `` is the root."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _rebase(key: str, prefix: str) -> str:
    """Move a key from the default `artifacts/` folder under `prefix`, keeping the layout below it."""
    return normalize_prefix(prefix) + key.removeprefix(artifacts.ARTIFACTS_PREFIX)


def package_artifacts(package: Package, prefix: str = DEFAULT_PREFIX) -> list[Artifact]:
    """The zip and the entry point, at `<prefix>job/<digest>/{job.zip,entrypoint.py}`."""
    zip_key, entry_key = artifacts.job_keys(package.digest)
    return [
        Artifact(package.zip_path, _rebase(zip_key, prefix)),
        Artifact(package.entry_path, _rebase(entry_key, prefix)),
    ]


def bootstrap_artifacts(prefix: str = DEFAULT_PREFIX, root: Path | None = None) -> list[Artifact]:
    """install.sh and the requirements files, at `<prefix>bootstrap/<digest>/`."""
    root = root or artifacts.BOOTSTRAP_DIR
    missing = [name for name in artifacts.BOOTSTRAP_FILES if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"bootstrap files missing in {root}: {', '.join(missing)}")
    return [Artifact(f.path, _rebase(f.key, prefix)) for f in artifacts.bootstrap_files(root)]


def wheelhouse_artifacts(profile: str, out_dir: Path, prefix: str = DEFAULT_PREFIX) -> list[Artifact]:
    """The nodes' wheels for ``profile`` plus their manifest, at ``<prefix>wheelhouse/<profile>/<digest>/``.

    Built from the same lock that ships as the bootstrap's requirements file (install.sh compares the two
    byte for byte), downloaded once per lock into a local cache; needs PyPI on this machine, not on the nodes.
    """
    from blueprint import wheelhouse

    try:
        folder = wheelhouse.build(profile, out_dir / "wheelhouse" / profile)
        digest = wheelhouse.manifest_digest(folder)[:16]
    except wheelhouse.WheelhouseError as err:
        raise ConfigError(f"wheelhouse for the {profile} profile: {err}") from None
    key_prefix = _rebase(artifacts.wheelhouse_prefix(profile, digest), prefix)
    return [Artifact(path, key_prefix + path.name) for path in sorted(folder.iterdir()) if path.is_file()]


def wheelhouse_uri(bucket: str, files: Sequence[Artifact]) -> str:
    """The S3 prefix install.sh --wheelhouse syncs: the folder of the deployed manifest."""
    manifest = next(a.key for a in files if a.key.endswith("/manifest.json"))
    return artifacts.s3_uri(bucket, manifest.rsplit("/", 1)[0])


def find_script_key(files: Sequence[Artifact]) -> str:
    """The key of install.sh among deployed bootstrap artifacts."""
    return next(a.key for a in files if a.key.endswith("/" + artifacts.BOOTSTRAP_SCRIPT))


def find_requirements_key(files: Sequence[Artifact], profile: str) -> str:
    """The key of the requirements file the bootstrap installs for `profile` (tf or onnx)."""
    name = artifacts.REQUIREMENTS_BY_PROFILE[profile]
    return next(a.key for a in files if a.key.endswith("/" + name))


def is_deployed(aws: Aws, bucket: str, items: Sequence[Artifact]) -> bool:
    """True if every artifact is in S3 with the recorded SHA-256 of its local bytes."""
    aws.check_bucket(bucket)
    return all(_same(aws, bucket, item) for item in items)


def deploy(
    aws: Aws,
    bucket: str,
    items: Sequence[Artifact],
    *,
    progress: ProgressFactory | None = None,
    large: int = 8 * 1024 * 1024,
    transfer_config: TransferConfig | None = None,
) -> list[Deployed]:
    """Upload what is missing or different; report progress for files of at least `large` bytes."""
    aws.check_bucket(bucket)
    results = []
    for item in items:
        size = item.path.stat().st_size
        uri = artifacts.s3_uri(bucket, item.key)
        if _same(aws, bucket, item):
            results.append(Deployed(uri=uri, size=size, uploaded=False))
            continue
        on_bytes = progress(item.path.name, size) if progress and size >= large else None
        aws.upload_file(
            item.path,
            bucket,
            item.key,
            extra_args={"Metadata": {SHA256_METADATA: _sha256(item.path)}},
            on_bytes=on_bytes,
            transfer_config=transfer_config,
        )
        results.append(Deployed(uri=uri, size=size, uploaded=True))
    return results


def _same(aws: Aws, bucket: str, item: Artifact) -> bool:
    head = aws.head_object(bucket, item.key)
    if head is None:
        return False
    return bool(head.get("Metadata", {}).get(SHA256_METADATA) == _sha256(item.path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
