"""A class-data archive (Java AppCDS) for the JVMs that local runs launch: the same run, ~5 s less start-up.

A local run's JVM spends its first seconds loading and verifying Spark's classes and running them
interpreted: on 2 cores, session start + listing 8,000 files took 16 s cold against 10 s with
this archive (measured; the steady state is the same code). Java 17 writes such an archive at the
exit of a JVM started with `-XX:ArchiveClassesAtExit` (a "dynamic" archive on top of the JDK's own)
and maps it into later JVMs given `-XX:SharedArchiveFile`.

- **Made once, explicitly** (`python -m job.jvm_archive`; `scripts/setup.sh` and the bench run it):
  spark-submit runs the job itself on a few synthetic images with seeded random weights, so the
  archive holds the classes a real run loads. spark-submit execs the JVM, so waiting for it
  waits for the archive too; it is written to a temporary name and renamed when complete.
- **Used automatically** by `job.session.start_spark` when this process launches a local JVM and
  the archive for this Java + Spark + conf folder exists (the key below): a JVM upgrade, another
  pyspark or SPARK_CONF_DIR simply find no archive. A cluster's JVMs (spark-submit on EMR) are
  never touched.
- **Never fatal**: a truncated archive crashes the JVM that maps it (SIGBUS, measured), so an
  archive is used only if its size matches the record written after it was complete, and if the
  JVM still fails to start with it, the archive is removed and the run starts again without it.
  A JVM that cannot use an archive (other classpath, other JVM build) ignores it; its warning is
  switched off (`-Xlog:cds=off`).

`FEATURIZER_JVM_ARCHIVE=off` turns it off. The archive is ~140 MB, under the job's local cache
folder (`$FEATURIZER_CACHE_DIR`, default ~/.cache/featurizer) in `jvm/`. Each use touches its
record; making an archive removes those no run has used for UNUSED_DAYS (an upgraded Java or
pyspark, a removed checkout), so upgrades do not pile up archives.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from job.config import local_cache_root

ENV = "FEATURIZER_JVM_ARCHIVE"
OFF = ("0", "off", "false", "no")
MAGIC = bytes.fromhex("a8ab0bf0")  # a dynamic CDS archive's header (0xf00baba8, little-endian)
# -XX:ErrorFile: a JVM that crashes on a damaged archive writes its hs_err file beside the archive,
# not into the user's working folder.
USE_OPTIONS = "-XX:SharedArchiveFile={path} -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off -XX:ErrorFile={errors}"
CREATE_OPTIONS = "-XX:ArchiveClassesAtExit={path} -Xlog:cds=off -Xlog:cds+dynamic=off"
UNUSED_DAYS = 30  # an archive no run used for this long is removed when another is made


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in OFF


def spark_home() -> Path:
    """The Spark that launches local JVMs, found as pyspark finds it ($SPARK_HOME, else the package's own)."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()).resolve()


def java_binary() -> Path | None:
    """The java spark-class runs: $JAVA_HOME/bin/java, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return Path(found).resolve() if found and os.path.exists(found) else None


def _stat(path: Path) -> list:
    try:
        info = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), info.st_size, int(info.st_mtime)]


def key(conf_dir: str) -> str | None:
    """What an archive is valid for: the JVM build, Spark's jars and the classpath's conf folder.

    Only file names, sizes and times (no JVM started, no file read): ~1 ms. None without a java.
    """
    java = java_binary()
    if java is None:
        return None
    jvm = sorted(java.parent.parent.glob("lib/server/libjvm.*"))
    jars = sorted(spark_home().glob("jars/*.jar"))
    identity = {
        "java": _stat(java),
        "libjvm": [_stat(p) for p in jvm],
        # The JVM checks each classpath jar's size and time against the archive's and silently ignores an
        # archive that differs: a reinstalled pyspark at the same path (same sizes) needs a new one.
        "jars": [[p.name, *_stat(p)[1:]] for p in jars],
        "conf_dir": os.path.abspath(conf_dir) if conf_dir else "",
        "extra_classpath": os.environ.get("SPARK_CLASSPATH", ""),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def folder() -> Path:
    return Path(local_cache_root()) / "jvm"


def archive_path(conf_dir: str) -> Path | None:
    digest = key(conf_dir)
    return None if digest is None else folder() / f"{digest}.jsa"


def record_path(archive: Path) -> Path:
    return archive.with_suffix(".json")


def _header(path: Path) -> bytes:
    try:
        with path.open("rb") as head:
            return head.read(4)
    except OSError:
        return b""


def usable(archive: Path) -> bool:
    """A complete archive: the size recorded when it was finished, and a CDS header."""
    try:
        record = json.loads(record_path(archive).read_text(encoding="utf-8"))
        return archive.stat().st_size == record["size"] and _header(archive) == MAGIC
    except (OSError, ValueError, KeyError, TypeError):
        return False


def use_options(conf_dir: str) -> str | None:
    """The JVM options that map this setup's archive, or None (off, none made yet, or incomplete)."""
    if not enabled():
        return None
    archive = archive_path(conf_dir)
    if archive is None or not usable(archive):
        return None
    with contextlib.suppress(OSError):  # its last use, for prune (a read-only cache just never prunes it)
        os.utime(record_path(archive))
    return USE_OPTIONS.format(path=archive, errors=archive.parent / "hs_err_pid%p.log")


def named_archive(arguments: Iterable[str]) -> Path | None:
    """The archive a JVM's arguments map (the last -XX:SharedArchiveFile wins, as in the JVM), or None."""
    files = [arg.split("=", 1)[1] for arg in arguments if arg.startswith("-XX:SharedArchiveFile=")]
    return Path(files[-1]) if files else None


def discard(options: str) -> Path | None:
    """Remove the archive named in `options` (a JVM failed to start with it); returns its path."""
    archive = named_archive(options.split())
    if archive is not None:
        for path in (record_path(archive), archive):
            with contextlib.suppress(OSError):
                path.unlink()
    return archive


def prune(keep: Path, now: float | None = None) -> list[Path]:
    """Remove the archives beside `keep` that no run used for UNUSED_DAYS, and leftovers of archiving
    runs that died (temporary files, archives without a record) as old; returns what was removed."""
    now = time.time() if now is None else now
    cutoff = now - UNUSED_DAYS * 86400
    removed = []
    for path in sorted(keep.parent.iterdir()):
        if path == keep or path.suffix not in (".jsa", ".tmp"):
            continue
        record = record_path(path)
        files = [path, record] if path.suffix == ".jsa" else [path]
        try:  # an archive's last use is its record's time; a leftover without a record, its own
            last_used = (record if record in files and record.exists() else path).stat().st_mtime
        except OSError:
            continue
        if last_used < cutoff:
            for stale in files:
                with contextlib.suppress(OSError):
                    stale.unlink()
            removed.append(path)
    return removed


def create(conf_dir: str | None = None, log: Path | None = None, timeout: float = 900) -> Path:
    """Run the job once on a few synthetic images under spark-submit, archiving its classes; the archive.

    Raises RuntimeError (with the log's tail) when the run fails or leaves no complete archive.
    """
    from job.onnx_engine import write_atomically  # the model cache's temp-then-rename writer
    from job.samples import write_dataset
    from job.session import spark_conf_dir

    conf_dir = spark_conf_dir() if conf_dir is None else conf_dir
    archive = archive_path(conf_dir)
    if archive is None:
        raise RuntimeError("no java found (JAVA_HOME or PATH): install a JDK 17 first")
    archive.parent.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="featurizer-jvm-archive-") as work:
        images, tmp = Path(work) / "images", archive.parent / f".{archive.name}.{os.getpid()}.tmp"
        write_dataset(images, per_class=2)
        log = log or Path(work) / "run.log"
        env = {
            **os.environ,
            ENV: "off",  # the archiving JVM must not map an archive itself
            "PYSPARK_PYTHON": sys.executable,
            "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p),
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            "SPARK_CONF_DIR": conf_dir,
        }
        command = [
            str(spark_home() / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--conf",
            f"spark.driver.extraJavaOptions={CREATE_OPTIONS.format(path=tmp)}",
            "--conf",
            "spark.driver.host=127.0.0.1",
            str(repo / "job" / "entrypoint.py"),
            *("--input", str(images), "--output", str(Path(work) / "out"), "--weights", "random"),
        ]
        started = time.monotonic()
        try:
            with log.open("w", encoding="utf-8") as out:
                run = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            code = run.returncode
            complete = code == 0 and _header(tmp) == MAGIC
            if not complete:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"the archiving run failed (exit {code}); its log ends:\n{tail}")
            os.replace(tmp, archive)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        record = {"size": archive.stat().st_size, "seconds": round(time.monotonic() - started, 1), "conf_dir": conf_dir}
        write_atomically(record_path(archive), (json.dumps(record) + "\n").encode("utf-8"))
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m job.jvm_archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--if-missing", action="store_true", help="do nothing when a usable archive exists")
    args = parser.parse_args(argv)
    from job.session import spark_conf_dir

    if not enabled():
        print(f"jvm archive: off ({ENV})")
        return 0
    existing = archive_path(spark_conf_dir())
    if args.if_missing and existing is not None and usable(existing):
        print(f"jvm archive: {existing} (already made)")
        return 0
    try:
        archive = create()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"jvm archive: not made: {exc}", file=sys.stderr)
        return 1
    size = archive.stat().st_size / 2**20
    print(f"jvm archive: {archive} ({size:.0f} MiB); local runs now start with it")
    removed = prune(archive)
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"jvm archive: removed {len(removed)} unused for {UNUSED_DAYS} days: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
