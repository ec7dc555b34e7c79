"""The job as one straight line: list -> read -> featurize (once) -> reduce -> write -> commit.

`run` receives a session and a config and never builds either, so tests drive it directly.
"""

from __future__ import annotations

import io
import platform
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import asdict
from importlib import metadata as importlib_metadata

from pyspark import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from job import dryrun, errors, quiet, recovery, reduce, reuse, session, write
from job import model as model_lib
from job.config import ONNX_ENGINES, JobConfig
from job.errors import JobFailed, PcaUndefined, UsageError
from job.featurize import PASSED_THROUGH, EngineSpec, featurize
from job.progress import Progress, rate_text, stage_input_records
from job.read import (
    Listing,
    check_filesystems,
    list_inputs,
    read_file,
    read_images,
    skipped,
    spread_paths,
    stage_listing,
    unlisted,
)


class Stage:
    """What a finished stage reports on its progress line (set inside the `with`)."""

    detail = ""


class Timer:
    """Wall time per stage, for metadata.json; each finished stage is reported to `report`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        report: Callable[[str, float, str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.report = report
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        start = self.clock()
        info = Stage()
        ok = False
        try:
            yield info
            ok = True
        finally:
            self.seconds[name] = round(self.clock() - start, 3)
            if ok and self.report is not None:
                self.report(name, self.seconds[name], info.detail)


@contextmanager
def at_location(what: str, uri: str) -> Iterator[None]:
    """Java/Hadoop failures while using `uri` become one line naming it (errors.at_location)."""
    try:
        yield
    except errors.JobError:
        raise
    except Exception as exc:
        error = errors.at_location(exc, what, uri)
        if error is None:
            raise
        raise error from exc


def resolve_weights(spark: SparkSession, cfg: JobConfig) -> model_lib.WeightsBlob:
    """On the driver: the weights file's bytes, whatever their source."""
    if cfg.weights == "random":
        print(
            "featurizer: warning: --weights random: seeded random MobileNetV2 weights. The features are "
            "deterministic but carry no ImageNet knowledge; use them for tests and demos only.",
            file=sys.stderr,
            flush=True,
        )
        quiet.import_tensorflow()
        return model_lib.random_blob()
    if cfg.weights == "imagenet":
        quiet.import_tensorflow()
        notes = io.StringIO()  # Keras prints "Downloading data from ..." and a progress bar to stdout
        try:
            with redirect_stdout(notes):
                return model_lib.imagenet_blob()
        finally:
            quiet.append_to_log(notes.getvalue())
    with at_location("--weights", cfg.weights):
        data = read_file(spark, cfg.weights)
    if data is None:
        raise UsageError(f"weights file not found: {cfg.weights}")
    return model_lib.WeightsBlob.of(data, model_lib.file_suffix(cfg.weights), cfg.weights)


def engine_spec(
    spark: SparkSession, cfg: JobConfig, weights: model_lib.WeightsBlob, input_files: Collection[str] = ()
) -> EngineSpec:
    """`input_files`: the run's listing, where onnx-int8 takes its calibration images (job/quantize.py)."""
    data, suffix = weights.data, weights.suffix
    onnx_model = quantization = None
    if cfg.engine in ONNX_ENGINES and suffix != ".onnx":  # a Keras file: converted once, cached (a miss needs TF)
        from job import model_cache
        from job.onnx_engine import cached_keras_weights_to_onnx

        levels = model_cache.stores(spark, cfg.shared_model_cache)
        data, onnx_model = cached_keras_weights_to_onnx(data, suffix, weights.sha256, quiet.import_tensorflow, levels)
        suffix = ".onnx"
    elif suffix == ".onnx":  # an exported model: check it once here rather than fail in every task
        from job.onnx_engine import IncompatibleModel, validate

        try:
            validate(data)
        except IncompatibleModel as exc:
            raise UsageError(f"--weights {weights.source}: {exc}") from None
    if cfg.engine == "onnx-int8":
        from job.quantize import for_run

        with at_location("--calibration", cfg.calibration or cfg.input):
            data, quantization = for_run(spark, cfg, input_files, data)
    threads = cfg.threads or int(spark.conf.get("spark.task.cpus", "1"))
    blob = spark.sparkContext.broadcast(data)
    return EngineSpec(
        engine=cfg.engine,
        blob=blob,
        suffix=suffix,
        digest=weights.sha256,
        threads=threads,
        resize=cfg.resize,
        onnx_model=onnx_model,
        quantization=quantization,
    )


def run_identity(cfg: JobConfig, weights: model_lib.WeightsBlob, spec: EngineSpec) -> dict:
    """What metadata.json records of the model that makes the features: --reuse compares it (job/reuse.py)."""
    return {
        "model": model_lib.MODEL_NAME,
        "engine": cfg.engine,
        "weights": {"sha256": weights.sha256},
        "config": {"resize": cfg.resize},
        "quantization": {"cache_key": (spec.quantization or {}).get("cache_key")},
    }


def featurize_count(spark: SparkSession, group: str, processed: Accumulator, whole_listing: bool) -> Callable[[], int]:
    """The featurize progress count. With --reuse the scan also reads the reused images' files (then
    dropped by the join), so its input records would run ahead: count images the model finished instead."""
    if whole_listing:
        return lambda: stage_input_records(spark, group)
    return lambda: int(processed.value)


def dry_run_reuse(spark: SparkSession, cfg: JobConfig) -> dryrun.MoreCounts | None:
    """--dry-run --reuse: what the run would reuse and featurize instead (job/reuse.py), for the dry run's report."""
    if not cfg.reuse:
        return None

    def counts(listing: Listing) -> dict[str, int]:
        identity = reuse.dry_run_identity(spark, model_lib.MODEL_NAME, cfg.engine, cfg.resize, cfg.weights)
        with at_location("--reuse", cfg.reuse):
            return reuse.dry_run_counts(spark, cfg.reuse, identity, listing.statuses)

    return counts


def account(listing: Listing, returned: DataFrame) -> DataFrame:
    """Rejected rows for listed files that the scan did not return (zero bytes, or removed/changed meanwhile).

    Two anti-joins on the executors; only a count (and, on failure, one example path) reaches the driver.
    """
    extra = unlisted(listing, returned)
    n_extra = extra.count()
    if n_extra:
        example = extra.agg(F.min("path")).first()[0]
        raise JobFailed(f"input changed during the run: {n_extra} new file(s), e.g. {example}")
    return skipped(listing, returned)


def calibration_pool(listing: Listing, cfg: JobConfig) -> list[str]:
    """onnx-int8's candidate calibration paths, spread over the listing on the executors (else none)."""
    return spread_paths(listing, cfg.calibration_images) if cfg.engine == "onnx-int8" else []


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in (
        "pyspark",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "numpy",
        "pandas",
        "pyarrow",
        "pillow",
        "opencv-python-headless",
        "onnxruntime",
    ):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    if "pyspark" not in versions:  # on a cluster pyspark comes from Spark's pyspark.zip, with no package metadata
        import pyspark

        versions["pyspark"] = pyspark.__version__
    return versions


def spark_metadata(spark: SparkSession) -> dict:
    """Where and how this run's Spark ran: metadata.json's "spark" section (featurize added later)."""
    sc = spark.sparkContext
    return {
        "master": sc.master,
        "deploy_mode": sc.getConf().get("spark.submit.deployMode", "client"),
        "app_id": sc.applicationId,
        "launched_by_spark_submit": session.launched_by_spark_submit(),
        "default_parallelism": sc.defaultParallelism,
        "settings": session.settings(spark),
        "jvm_class_archive": session.class_archive(spark),  # local runs after setup (job/jvm_archive.py)
    }


def run(spark: SparkSession, cfg: JobConfig, run_id: str | None = None, progress: Progress | None = None) -> dict:
    """Featurize cfg.input into cfg.output; return the metadata written with it.

    `progress` (default: silent) gets a line per finished stage and the live featurize count.
    """
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    progress = progress or Progress(enabled=False)
    timer = Timer(report=progress.stage)
    # Before anything is listed or written: each location's scheme has a filesystem here.
    locations = {"--input": cfg.input, "--output": cfg.output, "--weights": cfg.weights, "--reuse": cfg.reuse or ""}
    locations["--model-cache"] = cfg.shared_model_cache or ""
    check_filesystems(spark, locations)
    jobs_before = recovery.last_job_id(spark)
    with timer.stage("list") as stage:
        with at_location("--input", cfg.input):
            listing = list_inputs(spark, cfg.input, cfg.glob)
        with at_location("--output", cfg.output):
            write.check_output_replaceable(spark, cfg.output)
        stage.detail = f"{len(listing):,} images"
    if cfg.k is not None and cfg.k > len(listing):
        raise UsageError(f"--k {cfg.k} is larger than the number of input images ({len(listing)})")
    if cfg.dry_run:  # no model, no lock, nothing written
        jobs = recovery.last_job_id(spark) - jobs_before
        return dryrun.plan(spark, cfg, listing, timer, jobs, dry_run_reuse(spark, cfg))
    staging = write.staging_uri(cfg.output, run_id)
    # One run per OUTPUT: a live run's lock fails this one here (exit 1), before anything is staged.
    lock = write.OutputLock(spark, cfg.output, run_id, write.lock_ttl(spark))
    with at_location("--output", cfg.output):
        notes = lock.acquire()
    try:
        with at_location("--output", cfg.output):
            notes += write.remove_dead_runs(spark, cfg.output, run_id)
        for note in notes:
            warn(note)
        write.delete(spark, staging)
        try:
            result = _run_staged(spark, cfg, listing, staging, timer, run_id, progress, lock)
        except BaseException:
            with suppress(Exception):  # the failure that got here is the one to report
                write.delete(spark, staging)
            raise
    finally:
        lock.release()
    return result


def warn(text: str) -> None:
    print(f"featurizer: warning: {text}", file=sys.stderr, flush=True)


def name_failed_partition(images: DataFrame, exc: BaseException) -> JobFailed | None:
    """A featurize task that failed on every attempt, as one line naming its input partition and files."""
    failed = recovery.failed_partition(exc)
    if failed is None:
        return None
    try:
        paths, n = recovery.partition_files(images, failed.partition)
    except Exception:  # the line still names the partition
        paths, n = [], 0
    times = f"failed {failed.attempts} times" if failed.attempts else "failed on every executor allowed to run it"
    described = errors.describe_java(errors.java_causes(exc))  # a Python worker's own error says the most
    cause = described[0] if described and described[0].startswith("a Python worker failed") else failed.reason
    reason = f" ({cause})" if cause else ""
    files = f"; its {n} image{'s' if n != 1 else ''}: {', '.join(paths)}{', ...' if n > len(paths) else ''}"
    return JobFailed(f"featurize: the task of input partition {failed.partition} {times}{reason}{files if n else ''}")


def _run_staged(
    spark: SparkSession,
    cfg: JobConfig,
    listing: Listing,
    staging: str,
    timer: Timer,
    run_id: str,
    progress: Progress,
    lock: write.OutputLock | None = None,
) -> dict:
    first_job = recovery.last_job_id(spark)  # failed task attempts are counted over this run's jobs
    # The listing's rows go to the staging folder chunk by chunk and are read back from there: the
    # driver JVM then holds one chunk of rows at a time, not all of them for the whole run. Part of
    # the "list" stage's time.
    start = timer.clock()
    with at_location("--output", cfg.output):
        listing = stage_listing(listing, f"{staging}/_work/listing")
    timer.seconds["list"] = round(timer.seconds.get("list", 0.0) + timer.clock() - start, 3)
    with timer.stage("weights") as stage:
        weights = resolve_weights(spark, cfg)
        spec = engine_spec(spark, cfg, weights, calibration_pool(listing, cfg))
        stage.detail = f"{weights.source} ({cfg.engine})"
    plan = None
    if cfg.reuse:  # read from the previous output before anything is committed (it may be --output)
        with timer.stage("reuse") as stage, at_location("--reuse", cfg.reuse):
            listed = listing.statuses  # path, size, modification_time (ms), from the listing itself
            plan = reuse.prepare(spark, cfg.reuse, run_identity(cfg, weights, spec), listed, f"{staging}/_work/reused")
            stage.detail = ", ".join(f"{n:,} {name}" for name, n in plan.counts.items())
    to_featurize = len(listing) if plan is None else plan.to_featurize
    processed = spark.sparkContext.accumulator(0)
    work = f"{staging}/_work/staged"
    spark_record = spark_metadata(spark)  # the session's own settings, before any stage changes them
    conf = {**dict(spark.sparkContext.getConf().getAll()), **spark_record["settings"]}
    slots = session.task_slots(conf, spark.sparkContext.defaultParallelism)
    planned = session.plan_partitions(len(listing), cfg.batch_size, slots.slots)
    # --batch-size rules this stage: its Arrow batches are model batches (a cluster's smaller
    # maxRecordsPerBatch no longer caps them). Partitions follow the plan, not the cores that
    # happen to be registered now (see session.task_slots).
    stage_conf = {session.ARROW_BATCH_KEY: str(cfg.batch_size), session.MIN_PARTITIONS_KEY: str(planned)}
    group = f"featurize-{run_id}"
    featurize_start = timer.clock()
    with timer.stage("featurize") as stage:
        images = read_images(listing)
        if plan is not None:  # only new and changed images, spread over partitions planned for them
            todo_partitions = session.plan_partitions(max(to_featurize, 1), cfg.batch_size, slots.slots)
            images = images.join(plan.todo, "path", "left_semi").repartition(todo_partitions, "path")
        with (
            session.runtime_conf(spark, stage_conf),
            session.job_group(spark, group),
            progress.counting("featurize", to_featurize, featurize_count(spark, group, processed, plan is None)),
        ):
            try:
                write.write_table(featurize(images, spec, cfg.batch_size, processed), work)
            except Exception as exc:  # a task that failed on every attempt: name its input files
                named = name_failed_partition(images, exc)
                if named is None:
                    raise
                raise named from exc
        seconds = max(timer.clock() - featurize_start, 1e-9)
        stage.detail = f"{to_featurize:,} images · {rate_text(to_featurize / seconds)}"
    if plan is not None:
        plan.classified.unpersist()
    ran = session.group_tasks(spark, group)
    spark_record["featurize"] = {
        "batch_size": cfg.batch_size,
        "arrow_max_records_per_batch": cfg.batch_size,
        "task_slots": slots.slots,
        "task_slots_source": slots.source,
        "planned_partitions": planned,
        "tasks": ran["tasks"],
        "executors": ran["executors"],
    }
    staged = spark.read.parquet(work)
    featurized = staged.filter(F.col("error").isNull()).select("path", "label", "features", *PASSED_THROUGH)
    returned = staged.select("path")  # what the scan returned, and what this run did not need to read
    if plan is not None:
        featurized = featurized.unionByName(plan.reused)
        returned = returned.unionByName(plan.reused.select("path"))
    with timer.stage("account") as stage:
        rejected = staged.filter(F.col("error").isNotNull()).select("path", F.col("error").alias("reason"))
        rejected = rejected.unionByName(account(listing, returned))
        n_featurized, n_rejected = featurized.count(), rejected.count()
        stage.detail = f"{n_featurized:,} featurized, {n_rejected:,} rejected"
    if n_featurized + n_rejected != len(listing):
        raise JobFailed(f"accounting error: {len(listing)} listed != {n_featurized} featurized + {n_rejected} rejected")
    if n_featurized < 2:
        reasons = rejected.groupBy("reason").count().orderBy(F.desc("count")).limit(3).collect()
        summary = "; ".join(f"{r['count']}x {r['reason']}" for r in reasons)
        raise JobFailed(f"only {n_featurized} of {len(listing)} images could be featurized; PCA needs 2 ({summary})")
    if cfg.k is not None and cfg.k > n_featurized:
        raise UsageError(f"--k {cfg.k} is larger than the number of featurized images ({n_featurized})")
    with timer.stage("pca_fit") as stage:
        try:
            pca = reduce.fit_pca(reduce.covariance_stats(spark, featurized), cfg.variance, cfg.k)
        except errors.JobError:
            raise
        except ValueError as exc:  # reduce's own checks (fewer than 2 rows, constant features)
            raise PcaUndefined(str(exc)) from exc
        stage.detail = f"k={pca.k}"
    with timer.stage("write") as stage:
        stage.detail = "features, rejected, plot"
        write.write_table(reduce.project(spark, featurized, pca, PASSED_THROUGH), f"{staging}/features")
        write.write_table(rejected.coalesce(1), f"{staging}/rejected")
        write.delete(spark, f"{staging}/_work")
        write.write_plot(spark, staging, pca.explained_variance_ratio, pca.k, None if cfg.k else cfg.variance)
    cumulative = pca.explained_variance_ratio.cumsum()
    faults = recovery.failed_tasks(spark, first_job)
    if faults["task_retries"]:
        warn(f"the run survived faults: {recovery.summary(faults)}; metadata.json has them under faults")
    metadata = {
        "tool": write.TOOL,
        "run_id": run_id,
        "input": cfg.input,
        "output": cfg.output,
        "config": asdict(cfg),
        "model": model_lib.MODEL_NAME,
        "engine": cfg.engine,
        "weights": {
            "source": weights.source,
            "sha256": weights.sha256,
            "random": cfg.weights == "random",
            "onnx_model": spec.onnx_model,
        },
        "quantization": spec.quantization,  # onnx-int8: calibration set and settings (job/quantize.py)
        "counts": {
            "listed": len(listing),
            "featurized": n_featurized,
            "rejected": n_rejected,
            "model_processed": int(processed.value),
            **(plan.counts if plan is not None else {}),
        },
        "pca": {
            "k": pca.k,
            "k_forced": cfg.k is not None,
            "variance_target": None if cfg.k else cfg.variance,
            "explained_variance_at_k": float(cumulative[pca.k - 1]),
            "explained_variance": pca.explained_variance_ratio.tolist(),
            "cumulative_explained_variance": cumulative.tolist(),
        },
        "spark": spark_record,
        "faults": faults,
        "timings_s": timer.seconds,
        "versions": library_versions(),
    }
    write.write_metadata(spark, staging, metadata)
    if lock is not None:
        lock.check()  # a run that lost its output lock never commits
    write.commit(spark, staging, cfg.output, run_id)
    return metadata
