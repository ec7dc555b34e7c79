"""Command-line edge: argv -> JobConfig -> SparkSession -> pipeline.run -> exit code.

Exit codes (job.errors maps every failure to one, here and nowhere else):
0 done; 1 the run failed (OUTPUT untouched); 2 bad arguments, a location the job cannot use
(no filesystem for its scheme, not found, access denied, no such bucket, host unreachable), or
`--weights imagenet` without internet; 130 interrupted.

Every failure is one line on stderr. Its trace goes to the run's log file (`featurizer run`,
`python -m job`), to stderr above that line under spark-submit (where stderr is the cluster's log of
the driver), and to stderr as well with --verbose. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from job import errors, quiet
from job.config import from_argv
from job.errors import JobError, UsageError


def summary(metadata: dict, log: Path | None = None) -> str:
    if metadata.get("dry_run"):
        from job.dryrun import text as dry_run_text

        return dry_run_text(metadata) + (f"\nlog: {log}" if log is not None else "")
    counts, pca = metadata["counts"], metadata["pca"]
    text = (
        f"featurized {counts['featurized']} of {counts['listed']} images "
        f"({counts['rejected']} rejected, model processed {counts['model_processed']}); "
        f"PCA k={pca['k']} explains {pca['explained_variance_at_k']:.4f} of the variance\n"
        f"output: {metadata['output']} (features/, rejected/, metadata.json, explained_variance.png)"
    )
    return text + (f"\nlog: {log}" if log is not None else "")


def report(error: JobError, trace: str, log: Path | None, verbose: bool) -> int:
    """Print the failure (one line, last) and put its trace where the user can find it; return the exit code."""
    under_spark_submit = log is None
    if log is not None:
        quiet.append_to_log(trace, str(log))
    show_trace = verbose or (under_spark_submit and error.exit_code != errors.EXIT_USAGE)
    if show_trace and trace:
        print(trace.rstrip(), file=sys.stderr, flush=True)
    line = errors.one_line(error)
    if log is not None and not verbose and error.exit_code != errors.EXIT_USAGE:
        line += f" (trace in {log}; or rerun with --verbose)"
    print(line, file=sys.stderr, flush=True)
    return error.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = from_argv(argv)
    except UsageError as exc:
        print(errors.one_line(exc), file=sys.stderr, flush=True)
        return errors.EXIT_USAGE
    from job.progress import Progress
    from job.session import launched_by_spark_submit, start_spark

    log = None if launched_by_spark_submit() else quiet.start_log()
    spark = None
    try:
        spark = start_spark(cfg, log=log)
        from job.pipeline import run

        metadata = run(spark, cfg, progress=Progress(enabled=not cfg.quiet))
    except KeyboardInterrupt:
        _stop(spark)
        print("featurizer: interrupted", file=sys.stderr, flush=True)
        return errors.EXIT_INTERRUPTED
    except Exception as exc:
        # Read the Java causes and trace now: they come through Py4J, gone once the session stops.
        error, trace = errors.as_job_error(exc), errors.trace_text(exc)
        _stop(spark)
        return report(error, trace, log, cfg.verbose)
    _stop(spark)
    print(summary(metadata, log), flush=True)
    return errors.EXIT_OK


def _stop(spark) -> None:
    if spark is None:
        return
    try:
        spark.stop()
    except Exception as exc:  # the run's own outcome is what counts
        quiet.append_to_log(f"stopping Spark failed: {errors.trace_text(exc)}")


if __name__ == "__main__":
    sys.exit(main())
