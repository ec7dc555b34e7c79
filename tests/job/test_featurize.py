"""Executor-side helpers of the featurize stage that need no Spark."""

from __future__ import annotations

import importlib
import sys
import zipfile
from zipimport import zipimporter

from job.featurize import forget_zip_finders


def test_zip_finders_are_forgotten_and_imports_still_work(tmp_path, monkeypatch) -> None:
    """The per-task cost PySpark workers pay on Python < 3.12 (job.featurize): no zip finder stays cached."""
    archive = tmp_path / "pkgs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zpkg/__init__.py", "")
        z.writestr("zpkg/sub/__init__.py", "")
        z.writestr("zpkg/sub/one.py", "VALUE = 1")
        z.writestr("zpkg/sub/two.py", "VALUE = 2")
    monkeypatch.syspath_prepend(str(archive))
    for name in [m for m in sys.modules if m.startswith("zpkg")]:
        monkeypatch.delitem(sys.modules, name)
    assert importlib.import_module("zpkg.sub.one").VALUE == 1

    def zip_finders() -> set[str]:
        return {p for p, f in sys.path_importer_cache.items() if isinstance(f, zipimporter) and str(archive) in p}

    assert len(zip_finders()) == 3  # the archive, zpkg/ and zpkg/sub/
    assert forget_zip_finders() >= 3
    assert zip_finders() == set()
    reads = []
    monkeypatch.setattr(zipfile_reader(), "_read_directory", counting(zipfile_reader()._read_directory, reads))
    importlib.invalidate_caches()
    assert reads == []  # nothing left for the per-task invalidation to re-read
    assert importlib.import_module("zpkg.sub.two").VALUE == 2  # a finder is rebuilt when needed
    assert reads == []  # ... from zipimport's directory cache, without reading the archive again
    assert zip_finders()  # the finder the import needed, built again


def zipfile_reader():
    """The module whose _read_directory reads a zip archive's directory (zipimport, frozen)."""
    import zipimport

    return zipimport


def counting(read, calls: list):
    def wrapped(path):
        calls.append(path)
        return read(path)

    return wrapped
