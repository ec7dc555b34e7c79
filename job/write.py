"""Everything the job writes, staged next to OUTPUT and committed with renames.

A run writes into `<OUTPUT>.incomplete-<run id>` and only when every file is there does it
swap that folder into OUTPUT (previous output moved aside, new one renamed in, `_SUCCESS`
written last, previous output deleted). A crashed run therefore never leaves an OUTPUT that
looks complete, and a previous complete OUTPUT stays in place until the new one is ready.
All I/O goes through Hadoop's FileSystem API, so local paths, HDFS and s3:// behave alike.

One run writes an OUTPUT at a time: `OutputLock` (`<OUTPUT>.lock`, with a heartbeat) is taken before
anything is staged and checked again before the commit; the run that takes it removes what dead
runs left beside OUTPUT (`remove_dead_runs`).
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, DoubleType, FloatType, StructType

from job.errors import CommitFailed, JobFailed, UsageError
from job.read import hadoop_fs, read_file

SUCCESS = "_SUCCESS"
METADATA = "metadata.json"
PLOT = "explained_variance.png"
REJECTED_SCHEMA = "path string, reason string"
TOOL = "emr-image-featurizer"


def staging_uri(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}.incomplete-{run_id}"


def check_output_replaceable(spark: SparkSession, output: str) -> None:
    """Refuse to overwrite a non-empty folder that is not a previous output of this job."""
    fs, path = hadoop_fs(spark, output)
    if not fs.exists(path):
        return
    if not fs.getFileStatus(path).isDirectory():
        raise UsageError(f"output exists and is a file: {output}")
    if not fs.listStatus(path):
        return
    marker = read_file(spark, f"{output.rstrip('/')}/{METADATA}")
    if marker is None or json.loads(marker.decode("utf-8")).get("tool") != TOOL:
        raise UsageError(
            f"output exists and is not a previous featurizer output: {output} (remove it or choose another)"
        )


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    fs, path = hadoop_fs(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = hadoop_fs(spark, uri)
    if fs.exists(path):
        fs.delete(path, True)


def write_table(df: DataFrame, uri: str) -> None:
    writer = df.write.mode("errorifexists")
    for option, value in no_dictionary_options(df.schema).items():
        writer = writer.option(option, value)
    writer.parquet(uri)


def no_dictionary_options(schema: StructType) -> dict[str, str]:
    """Parquet writer options that turn dictionary encoding off for float/double array columns.

    Feature vectors are distinct floats: parquet-mr first builds a dictionary of a column chunk's
    values (a hash-map insert per float), finds it does not pay and rewrites them plain. In JFR samples
    of the featurize stage that attempt was most of the executor's Parquet time; writing 2,000 rows of
    1,280 floats on local[2] took 0.36 s instead of 0.53 s without it. The file holds the same values.
    Other columns (labels repeat) keep the default.
    """
    options = {}
    for field in schema.fields:
        if isinstance(field.dataType, ArrayType) and isinstance(field.dataType.elementType, (FloatType, DoubleType)):
            options[f"parquet.enable.dictionary#{field.name}.list.element"] = "false"
    return options


def write_metadata(spark: SparkSession, staging: str, metadata: Mapping[str, object]) -> None:
    write_bytes(spark, f"{staging}/{METADATA}", json.dumps(metadata, indent=2, sort_keys=True).encode())


def write_plot(spark: SparkSession, staging: str, ratios: np.ndarray, k: int, target: float | None) -> None:
    write_bytes(spark, f"{staging}/{PLOT}", explained_variance_png(ratios, k, target))


def explained_variance_png(ratios: np.ndarray, k: int, target: float | None) -> bytes:
    """The seed's plot: cumulative explained variance against components, chosen k marked.

    The x axis ends a little past the larger of k and the rank (components with any variance): with
    fewer images than 1280 features everything beyond the rank is a flat line at 1.0 that would
    squeeze the useful part into the left edge.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cumulative = np.cumsum(ratios)
    shown = plot_extent(ratios, k)
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, shown + 1), cumulative[:shown], color="tab:blue", label="cumulative")
    ax.set_xlim(0.5, shown + 0.5)
    ax.axvline(k, color="tab:red", linestyle="--", label=f"k = {k} ({cumulative[k - 1]:.4f})")
    if target is not None:
        ax.axhline(target, color="tab:gray", linestyle=":", label=f"target {target}")
    ax.set_xlabel("number of principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_extent(ratios: np.ndarray, k: int) -> int:
    """Components the plot shows: max(k, rank) plus 10 % (at least 5), within the number of ratios."""
    top = float(np.max(ratios)) if len(ratios) else 0.0
    rank = int(np.count_nonzero(ratios > top * 1e-12)) if top > 0 else 0
    useful = max(k, rank)
    return int(min(len(ratios), useful + max(5, -(-useful // 10))))


def commit(spark: SparkSession, staging: str, output: str, run_id: str) -> None:
    """Swap the complete staging folder into OUTPUT; `_SUCCESS` is written last, in OUTPUT only.

    1. check staging holds `features/`, `rejected/` and `metadata.json` (else stop: OUTPUT untouched);
    2. delete OUTPUT/_SUCCESS, then move the previous output aside (`<OUTPUT>.previous-<run id>`);
    3. rename staging to OUTPUT (on S3 a file-by-file copy: OUTPUT is partial meanwhile, without
       `_SUCCESS`), then check OUTPUT holds `features/`;
    4. write OUTPUT/_SUCCESS, then delete the previous output.
    If 2 or 3 fails, whatever part of the new output reached OUTPUT is removed, the previous output
    is moved back and its `_SUCCESS` rewritten (it was complete), and CommitFailed is raised.
    The previous output is deleted only after the new one is in place with its `_SUCCESS`.
    """
    fs, out = hadoop_fs(spark, output)
    _, staged = hadoop_fs(spark, staging)
    base = output.rstrip("/")
    missing = [name for name in ("features", "rejected", METADATA) if not fs.exists(_child(spark, staged, name))]
    if missing:
        raise CommitFailed(f"staging folder {staging} lacks {', '.join(missing)}: nothing committed")
    success = _child(spark, out, SUCCESS)
    previous = None
    if fs.exists(out):
        fs.delete(success, False)
        previous = _child(spark, None, f"{base}.previous-{run_id}")
        if not _rename(fs, out, previous):
            if fs.exists(out) and not fs.exists(previous):  # nothing moved: still the previous output
                write_bytes(spark, f"{base}/{SUCCESS}", b"")
            raise CommitFailed(f"could not move the previous output aside: {output} -> {previous}")
    if not _rename(fs, staged, out) or not fs.exists(_child(spark, out, "features")):
        if fs.exists(out):
            fs.delete(out, True)  # a partial copy of the new output (or one without its data)
        if previous is not None and _rename(fs, previous, out):
            write_bytes(spark, f"{base}/{SUCCESS}", b"")  # the previous output, complete again
        raise CommitFailed(f"could not move {staging} to {output}; previous output restored")
    write_bytes(spark, f"{base}/{SUCCESS}", b"")
    if previous is not None:
        fs.delete(previous, True)


def _child(spark: SparkSession, parent, name: str):
    """A Hadoop Path: `name` under `parent`, or `name` itself when parent is None."""
    jvm = spark.sparkContext._jvm
    return jvm.org.apache.hadoop.fs.Path(name) if parent is None else jvm.org.apache.hadoop.fs.Path(parent, name)


def _rename(fs, source, target) -> bool:
    """Hadoop's rename, with an exception (S3 copy failing half-way, ...) reported as False."""
    try:
        return bool(fs.rename(source, target))
    except Exception:  # Py4J wraps the Java IOException; the caller restores and raises
        return False


# ---- the output lock: one run per OUTPUT at a time; what dead runs left is cleaned up ----------------

LOCK_TTL_KEY = "spark.featurizer.lockTtlSeconds"
DEFAULT_LOCK_TTL_S = 120.0


def lock_uri(output: str) -> str:
    return f"{output.rstrip('/')}.lock"


def lock_ttl(spark: SparkSession) -> float:
    """Seconds without a heartbeat after which a lock counts as abandoned (spark.featurizer.lockTtlSeconds)."""
    try:
        value = float(spark.conf.get(LOCK_TTL_KEY, str(DEFAULT_LOCK_TTL_S)))
    except ValueError:
        return DEFAULT_LOCK_TTL_S
    return value if value > 0 else DEFAULT_LOCK_TTL_S


def this_process() -> dict:
    """Who writes a lock: enough to tell, on the same machine, that its driver is gone."""
    record: dict = {"host": socket.gethostname(), "pid": os.getpid()}
    with suppress(OSError):
        record["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with suppress(OSError):
        record["pid_namespace"] = os.readlink("/proc/self/ns/pid")
    with suppress(OSError, IndexError):
        record["pid_start"] = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return record


def process_gone(holder: Mapping[str, object], me: Mapping[str, object]) -> bool:
    """True only when the holder ran on this machine (same boot, same pid namespace) and its process is gone.

    Another machine's driver cannot be checked: only its heartbeat tells (OutputLock's TTL).
    """
    for key in ("host", "boot_id", "pid_namespace"):
        if me.get(key) is None or holder.get(key) != me.get(key):
            return False
    try:
        fields = Path(f"/proc/{int(str(holder.get('pid')))}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return True
    return fields[0] in ("Z", "X") or fields[19] != holder.get("pid_start", fields[19])


class OutputLock:
    """`<OUTPUT>.lock`: the run id, its driver and a heartbeat, refreshed while the run lives.

    Taken with an exclusive create before the run stages anything; a second run to the same OUTPUT
    fails in one line (exit 1) while the lock is live. A lock whose heartbeat is older than the TTL,
    or whose driver ran on this machine and is gone, is abandoned: the next run takes it over and
    removes that run's staging (`remove_dead_runs`). Checked again right before the commit
    (`check`): a run that lost its lock never commits.

    Exclusive create: O_CREAT|O_EXCL for file:// (Hadoop's local create(overwrite=false) checks, then
    creates), Hadoop's create(overwrite=false) elsewhere, which is atomic on HDFS; on S3 (EMRFS, S3A)
    it is a check then a PUT, so two runs started within the same instant could both write the
    lock: the last PUT wins, and the other run sees a foreign run id at its next heartbeat or at the
    check before its commit, and fails without committing.
    """

    def __init__(self, spark: SparkSession, output: str, run_id: str, ttl: float) -> None:
        self.spark, self.output, self.run_id, self.ttl = spark, output, run_id, ttl
        self.uri = lock_uri(output)
        self.interval = max(ttl / 6, 0.5)
        self.record: dict = {
            "tool": TOOL,
            "run_id": run_id,
            "output": output,
            "app_id": spark.sparkContext.applicationId,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "heartbeat": time.time(),
            "ttl_s": ttl,
            **this_process(),
        }
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back --

    def acquire(self) -> list[str]:
        """Take the lock (JobFailed if a live run holds it); return what was taken over from a dead run."""
        notes: list[str] = []
        for _ in range(5):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="featurizer-output-lock", daemon=True)
                self._thread.start()
                return notes
            holder = self._read()
            if holder is None:  # released meanwhile
                continue
            stale = self._abandoned(holder)
            if stale is None:
                raise JobFailed(self._busy(holder))
            notes.append(f"took over the output lock of run {holder.get('run_id', '?')} ({stale})")
            delete(self.spark, self.uri)
        raise JobFailed(f"--output {self.output}: could not take the output lock {self.uri}: other runs keep taking it")

    def check(self) -> None:
        """Before the commit: this run still holds the lock (JobFailed otherwise: nothing committed)."""
        holder = self._read()
        if self.lost is None and (holder is None or holder.get("run_id") != self.run_id):
            self.lost = "the lock was removed" if holder is None else f"run {holder.get('run_id')} holds it now"
        if self.lost is not None:
            raise JobFailed(
                f"--output {self.output}: this run lost its output lock {self.uri} ({self.lost}); nothing committed"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with suppress(Exception):  # a lock left behind expires with its heartbeat
            holder = self._read()
            if holder is not None and holder.get("run_id") == self.run_id:
                delete(self.spark, self.uri)

    # -- the lock object --

    def _create(self) -> bool:
        data = json.dumps(self.record).encode()
        fs, path = hadoop_fs(self.spark, self.uri)
        if str(fs.getUri().getScheme()) == "file":
            local = str(path.toUri().getPath())
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
            try:
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        try:
            stream = fs.create(path, False)
        except Exception as exc:  # FileAlreadyExistsException (HDFS, S3A), or an IOException saying so
            if "AlreadyExists" in str(exc) or fs.exists(path):
                return False
            raise
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()
        return True

    def _write(self) -> None:
        data = json.dumps(self.record).encode()
        fs, path = hadoop_fs(self.spark, self.uri)
        if str(fs.getUri().getScheme()) == "file":  # replace in one step: a reader never sees half a lock
            local = str(path.toUri().getPath())
            temporary = f"{local}.{self.run_id}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, local)
            return
        write_bytes(self.spark, self.uri, data)

    def _read(self) -> dict | None:
        """The lock's record; None when there is no lock. An unreadable (half-written) one counts as live
        until its modification time is older than the TTL."""
        fs, path = hadoop_fs(self.spark, self.uri)
        try:
            status = fs.getFileStatus(path)
        except Exception:  # FileNotFoundException
            return None
        data = read_file(self.spark, self.uri)
        if data is None:
            return None
        try:
            record = json.loads(data.decode("utf-8"))
            if isinstance(record, dict) and "heartbeat" in record:
                return record
        except ValueError:
            pass
        return {"run_id": "?", "heartbeat": status.getModificationTime() / 1000.0}

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                holder = self._read()
                if holder is None or holder.get("run_id") != self.run_id:
                    self.lost = "the lock was removed" if holder is None else f"run {holder.get('run_id')} took it"
                    return
                self.record["heartbeat"] = time.time()
                self._write()
            except Exception:  # a transient storage error: the next beat retries, the TTL spans several
                continue

    def _abandoned(self, holder: Mapping[str, object]) -> str | None:
        """Why the holder's run is dead, or None while it may live."""
        age = time.time() - float(str(holder.get("heartbeat", 0)))
        ttl = max(self.ttl, float(str(holder.get("ttl_s", 0) or 0)))
        if age > ttl:
            return f"no heartbeat for {age:.0f} s, TTL {ttl:.0f} s"
        if process_gone(holder, self.record):
            return f"its driver, pid {holder.get('pid')} on this machine, is gone"
        return None

    def _busy(self, holder: Mapping[str, object]) -> str:
        age = time.time() - float(str(holder.get("heartbeat", 0)))
        ttl = max(self.ttl, float(str(holder.get("ttl_s", 0) or 0)))
        return (
            f"--output {self.output} is being written by another run ({holder.get('run_id', '?')}, driver "
            f"{holder.get('host', '?')} pid {holder.get('pid', '?')}, started {holder.get('started', '?')}, "
            f"last heartbeat {max(age, 0):.0f} s ago): wait for it to finish; if it died, its lock {self.uri} "
            f"expires {ttl:.0f} s after its last heartbeat"
        )


def remove_dead_runs(spark: SparkSession, output: str, run_id: str) -> list[str]:
    """Clean up beside OUTPUT what runs that died left (call holding the output lock); return what was done.

    - `<OUTPUT>.incomplete-<id>` of any other run: no live run stages there (a live one would hold the
      lock), so it is removed.
    - `<OUTPUT>.previous-<id>`: a commit cut short. If OUTPUT is complete (its `_SUCCESS`), it is the
      leftover of the last step and removed; otherwise it is the previous complete output, moved back
      to OUTPUT with its `_SUCCESS` (a partial OUTPUT without `_SUCCESS` is removed first).
    """
    fs, out = hadoop_fs(spark, output)
    parent, name = out.getParent(), out.getName()
    if parent is None or not fs.exists(parent):
        return []
    done: list[str] = []
    staging, previous = [], []
    for status in fs.listStatus(parent):
        child = status.getPath()
        child_name = str(child.getName())
        if child_name.startswith(f"{name}.incomplete-") and child_name != f"{name}.incomplete-{run_id}":
            staging.append(child)
        elif child_name.startswith(f"{name}.previous-"):
            previous.append((status.getModificationTime(), child))
    for child in staging:
        fs.delete(child, True)
        done.append(f"removed {child}, the staging of a run that died")
    if previous:
        previous.sort(key=lambda item: item[0])
        base = output.rstrip("/")
        if not fs.exists(_child(spark, out, SUCCESS)):
            _, newest = previous.pop()
            complete = all(fs.exists(_child(spark, newest, part)) for part in ("features", METADATA))
            if complete:
                if fs.exists(out):
                    fs.delete(out, True)
                if _rename(fs, newest, out):
                    write_bytes(spark, f"{base}/{SUCCESS}", b"")
                    done.append(f"restored {output} from {newest}, left aside by a commit that was cut short")
            else:
                previous.append((0, newest))
        for _, child in previous:
            if fs.exists(child):
                fs.delete(child, True)
                done.append(f"removed {child}, left aside by a commit that was cut short")
    return done
