"""Keep what the user cannot act on off the terminal, and in a log file whose path the run prints.

Three sources of noise, silenced before they print:

- **The driver JVM** (Spark's "Setting default log level" banner, NativeCodeLoader, netlib's
  "Failed to load implementation from: dev.ludovic.netlib.blas..."): when the job launches its own
  JVM (`featurizer run`, `python -m job`), it starts it with a log4j2 configuration that writes
  Spark's warnings to the log file instead of the console (`--verbose`: to both). Under spark-submit
  (EMR) the JVM already runs with the cluster's own log4j configuration, which the job leaves alone;
  so does a `log4j2.properties` in `$SPARK_CONF_DIR` or a `-Dlog4j2.configurationFile` the user set.
- **TensorFlow's native start-up lines** (absl's "All log messages before absl::InitializeLog()",
  oneDNN's notice), printed by its C++ code when `tensorflow` is imported, in the driver and in every
  Python worker. `TF_CPP_MIN_LOG_LEVEL` no longer stops them (absl writes them before it is
  initialised), so `import_tensorflow` imports TensorFlow with file descriptor 2 pointed at a
  temporary file, then appends what was written to the log file (shown on stderr only if the import
  fails). `TF_ENABLE_ONEDNN_OPTS` is left as it is: it changes the numerics, not just the notice.
- **Python tracebacks** of a failed run go to the log file; stderr gets one line (see job.errors).

The log file's path travels in `FEATURIZER_LOG`, which the JVM and, in local mode, its Python workers
inherit; `FEATURIZER_LOG_DIR` chooses the folder (default: `<tmp>/featurizer`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

LOG_ENV = "FEATURIZER_LOG"
LOG_DIR_ENV = "FEATURIZER_LOG_DIR"
JAVA_OPTIONS_KEY = "spark.driver.extraJavaOptions"
LOG4J2_CONFIG_FILES = ("log4j2.properties", "log4j2.xml", "log4j2.yaml", "log4j2.yml", "log4j2.json")

# Spark's warnings go to the log file; the console gets them only with --verbose. The loggers named
# below print at start-up on every local run and say nothing the user can change (no native Hadoop
# library; no native BLAS, a pure-Java fallback): error level, so not even the log file fills with them.
# The REPL logger's level equals the root's, so Spark prints no "Setting default log level" banner.
LOG4J2_PROPERTIES = """\
# Written by the featurizer for one run (job/quiet.py).
status = error
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
{console_ref}
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex

appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex

logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = warn
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
logger.netlib.name = dev.ludovic.netlib
logger.netlib.level = error
"""


def log_dir() -> Path:
    return Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "featurizer")


def start_log() -> Path:
    """A new log file for this run, named in FEATURIZER_LOG for the JVM and Python workers to inherit."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"featurizer-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    path.touch()
    os.environ[LOG_ENV] = str(path)
    return path


def current_log() -> str | None:
    return os.environ.get(LOG_ENV) or None


def append_to_log(text: str, log: str | None = None) -> None:
    log = log or current_log()
    if not log or not text:
        return
    try:
        with open(log, "a", encoding="utf-8", errors="replace") as out:
            out.write(text if text.endswith("\n") else text + "\n")
    except OSError:
        pass


def user_log4j_config(defaults: Mapping[str, str], conf_dir: str) -> bool:
    """True when the user or cluster chose the driver JVM's log4j configuration: then it is kept."""
    if any(os.path.exists(os.path.join(conf_dir, name)) for name in LOG4J2_CONFIG_FILES):
        return True
    options = " ".join(
        (
            defaults.get(JAVA_OPTIONS_KEY, ""),
            defaults.get("spark.driver.defaultJavaOptions", ""),
            os.environ.get("SPARK_SUBMIT_OPTS", ""),
            os.environ.get("JAVA_TOOL_OPTIONS", ""),
        )
    )
    return "log4j2.configurationFile" in options or "log4j.configuration" in options


def driver_java_options(defaults: Mapping[str, str], conf_dir: str, log: Path, verbose: bool) -> str | None:
    """spark.driver.extraJavaOptions for a JVM the job launches: the cluster's options plus our log4j2 file.

    None when the user has a log4j configuration of their own (it is left in charge).
    """
    if user_log4j_config(defaults, conf_dir):
        return None
    config = log.with_suffix(".log4j2.properties")
    config.write_text(
        LOG4J2_PROPERTIES.format(
            log=str(log).replace("\\", "/"),
            console_ref="rootLogger.appenderRef.console.ref = console" if verbose else "",
        ),
        encoding="utf-8",
    )
    own = f"-Dlog4j2.configurationFile={config.as_uri()}"
    return " ".join(part for part in (defaults.get(JAVA_OPTIONS_KEY, "").strip(), own) if part)


@contextmanager
def native_stderr(log: str | None = None) -> Iterator[None]:
    """Point file descriptor 2 at a temporary file meanwhile (native code writes there, not to sys.stderr).

    On success what was written is appended to the log file (dropped without one); if the block
    raises, it goes back to stderr, since it may explain the failure.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            if failed:
                sys.stderr.write(text)
                sys.stderr.flush()
            else:
                append_to_log(text, log or current_log())


def quiet_onnxruntime() -> None:
    """ONNX Runtime logs only fatal errors: a failing run raises its error, which the job reports in one line."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)


def import_tensorflow() -> None:
    """Import TensorFlow once in this process, its native start-up lines kept off stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the lines absl leaves to TensorFlow's own filter
    with native_stderr():
        import tensorflow  # noqa: F401
