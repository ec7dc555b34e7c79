"""Build the job as a deterministic `--py-files` zip plus the separate spark-submit entry point.

Deterministic (sorted entries, fixed timestamps and permissions, fixed compression) so the
same sources give the same bytes and the same digest, which names the S3 keys: a deploy of
unchanged code uploads nothing, and a step always runs exactly the code it was built from.
Standard library only: the CDK app may call `build_package` at synth time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from blueprint.errors import PackageError

PACKAGE_NAME = "job"
ENTRY_NAME = "entrypoint.py"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest timestamp a zip can hold
_SKIP_DIRS = {"__pycache__", "tests", "test"}


@dataclass(frozen=True)
class Package:
    """A built package: the zip, the entry point next to it, and their content digest."""

    zip_path: Path
    entry_path: Path
    digest: str


def job_source_dir() -> Path:
    """Where the `job` package lives, found without importing it (no pyspark/TensorFlow needed)."""
    spec = importlib.util.find_spec(PACKAGE_NAME)
    if spec is None or not spec.submodule_search_locations:
        raise PackageError("the `job` package is not importable; run from the repository checkout")
    return Path(next(iter(spec.submodule_search_locations)))


def zip_bytes(source: Path) -> bytes:
    """The zip of `source`'s .py files under `job/`, byte-identical for identical sources."""
    files = sorted(
        path for path in source.rglob("*.py") if not _SKIP_DIRS.intersection(path.relative_to(source).parts[:-1])
    )
    if not (source / "__init__.py").is_file() or not (source / "__main__.py").is_file():
        raise PackageError(f"{source} is not a runnable package (needs __init__.py and __main__.py)")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path in files:
            name = f"{PACKAGE_NAME}/{path.relative_to(source).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, whatever the build host is
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return out.getvalue()


def build_package(out_dir: Path, source: Path | None = None) -> Package:
    """Write `job-<digest>.zip` and `entrypoint-<digest>.py` into `out_dir`."""
    source = source or job_source_dir()
    data = zip_bytes(source)
    if not (source / ENTRY_NAME).is_file():
        raise PackageError(f"{source / ENTRY_NAME} is missing: spark-submit needs it next to the zip")
    entry = (source / ENTRY_NAME).read_bytes()
    digest = hashlib.sha256(data + entry).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{PACKAGE_NAME}-{digest}.zip"
    entry_path = out_dir / f"entrypoint-{digest}.py"
    _write_if_changed(zip_path, data)
    _write_if_changed(entry_path, entry)
    return Package(zip_path=zip_path, entry_path=entry_path, digest=digest)


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a half-written artifact never has the final name."""
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    shutil.move(tmp, path)
