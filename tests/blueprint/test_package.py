"""The package is deterministic, complete and content-addressed."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from blueprint.errors import PackageError
from blueprint.package import build_package, job_source_dir
from tests.launcher.conftest import invoke

REPO_JOB = Path(__file__).resolve().parents[2] / "job"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the real job package we can modify."""
    copy = tmp_path / "src" / "job"
    shutil.copytree(REPO_JOB, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_same_sources_give_identical_bytes_whatever_the_mtimes(source: Path, tmp_path: Path) -> None:
    first = build_package(tmp_path / "a", source)
    for path in source.rglob("*.py"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (source / "__pycache__").mkdir(exist_ok=True)
    (source / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    second = build_package(tmp_path / "b", source)
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()
    assert first.digest == second.digest
    assert first.zip_path.name == f"job-{first.digest}.zip"


def test_digest_covers_zip_then_entry_point(source: Path, tmp_path: Path) -> None:
    built = build_package(tmp_path / "out", source)
    expected = hashlib.sha256(built.zip_path.read_bytes() + built.entry_path.read_bytes()).hexdigest()[:16]
    assert built.digest == expected
    assert built.entry_path.read_bytes() == (source / "entrypoint.py").read_bytes()


def test_any_change_to_code_or_entry_point_changes_the_digest(source: Path, tmp_path: Path) -> None:
    base = build_package(tmp_path / "0", source).digest
    (source / "config.py").write_text((source / "config.py").read_text() + "\n# changed\n")
    code_changed = build_package(tmp_path / "1", source).digest
    (source / "entrypoint.py").write_text((source / "entrypoint.py").read_text() + "\n# changed\n")
    entry_changed = build_package(tmp_path / "2", source).digest
    assert len({base, code_changed, entry_changed}) == 3


def test_zip_holds_the_job_sources_only_sorted_with_fixed_metadata(source: Path, tmp_path: Path) -> None:
    (source / "tests").mkdir()
    (source / "tests" / "test_x.py").write_text("assert False\n")
    (source / "notes.txt").write_text("not code")
    built = build_package(tmp_path / "out", source)
    with zipfile.ZipFile(built.zip_path) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        expected = sorted(f"job/{p.relative_to(source).as_posix()}" for p in source.glob("*.py"))
        assert names == expected
        assert {"job/__init__.py", "job/__main__.py", "job/entrypoint.py"} <= set(names)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert archive.read("job/config.py") == (source / "config.py").read_bytes()


def test_not_a_runnable_package_is_a_clear_error(source: Path, tmp_path: Path) -> None:
    (source / "__main__.py").unlink()
    with pytest.raises(PackageError, match=r"__main__\.py"):
        build_package(tmp_path / "out", source)


def test_the_real_job_is_found_without_importing_it() -> None:
    assert job_source_dir().resolve() == REPO_JOB.resolve()


def test_package_command_prints_digest_and_paths(tmp_path: Path) -> None:
    result = invoke("package", "--out", str(tmp_path / "dist"))
    assert result.exit_code == 0, result.stderr
    fields = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert Path(fields["zip"]).is_file() and Path(fields["entry"]).is_file()
    assert fields["digest"] in fields["zip"]
    again = invoke("package", "--out", str(tmp_path / "dist2"))
    assert dict(line.split(maxsplit=1) for line in again.stdout.splitlines())["digest"] == fields["digest"]
