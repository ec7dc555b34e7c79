"""`featurizer run` and `featurizer demo` hand every argument to the job unchanged."""

from __future__ import annotations

import pytest

import job.__main__
import job.demo

from .conftest import invoke


def test_run_reaches_the_jobs_own_validation() -> None:
    result = invoke("run", "--input", "/tmp/x", "--output", "/tmp/x")
    assert result.exit_code == 2
    assert "--output must differ from --input" in result.stderr


def test_run_help_is_the_jobs_help() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "usage: featurizer run" in result.stdout
    assert "--batch-size" in result.stdout


@pytest.mark.parametrize(("module", "command"), [(job.__main__, "run"), (job.demo, "demo")])
def test_arguments_and_exit_code_pass_through_unchanged(
    monkeypatch: pytest.MonkeyPatch, module: object, command: str
) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(module, "main", fake_main)
    args = ["--out", "d ir", "-x", "--k=3", "--", "--weights", "é/ü", "--help"]
    result = invoke(command, *args)
    assert seen == [args]
    assert result.exit_code == 7
