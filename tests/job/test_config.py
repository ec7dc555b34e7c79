"""Argument validation happens before Spark starts: one clear line, exit code 2."""

from __future__ import annotations

import pytest

from job.__main__ import main
from job.config import DEFAULT_GLOB, UsageError, from_argv


def test_defaults() -> None:
    cfg = from_argv(["--input", "in", "--output", "out"])
    assert (cfg.weights, cfg.variance, cfg.k, cfg.batch_size, cfg.glob) == ("imagenet", 0.99, None, 64, DEFAULT_GLOB)
    assert cfg.engine == "tf"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variance", "0"], "--variance must be in (0, 1]"),
        (["--variance", "1.5"], "--variance must be in (0, 1]"),
        (["--variance", "-0.1"], "--variance must be in (0, 1]"),
        (["--k", "0"], "--k must be between 1 and 1280"),
        (["--k", "1281"], "--k must be between 1 and 1280"),
        (["--k", "5", "--variance", "0.9"], "not allowed with argument"),
        (["--batch-size", "0"], "--batch-size must be between"),
        (["--engine", "torch"], "invalid choice"),
        (["--k", "three"], "invalid int value"),
    ],
)
def test_bad_arguments_raise(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_argv(["--input", "in", "--output", "out", *argv])


def test_output_inside_input_is_refused() -> None:
    with pytest.raises(UsageError, match="inside --input"):
        from_argv(["--input", "/data/in", "--output", "/data/in/out"])
    with pytest.raises(UsageError, match="differ"):
        from_argv(["--input", "s3://b/x/", "--output", "s3://b/x"])


def test_missing_required_argument() -> None:
    with pytest.raises(UsageError, match="--output"):
        from_argv(["--input", "in"])


@pytest.mark.parametrize("argv", [["--input", "in", "--output", "out", "--variance", "2"], ["--input", "x"]])
def test_main_exits_2_with_one_line(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featurizer: error: ")


def test_bad_arguments_never_start_spark(monkeypatch) -> None:
    import job.session

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark must not start for a usage error")

    monkeypatch.setattr(job.session, "start_spark", no_spark)
    assert main(["--input", "in", "--output", "out", "--k", "0"]) == 2
    assert main(["--input", "in", "--output", "in/out"]) == 2


def test_quiet_and_verbose_are_flags_that_exclude_each_other() -> None:
    cfg = from_argv(["--input", "in", "--output", "out"])
    assert (cfg.quiet, cfg.verbose) == (False, False)
    assert from_argv(["--input", "in", "--output", "out", "--quiet"]).quiet
    assert from_argv(["--input", "in", "--output", "out", "--verbose"]).verbose
    with pytest.raises(UsageError, match="not allowed with argument"):
        from_argv(["--input", "in", "--output", "out", "--quiet", "--verbose"])
