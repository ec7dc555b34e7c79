"""The only place that builds a SparkSession (the job's edge), and the settings it derives from the cluster.

Who decides what, in order:

1. `--master` (cfg.master), when given, is the master. Nothing else in the job ever sets one.
2. Under spark-submit (the Py4J gateway already exists: `PYSPARK_GATEWAY_PORT` is in the
   environment) spark-submit's `--master`, `--conf` and spark-defaults rule. On EMR that is how
   `spark.master yarn` arrives: from spark-defaults, not from the step's arguments.
3. Run as `python -m job` / `featurizer run`, the job launches the gateway itself (through the same
   spark-submit, so `$SPARK_CONF_DIR/spark-defaults.conf` applies); without a master from there,
   spark-submit's own default is `local[*]`.
4. The job's tuning defaults (`spark_conf`) fill in only the keys the *effective* configuration
   lacks. That configuration is read after the gateway exists, from the JVM's SparkConf (the
   system properties spark-submit set from its arguments and spark-defaults), before the
   SparkContext starts, because keys such as `spark.task.cpus` and `spark.python.worker.reuse`
   cannot change afterwards. (A PySpark `SparkConf()` created before the gateway is an empty
   Python dict: reading that is what let the job override the cluster's settings.)
5. Local-mode conveniences (driver on 127.0.0.1, workers on this interpreter, 2 GB driver) apply
   only when the effective master is local.

`--batch-size` is the one setting that rules the featurize stage: the model batch *and* the
Arrow batch of that stage (the pipeline sets `spark.sql.execution.arrow.maxRecordsPerBatch` to it,
a runtime SQL setting, for that stage only; the session's own value, the cluster's or the job's
default, applies to the other Arrow stages). Before, a cluster value below --batch-size silently
capped every model call.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from job import jvm_archive, quiet
from job.config import JobConfig

APP_NAME = "emr-image-featurizer"
# Spark's default cost of opening a file, made explicit because partition sizing relies on it.
OPEN_COST_BYTES = 4 * 1024 * 1024
# At most this many model batches of small files per task. Each task costs ~0.7 s of fixed work
# (measured: Parquet writer, commit, scheduling, Python worker hand-over), which at 2 batches per
# task took 18 % of the featurize stage. Below the cap the job plans one partition per task slot
# of the cluster (see plan_partitions), so small inputs run in one wave; the cap keeps tasks at
# ~25 s of TensorFlow work on big inputs, so dynamic allocation has tasks to give new executors.
MAX_BATCHES_PER_TASK = 16
# Explicit cluster size for partition planning (cores), e.g. set in EMR's spark-defaults
# classification when neither dynamic allocation limits nor defaultParallelism tell it.
MAX_CORES_KEY = "spark.featurizer.maxCores"
ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"
MIN_PARTITIONS_KEY = "spark.sql.files.minPartitionNum"
# Local runs write through Hadoop's raw local filesystem: no `.crc` checksum file beside every output
# file (the checksummed LocalFileSystem only adds them for local disks; HDFS and S3 never had them).
LOCAL_FS_KEY = "spark.hadoop.fs.file.impl"
RAW_LOCAL_FS = "org.apache.hadoop.fs.RawLocalFileSystem"
# Recorded in metadata.json ("spark" -> "settings") when set.
RECORDED_KEYS = (
    ARROW_BATCH_KEY,
    "spark.task.cpus",
    "spark.python.worker.reuse",
    "spark.sql.files.maxPartitionBytes",
    "spark.sql.files.openCostInBytes",
    MIN_PARTITIONS_KEY,
    "spark.task.maxFailures",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.executor.memory",
    "spark.executor.memoryOverhead",
    "spark.executor.pyspark.memory",
    "spark.driver.memory",
    "spark.dynamicAllocation.enabled",
    "spark.dynamicAllocation.maxExecutors",
    MAX_CORES_KEY,
    "spark.yarn.maxAppAttempts",
)


def spark_conf(cfg: JobConfig) -> dict[str, str]:
    """The job's defaults: each applies only where spark-submit, --conf or spark-defaults set nothing."""
    return {
        # Session default for Arrow stages; the featurize stage always uses --batch-size (see above).
        ARROW_BATCH_KEY: str(cfg.batch_size),
        # Keep Python workers (and the model cached in them) alive across tasks.
        "spark.python.worker.reuse": "true",
        # One core per task and one inference thread per Python worker (--threads N reserves N
        # cores per task). Measured on 2 cores (bench/RESULTS.md): 2 workers x 1 thread beat
        # 1 worker x 2 threads for TensorFlow (91 vs 78 img/s), equal within noise for ONNX Runtime;
        # and untuned TF threads in concurrent workers oversubscribe the cores.
        "spark.task.cpus": str(max(cfg.threads, 1)),
        # binaryFile packs files into partitions by bytes + open cost: small images are costed at
        # OPEN_COST_BYTES, so a partition holds at most MAX_BATCHES_PER_TASK full model batches of
        # them (the default ~32 files made half-size model batches and many tasks); large images
        # are packed by size.
        "spark.sql.files.openCostInBytes": str(OPEN_COST_BYTES),
        "spark.sql.files.maxPartitionBytes": str(OPEN_COST_BYTES * cfg.batch_size * MAX_BATCHES_PER_TASK),
        "spark.sql.parquet.compression.codec": "snappy",
        "spark.ui.showConsoleProgress": "false",
        # The input's file index (Spark's binaryFile listing, held in the driver JVM for the whole run)
        # without block locations: plain statuses (listStatus) instead of LocatedFileStatus with a
        # BlockLocation each. Measured: 0.57 instead of 0.69 KB of live heap per listed file. S3 has
        # no locality (EMRFS reports "localhost"), and small images are one block each anyway.
        "spark.sql.sources.ignoreDataLocality": "true",
        # No session-wide cache of listed files (meant for Hive partitioned tables; 250 MB by default):
        # it kept a listing's statuses after its index was gone (e.g. the dry run's second listing),
        # up to ~60 MB per listed folder. The job lists each location once.
        "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
    }


def launched_by_spark_submit() -> bool:
    """True when the Python driver was started by spark-submit (its JVM and gateway already run)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_local(master: str | None) -> bool:
    return bool(master) and master.startswith("local")


def spark_conf_dir() -> str:
    """Where spark-submit reads spark-defaults.conf and log4j2.properties ($SPARK_CONF_DIR, else $SPARK_HOME/conf)."""
    return os.environ.get("SPARK_CONF_DIR") or os.path.join(jvm_archive.spark_home(), "conf")


def spark_defaults() -> dict[str, str]:
    """spark-defaults.conf as spark-submit will read it ($SPARK_CONF_DIR, else $SPARK_HOME/conf)."""
    folder = spark_conf_dir()
    values: dict[str, str] = {}
    try:
        with open(os.path.join(folder, "spark-defaults.conf"), encoding="utf-8") as lines:
            for line in lines:
                parts = line.strip().split(None, 1)
                if parts and not parts[0].startswith("#"):
                    values[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    except OSError:
        pass
    return values


def start_spark(cfg: JobConfig, log: Path | None = None) -> SparkSession:
    """A session whose master and settings are the ones given (see the module docstring for the order).

    `log`: the run's log file. A JVM this process launches then logs there, not on the console
    (job.quiet); under spark-submit the cluster's log4j configuration stays in charge.
    """
    active = SparkSession.getActiveSession()
    if active is not None:  # one SparkContext per process: reuse it as it is (tests)
        return active
    if not launched_by_spark_submit():
        # This process launches the JVM (through spark-submit, which reads spark-defaults): what
        # must be known when it starts goes in now, for a local master only, never over spark-defaults.
        launch = SparkConf()  # no JVM yet: a plain dict, passed to spark-submit as --conf
        launch.set("spark.ui.showConsoleProgress", "false")  # pyspark-shell's own default is true
        defaults = spark_defaults()
        java_options = None
        if log is not None:
            java_options = quiet.driver_java_options(defaults, spark_conf_dir(), log, cfg.verbose)
        archive = None
        if is_local(cfg.master or defaults.get("spark.master", "local[*]")):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            if "spark.driver.memory" not in defaults and "SPARK_DRIVER_MEMORY" not in os.environ:
                launch.set("spark.driver.memory", "2g")
            if LOCAL_FS_KEY not in defaults:  # at launch too: the JVM caches the first file:// filesystem
                launch.set(LOCAL_FS_KEY, RAW_LOCAL_FS)
            archive = jvm_archive.use_options(spark_conf_dir())  # None until one is made (job/jvm_archive.py)
        launch_jvm(launch, defaults, java_options, archive)
    else:
        SparkContext._ensure_initialized()  # connects to spark-submit's JVM
    effective = SparkConf()  # JVM-backed now: spark-submit's arguments + spark-defaults
    builder = SparkSession.builder.appName(APP_NAME)
    if cfg.master:
        builder = builder.master(cfg.master)
    elif not effective.contains("spark.master"):
        builder = builder.master("local[*]")
    master = cfg.master or effective.get("spark.master", "local[*]")
    for key, value in spark_conf(cfg).items():
        if not effective.contains(key):
            builder = builder.config(key, value)
    if is_local(master):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if not effective.contains("spark.driver.host"):
            builder = builder.config("spark.driver.host", "127.0.0.1")
        if not effective.contains(LOCAL_FS_KEY):
            builder = builder.config(LOCAL_FS_KEY, RAW_LOCAL_FS)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def launch_jvm(launch: SparkConf, defaults: Mapping[str, str], java_options: str | None, archive: str | None) -> None:
    """Start this process's JVM; with the class archive's options when there are any.

    A JVM that fails to start with the archive (a damaged file crashes it) starts again without
    it, and the archive is removed so that later runs do not try it again.
    """
    base = java_options if java_options is not None else defaults.get(quiet.JAVA_OPTIONS_KEY, "")
    if archive is not None:
        launch.set(quiet.JAVA_OPTIONS_KEY, " ".join(part for part in (base, archive) if part))
        try:
            SparkContext._ensure_initialized(conf=launch)
            return
        except Exception as exc:
            removed = jvm_archive.discard(archive)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(
                f"featurizer: warning: the JVM did not start with its class archive {removed} ({reason}): "
                "removed it, starting without",
                file=sys.stderr,
                flush=True,
            )
    if java_options is not None or archive is not None:  # after a failed try: spark-defaults' own options
        launch.set(quiet.JAVA_OPTIONS_KEY, base)
    SparkContext._ensure_initialized(conf=launch)


def class_archive(spark: SparkSession) -> dict | None:
    """The driver JVM's class archive (job/jvm_archive.py), for metadata.json: its file and whether the
    JVM mapped it (Linux /proc; None elsewhere). None when the JVM started without one."""
    jvm = spark.sparkContext._jvm
    arguments = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    archive = jvm_archive.named_archive(list(arguments))
    if archive is None:
        return None
    mapped = None
    with suppress(Exception):  # /proc is Linux's; the pid comes from the JVM itself
        pid = jvm.java.lang.ProcessHandle.current().pid()
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            mapped = str(archive) in maps.read()
    return {"file": str(archive), "mapped": mapped}


# ---- what the job derives from the running session ----------------------------------------------


@dataclass(frozen=True)
class TaskSlots:
    slots: int  # tasks the cluster can run at once, at its largest
    source: str  # where the core count came from


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**31 - 1 else None  # Int.MaxValue = "unlimited"


def task_slots(conf: Mapping[str, str], default_parallelism: int) -> TaskSlots:
    """How many featurize tasks the cluster can run at once, at its largest (a pure function).

    With dynamic allocation (EMR's default) few executors exist when the scan is planned, so
    `defaultParallelism` (the cores registered now) says ~2 on a cluster that will grow to
    dozens. Cores, by precedence: `spark.featurizer.maxCores`; with dynamic allocation on,
    `spark.dynamicAllocation.maxExecutors` x `spark.executor.cores` when both are set;
    else `defaultParallelism`. Slots = cores / `spark.task.cpus`.
    """
    task_cpus = _positive_int(conf.get("spark.task.cpus")) or 1
    cores, source = _positive_int(conf.get(MAX_CORES_KEY)), MAX_CORES_KEY
    if cores is None and str(conf.get("spark.dynamicAllocation.enabled", "false")).strip().lower() == "true":
        executors = _positive_int(conf.get("spark.dynamicAllocation.maxExecutors"))
        per_executor = _positive_int(conf.get("spark.executor.cores"))
        if executors and per_executor:
            cores, source = executors * per_executor, "spark.dynamicAllocation.maxExecutors x spark.executor.cores"
    if cores is None:
        cores, source = max(default_parallelism, 1), "defaultParallelism"
    return TaskSlots(slots=max(cores // task_cpus, 1), source=source)


def plan_partitions(n_files: int, batch_size: int, slots: int) -> int:
    """Featurize partitions for `n_files` listed files (a pure function).

    One partition per task slot (one wave over the whole cluster), but never more than
    MAX_BATCHES_PER_TASK model batches per task (more tasks then), nor more partitions than files.
    """
    per_task = batch_size * MAX_BATCHES_PER_TASK
    return max(1, min(n_files, max(slots, math.ceil(n_files / per_task))))


def settings(spark: SparkSession) -> dict[str, str]:
    """The RECORDED_KEYS that are set on this session (session SQL conf first, then the context's)."""
    context = dict(spark.sparkContext.getConf().getAll())
    found: dict[str, str] = {}
    for key in RECORDED_KEYS:
        value = spark.conf.get(key, None)
        if value is None:
            value = context.get(key)
        if value is not None:
            found[key] = value
    return found


@contextmanager
def runtime_conf(spark: SparkSession, values: Mapping[str, str]) -> Iterator[None]:
    """Set runtime SQL settings for one stage, then put the session's own values back."""
    saved = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


@contextmanager
def job_group(spark: SparkSession, group: str) -> Iterator[None]:
    """Tag the jobs started inside (this thread) so stage_tasks can find them afterwards."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        sc.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]


def group_tasks(spark: SparkSession, group: str) -> dict:
    """Tasks, partitions and the executors (id, host) that ran the jobs of `group` (from Spark's status store)."""
    sc = spark.sparkContext
    jsc = sc._jsc.sc()
    # Task-end events reach the status store asynchronously; a timeout only makes the record partial.
    with suppress(Exception):
        jsc.listenerBus().waitUntilEmpty(30_000)
    tracker = sc.statusTracker()
    store = jsc.statusStore()
    host_ports: dict[str, str] = {}
    summaries = store.executorList(False)
    for i in range(summaries.size()):
        summary = summaries.apply(i)
        host_ports[summary.id()] = summary.hostPort()
    partitions = 0
    executors: dict[str, dict[str, str]] = {}
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        for stage_id in info.stageIds if info else []:
            stage = tracker.getStageInfo(stage_id)
            if stage is None:
                continue
            partitions += stage.numTasks
            tasks = store.taskList(stage_id, stage.currentAttemptId, 2**31 - 1)
            for i in range(tasks.size()):
                task = tasks.apply(i)
                if task.status() != "SUCCESS":
                    continue
                executor_id = task.executorId()
                executors.setdefault(
                    executor_id,
                    {"id": executor_id, "host": task.host(), "host_port": host_ports.get(executor_id, "")},
                )
    return {"tasks": partitions, "executors": sorted(executors.values(), key=lambda e: e["id"])}
