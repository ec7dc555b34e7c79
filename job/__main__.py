"""Command-line edge: argv -> JobConfig -> SparkSession -> pipeline.run -> exit code.

Exit codes: 0 done, 1 the run failed (OUTPUT untouched), 2 bad arguments or input location.
"""

from __future__ import annotations

import sys
import traceback

from job.config import UsageError, from_argv


def summary(metadata: dict) -> str:
    counts, pca = metadata["counts"], metadata["pca"]
    return (
        f"featurized {counts['featurized']} of {counts['listed']} images "
        f"({counts['rejected']} rejected, model processed {counts['model_processed']}); "
        f"PCA k={pca['k']} explains {pca['explained_variance_at_k']:.4f} of the variance\n"
        f"output: {metadata['output']} (features/, rejected/, metadata.json, explained_variance.png)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = from_argv(argv)
    except UsageError as exc:
        print(f"featurizer: error: {exc}", file=sys.stderr, flush=True)
        return 2
    from job.model import WeightsUnavailable
    from job.pipeline import JobFailed, run
    from job.session import start_spark

    spark = start_spark(cfg)
    try:
        metadata = run(spark, cfg)
    except UsageError as exc:
        print(f"featurizer: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except (JobFailed, WeightsUnavailable) as exc:
        print(f"featurizer: run failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # unexpected (e.g. storage errors): full trace for the logs, one line last
        traceback.print_exc()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"featurizer: run failed: {type(exc).__name__}: {first_line[:500]}", file=sys.stderr, flush=True)
        return 1
    finally:
        spark.stop()
    print(summary(metadata), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
