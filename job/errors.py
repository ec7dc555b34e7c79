"""The job's errors, one hierarchy, and the one place that turns any failure into a line and an exit code.

    JobError                      a failure the job reports in one line
    ├── UsageError        exit 2  a bad argument or location: the user fixes it with a flag
    │   ├── LocationError         --input/--output/--weights cannot be used (no filesystem for its
    │   │                         scheme, not found, access denied, no such bucket, host unreachable)
    │   └── WeightsUnavailable    --weights imagenet without internet on the driver
    └── JobFailed         exit 1  the run could not produce a result; OUTPUT is left as it was
        ├── StorageError          a filesystem call failed during the run
        ├── CommitFailed          the swap into OUTPUT failed (previous output restored); an OSError too
        └── PcaUndefined          PCA cannot be computed on these features; a ValueError too

Spark surfaces Hadoop and Java failures as Py4J errors with a Java stack of 40+ lines.
`describe_java` reads the Java cause chain (while the JVM is still up) and names the cause in
words: connection refused to host:port, access denied, no such bucket, not found, unknown host.
"""

from __future__ import annotations

import re
import traceback

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class JobError(Exception):
    """A failure reported in one line; `exit_code` says which."""

    exit_code = EXIT_FAILED
    label = "run failed"


class UsageError(JobError, ValueError):
    """A bad argument or input location: reported in one line, exit code 2."""

    exit_code = EXIT_USAGE
    label = "error"


class LocationError(UsageError):
    """An input, output or weights location the job cannot use (exit code 2, nothing written)."""


class WeightsUnavailable(UsageError):
    """The requested weights could not be obtained (`--weights imagenet` offline): exit code 2, one line."""


class JobFailed(JobError, RuntimeError):
    """The run could not produce a result (exit code 1); OUTPUT is left untouched."""


class StorageError(JobFailed):
    """A filesystem operation failed while the job ran (exit code 1)."""


class CommitFailed(JobFailed, OSError):
    """The swap could not complete; OUTPUT holds its previous complete output again (or none)."""


class PcaUndefined(JobFailed, ValueError):
    """PCA is undefined for the featurized vectors (fewer than 2, or all constant): exit code 1."""


# ---- Java/Hadoop failures in words -----------------------------------------------------------------

# (pattern over "JavaClass: message" of each cause, what it means). The first match, walking the
# cause chain from the outermost exception inwards, names the failure.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), meaning)
    for pattern, meaning in (
        (r"UnsupportedFileSystemException|No FileSystem for scheme", "no filesystem for {scheme}"),
        (r"NoSuchBucket|bucket does not exist", "no such bucket"),
        (r"AccessDenied|AccessControlException|Permission denied|Status Code: 403|403 Forbidden", "access denied"),
        (r"UnknownHostException", "unknown host {host}"),
        (r"ConnectException|Connection refused", "connection refused{to_host}"),
        (r"SocketTimeoutException|ConnectTimeoutException", "connection timed out{to_host}"),
        (r"FileNotFoundException|PATH_NOT_FOUND|Path does not exist|No such file", "not found"),
        (r"FileAlreadyExistsException", "already exists"),
        (r"OutOfMemoryError", "out of memory"),
    )
)
_HOST_PORT = re.compile(r"\bto ([\w.-]+:\d+)|([\w.-]+:\d+) failed on connection")
_SCHEME = re.compile(r'scheme "?([\w+.-]+)"?')


def java_throwable(exc: BaseException):
    """The Java exception behind a Py4J or PySpark error, or None for a plain Python one."""
    for attribute in ("java_exception", "_origin"):
        throwable = getattr(exc, attribute, None)
        if throwable is not None:
            return throwable
    return None


def java_causes(exc: BaseException, limit: int = 12) -> list[tuple[str, str]]:
    """[(Java class name, message)] from the outermost cause inwards; [] if not a Java failure.

    Reads through Py4J, so call it while the JVM still runs (before SparkSession.stop()).
    """
    throwable = java_throwable(exc)
    causes: list[tuple[str, str]] = []
    try:
        while throwable is not None and len(causes) < limit:
            causes.append((str(throwable.getClass().getName()), str(throwable.getMessage() or "")))
            nxt = throwable.getCause()
            throwable = None if nxt is None or nxt.equals(throwable) else nxt
    except Exception:  # the gateway is gone: keep what was read
        pass
    if not causes and type(exc).__name__ in ("Py4JJavaError", "Py4JError"):
        text = str(getattr(exc, "errmsg", "") or "")
        causes.append(("py4j", text))
    return causes


def _first_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _python_exception_line(message: str) -> str:
    """The last line of a Python worker's traceback (`ValueError: ...`), as Spark forwards it."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def describe_java(causes: list[tuple[str, str]]) -> tuple[str, bool] | None:
    """(the failure in words, whether it is a recognised location problem) or None if not Java.

    Recognised causes (no filesystem, not found, access denied, no bucket, unknown host,
    connection refused/timed out) are location problems; anything else is described by its
    innermost Java class and first message line.
    """
    if not causes:
        return None
    for name, message in causes:  # a Python worker's own exception says more than Spark's wrappers
        if name.endswith("PythonException"):
            return f"a Python worker failed: {_python_exception_line(message)}", False
    for name, message in causes:
        text = f"{name}: {_first_line(message, 2000)}"  # later lines are stack traces: no matching there
        for pattern, meaning in _CAUSES:
            if pattern.search(text):
                hosts = _HOST_PORT.search(message)
                host = next((g for g in hosts.groups() if g), "") if hosts else ""
                scheme = _SCHEME.search(message)
                words = meaning.format(
                    scheme=f"{scheme.group(1)}://" if scheme else "this scheme",
                    host=_first_line(message).split(":")[0] or "",
                    to_host=f" to {host}" if host else "",
                )
                return words.strip(), meaning not in ("out of memory", "already exists")
    name, message = causes[-1]
    short = name.rsplit(".", 1)[-1]
    first = _first_line(message)
    return (f"{short}: {first}" if first else short), False


def at_location(exc: BaseException, what: str, uri: str) -> JobError | None:
    """A Java failure while using `uri` (`what`: --input, --output, --weights) as one line, or None."""
    described = describe_java(java_causes(exc))
    if described is None:
        return None
    words, location_problem = described
    cls = LocationError if location_problem else StorageError
    return cls(f"{what} {uri}: {words}")


def as_job_error(exc: BaseException) -> JobError:
    """Any exception as a JobError (call while the JVM still runs: Java causes are read through Py4J)."""
    if isinstance(exc, JobError):
        return exc
    described = describe_java(java_causes(exc))
    if described is not None:
        return StorageError(described[0]) if described[1] else JobFailed(described[0])
    text = _first_line(str(exc), 500)
    return JobFailed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def one_line(error: JobError) -> str:
    """`featurizer: error: ...` (exit 2) or `featurizer: run failed: ...` (exit 1): never more than a line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"featurizer: {error.label}: {text}"


def trace_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
