"""Where converted (fp32) and quantized (int8) ONNX models are kept between runs.

Two levels: this machine's disk (`job.onnx_engine.cache_dir()`), and, with `--model-cache URI`, a
folder any Hadoop file system can hold: S3 on EMR. The local level is what a laptop needs. On a
cluster it rarely helps: the driver runs in a YARN container on whichever node has room, and a
transient cluster's disks go with it, so every run would convert again (~7 s and ~1.5 GB of
TensorFlow on the driver) or quantize again (~40 s). The shared level survives the cluster.

A model is found by its key (the digest of what made it: weights, versions, settings), so a
shared folder can serve any number of runs, weights and clusters. A hit is checked with
onnxruntime before use (`validate`); an unreadable or invalid copy is a miss, never a failed run,
and the reason goes to the run's metadata (`cache_error`). A hit is copied to the nearer levels,
and to the farther ones that lack it, each with the JSON of what its key covers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    """One level of the cache: named files in one folder, read whole or written whole."""

    @property
    def folder(self) -> str: ...

    def location(self, name: str) -> str: ...

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when there is none; raises OSError when it cannot be read."""

    def write(self, name: str, data: bytes) -> None:
        """Write the file so readers see all of it or none of it; raises OSError on failure."""

    def exists(self, name: str) -> bool:
        """Whether the file is there (not read); raises OSError when that cannot be told."""


@dataclass(frozen=True)
class LocalStore:
    """A folder on this machine's disk."""

    root: Path

    @property
    def folder(self) -> str:
        return str(self.root)

    def location(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        from job.onnx_engine import write_atomically

        write_atomically(self.root / name, data)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()


@dataclass(frozen=True)
class HadoopStore:
    """A folder behind a Hadoop URI (s3://, file://, hdfs://), read and written by the driver's JVM.

    On S3 an object appears whole when its upload completes, so a model is written straight to its
    name. Elsewhere it goes to a unique temporary name first and is renamed into place, so a run that
    dies mid-write leaves no half file under the real name. Two runs writing the same new model at
    once write the same model (its name is its digest): whichever lands is fine, and a rename that
    finds the other's copy already there counts as done.
    """

    spark: object  # SparkSession (kept untyped: this module imports no Spark)
    uri: str

    @property
    def folder(self) -> str:
        return self.uri.rstrip("/")

    def location(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def read(self, name: str) -> bytes | None:
        from job.read import read_file

        try:
            return read_file(self.spark, self.location(name))
        except Exception as exc:  # Py4J wraps Hadoop's IOExceptions (AccessDenied, timeouts)
            raise OSError(_reason(exc)) from None

    def write(self, name: str, data: bytes) -> None:
        from job.write import write_bytes

        target = self.location(name)
        try:
            if target.split("://", 1)[0].lower() in OBJECT_STORES:
                write_bytes(self.spark, target, data)
            else:
                self._write_and_rename(target, self.location(f".{name}.{uuid.uuid4().hex}.tmp"), data)
        except OSError:
            raise
        except Exception as exc:
            raise OSError(_reason(exc)) from None

    def exists(self, name: str) -> bool:
        from job.read import hadoop_fs

        try:
            fs, path = hadoop_fs(self.spark, self.location(name))
            return bool(fs.exists(path))
        except Exception as exc:
            raise OSError(_reason(exc)) from None

    def _write_and_rename(self, target: str, temporary: str, data: bytes) -> None:
        from job.read import hadoop_fs
        from job.write import write_bytes

        fs, path = hadoop_fs(self.spark, target)
        _, source = hadoop_fs(self.spark, temporary)
        try:
            write_bytes(self.spark, temporary, data)
            if fs.exists(path):
                fs.delete(path, False)
            if not fs.rename(source, path) and not fs.exists(path):
                raise OSError(f"could not rename {temporary} to {target}")
        finally:
            if fs.exists(source):
                fs.delete(source, False)


# Schemes whose objects appear whole on close (no rename needed; a rename would be a second copy).
OBJECT_STORES = ("s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """The innermost Java cause of a Py4J failure (AccessDenied, ...), else the error's first line."""
    from job.errors import java_causes

    causes = java_causes(exc)
    if causes:
        name, message = causes[-1]
        return f"{name.rsplit('.', 1)[-1]}: {message.splitlines()[0] if message else ''}".rstrip(": ")
    return _first_line(exc)


def stores(spark: object | None, shared: str | None) -> list[Store]:
    """The levels a run uses, nearest first: this machine's cache folder, then `--model-cache` if given."""
    from job.onnx_engine import cache_dir

    levels: list[Store] = [LocalStore(cache_dir())]
    if shared:
        levels.append(HadoopStore(spark, shared))
    return levels


def through(
    levels: Sequence[Store] | None,
    name: str,
    covers: dict,
    record: dict,
    validate: Callable[[bytes], None],
    make: Callable[[], bytes],
) -> bytes:
    """`name` from the first level with a valid copy, else `make()`'s model, then written to every level.

    `levels`: nearest first (default: this machine's cache only). Adds the cache fields to `record`
    (metadata.json): from_cache, cache_file (where the model came from, or where it was first
    written), cache_levels and cache_error.
    """
    levels = list(levels) if levels is not None else stores(None, None)
    record.update(from_cache=False, cache_file=levels[0].location(name), cache_levels=[lv.folder for lv in levels])
    record.setdefault("cache_error", None)
    data = fetch(levels, name, record, validate)
    if data is None:
        data = make()
        store(levels, name, data, covers, record)
    return data


def fetch(levels: Sequence[Store], name: str, record: dict, validate: Callable[[bytes], None]) -> bytes | None:
    """The first valid copy of `name`, nearest level first; it is also written to the nearer levels.

    Sets record["from_cache"] and record["cache_file"] (where the copy came from); notes unreadable or
    invalid copies in record["cache_error"] and treats them as misses.
    """
    for depth, level in enumerate(levels):
        try:
            data = level.read(name)
        except OSError as exc:
            _note(record, f"could not read the cache at {level.location(name)}: {exc}")
            continue
        if data is None:
            continue
        try:
            validate(data)
        except Exception as exc:  # onnxruntime's own errors, or IncompatibleModel
            _note(record, f"cached model ignored ({level.location(name)}): {_first_line(exc)}")
            continue
        record["from_cache"] = True
        record["cache_file"] = level.location(name)
        lacking = [*levels[:depth], *_lacking(levels[depth + 1 :], name, record)]
        if lacking:  # the JSON is read only when there is somewhere to copy it
            _put(lacking, name, data, _covers(level, name), record)
        return data
    return None


def _lacking(levels: Sequence[Store], name: str, record: dict) -> list[Store]:
    """The farther levels without `name`: a model a machine already had locally still reaches a newly
    given --model-cache, so the next cluster finds it. Only existence is checked (one request per
    level, not a download); a level that cannot tell is noted and left alone."""
    found = []
    for level in levels:
        try:
            if not level.exists(name):
                found.append(level)
        except OSError as exc:
            _note(record, f"could not check the cache at {level.location(name)}: {exc}")
    return found


def _covers(level: Store, name: str) -> dict | None:
    """What `name`'s key covers, from its JSON beside it in `level` (None if missing or unreadable):
    a copy taken from a farther level keeps it, so every level says what its models are."""
    try:
        text = level.read(sidecar(name))
        return json.loads(text) if text is not None else None
    except (OSError, ValueError):
        return None


def sidecar(name: str) -> str:
    """The JSON file that records what a model's key covers."""
    return Path(name).with_suffix(".json").name


def store(levels: Sequence[Store], name: str, data: bytes, covers: dict, record: dict) -> None:
    """Write a new model (and a JSON of what its key covers) to every level; failures are noted, not raised."""
    _put(levels, name, data, covers, record)


def _put(levels: Sequence[Store], name: str, data: bytes, covers: dict | None, record: dict) -> None:
    for level in levels:
        try:
            level.write(name, data)
            if covers is not None:
                level.write(sidecar(name), json.dumps(covers, indent=2, sort_keys=True).encode())
        except OSError as exc:
            _note(record, f"could not write the cache at {level.location(name)}: {exc}")


def _note(record: dict, message: str) -> None:
    record["cache_error"] = f"{record['cache_error']}; {message}" if record.get("cache_error") else message
