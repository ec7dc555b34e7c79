"""Executor-side helpers of the featurize stage that need no Spark."""

from __future__ import annotations

import importlib
import sys
import zipfile
from zipimport import zipimporter

from job.featurize import forget_zip_subpackage_finders


def test_zip_subpackage_finders_are_forgotten_and_imports_still_work(tmp_path, monkeypatch) -> None:
    """The per-task cost PySpark workers pay on Python < 3.12 (job.featurize): only archive roots stay cached."""
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
    assert forget_zip_subpackage_finders() >= 2
    assert zip_finders() == {str(archive)}
    importlib.invalidate_caches()
    assert importlib.import_module("zpkg.sub.two").VALUE == 2  # a finder is rebuilt when needed
