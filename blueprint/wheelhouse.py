"""Build a hash-checked wheelhouse for the EMR nodes, so the bootstrap installs with no package index.

A wheelhouse is a folder of the exact wheels a bootstrap profile's lock (``requirements*.txt``) pins,
for the nodes' platform (CPython 3.11, manylinux x86_64 up to glibc 2.34, as ``bootstrap/lock.py``
resolves), plus ``manifest.json``: each file's name, SHA-256 and size, the profile, the target and
the SHA-256 of the requirements file it was built from. Upload the folder to S3 under a
content-addressed prefix (``manifest_digest``) and pass it to ``install.sh --wheelhouse``, which then
runs pip with ``--no-index --find-links DIR --require-hashes``: the nodes need S3, not the internet.

Downloads are cached under ``$XDG_CACHE_HOME/featurizer/wheelhouse/<requirements digest>/`` (default
``~/.cache/...``; ``FEATURIZER_WHEELHOUSE_CACHE`` overrides the root), so a second build copies files.

    .venv/bin/python -m blueprint.wheelhouse --profile onnx --out build/wheelhouse-onnx
    .venv/bin/python -m blueprint.wheelhouse --verify build/wheelhouse-onnx     # prints the digest
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from blueprint.artifacts import BOOTSTRAP_DIR, REQUIREMENTS_BY_PROFILE

# The nodes' target, shared with bootstrap/lock.py (which resolves the locks for it): CPython 3.11
# (EMR 7.x) on manylinux x86_64 up to glibc 2.34 (Amazon Linux 2023). pip does not widen a manylinux
# --platform to older glibc tags by itself, so all are listed.
PYTHON_VERSION = "3.11"
GLIBC_TAGS = ["2_34", "2_28", "2_27", "2_26", "2_24", "2_17", "2_5"]
PLATFORMS = [f"manylinux_{tag}_x86_64" for tag in GLIBC_TAGS] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
# Profile -> lock file: the bootstrap's own table (install.sh --profile takes the same names).
PROFILES = REQUIREMENTS_BY_PROFILE
IMPLEMENTATION = "cp"
MANIFEST_NAME = "manifest.json"
# Bumped when the layout or the download command changes, so old caches are not reused.
FORMAT = 1

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>(?:\s+--hash=sha256:[0-9a-f]{64})+)$"
)


class WheelhouseError(RuntimeError):
    """A wheelhouse that cannot be built or does not match its manifest or lock."""


@dataclass(frozen=True)
class Pin:
    """One line of a lock: ``name==version --hash=sha256:...`` (one or more hashes)."""

    name: str
    version: str
    hashes: frozenset[str]


def requirements_path(profile: str) -> Path:
    """The lock file of a bootstrap profile (``tf`` or ``onnx``)."""
    try:
        return BOOTSTRAP_DIR / PROFILES[profile]
    except KeyError:
        raise WheelhouseError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}") from None


def parse_requirements(path: Path) -> list[Pin]:
    """Every pin of a hash-pinned lock; anything else (options, ranges, no hash) is an error."""
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if not match:
            raise WheelhouseError(f"{path.name}:{number}: not a hash-pinned requirement: {raw!r}")
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", match["rest"]))
        pins.append(Pin(match["name"].lower().replace("_", "-"), match["version"], hashes))
    if not pins:
        raise WheelhouseError(f"{path}: no requirements")
    return pins


def requirements_digest(requirements: Path) -> str:
    """SHA-256 over the lock's bytes and the download target: the cache key of a wheelhouse."""
    target = json.dumps([FORMAT, IMPLEMENTATION, PYTHON_VERSION, PLATFORMS]).encode()
    sha = hashlib.sha256(target + b"\0")
    sha.update(requirements.read_bytes())
    return sha.hexdigest()


def cache_root() -> Path:
    """Where downloads are kept between builds."""
    override = os.environ.get("FEATURIZER_WHEELHOUSE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featurizer" / "wheelhouse"


def pip_download_command(requirements: Path, dest: Path) -> list[str]:
    """The ``pip download`` that fetches the node wheels of ``requirements`` into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input"]
    cmd += ["--progress-bar", "off", "--only-binary=:all:", "--no-deps", "--require-hashes"]
    cmd += ["--implementation", IMPLEMENTATION, "--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    return [*cmd, "-r", str(requirements), "-d", str(dest)]


def build(
    profile: str, out_dir: Path | str, *, requirements: Path | None = None, cache_dir: Path | None = None
) -> Path:
    """Fill ``out_dir`` with the profile's wheels and ``manifest.json``; returns ``out_dir``.

    ``out_dir`` is created if needed and may only hold a previous wheelhouse (``*.whl`` and the
    manifest): stale wheels are removed, so the folder is exactly what the manifest lists.
    ``requirements`` overrides the profile's lock file (tests); ``cache_dir`` the cache root.
    """
    default = requirements_path(profile)  # also rejects an unknown profile
    req = Path(requirements) if requirements is not None else default
    pins = parse_requirements(req)
    cache, cached = _cached_download(req, pins, cache_dir if cache_dir is not None else cache_root())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strays = [p.name for p in out.iterdir() if not (p.is_file() and (p.suffix == ".whl" or p.name == MANIFEST_NAME))]
    if strays:
        raise WheelhouseError(f"{out} holds other files than a wheelhouse: {', '.join(sorted(strays))}")
    wanted = {name for name, _, _ in cached}
    for path in out.iterdir():
        if path.name not in wanted:
            path.unlink()
    for name, sha, _ in cached:
        target = out / name
        if target.is_file() and _sha256(target) == sha:
            continue
        target.unlink(missing_ok=True)
        shutil.copyfile(cache / name, target)
    manifest = {
        "format": FORMAT,
        "profile": profile,
        "requirements": req.name,
        "requirements_sha256": hashlib.sha256(req.read_bytes()).hexdigest(),
        "python_version": PYTHON_VERSION,
        "implementation": IMPLEMENTATION,
        "platforms": list(PLATFORMS),
        "files": [{"name": name, "sha256": sha, "size": size} for name, sha, size in cached],
        "total_size": sum(size for _, _, size in cached),
    }
    (out / MANIFEST_NAME).write_text(_canonical(manifest), encoding="utf-8")
    read_manifest(out)  # what was written must verify
    return out


def read_manifest(directory: Path | str) -> dict:
    """The wheelhouse's manifest, after checking that the folder holds exactly its files, bytes and all."""
    folder = Path(directory)
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WheelhouseError(f"{folder} is not a wheelhouse: no {MANIFEST_NAME}") from None
    listed = {entry["name"]: entry for entry in manifest["files"]}
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST_NAME}
    if present != set(listed):
        missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
        raise WheelhouseError(f"{folder} does not match its manifest: missing {missing}, unlisted {extra}")
    for name, entry in listed.items():
        file = folder / name
        if file.stat().st_size != entry["size"] or _sha256(file) != entry["sha256"]:
            raise WheelhouseError(f"{file}: size or SHA-256 differs from the manifest")
    return manifest


def manifest_digest(directory: Path | str) -> str:
    """SHA-256 (64 hex digits) of the verified manifest: same wheels for the same lock and target, same digest.

    Use it (or its first 16 digits) as the S3 prefix of the upload; it does not depend on where or
    when the wheelhouse was built.
    """
    return hashlib.sha256(_canonical(read_manifest(directory)).encode()).hexdigest()


def _cached_download(req: Path, pins: list[Pin], root: Path) -> tuple[Path, list[tuple[str, str, int]]]:
    """The cache folder and (file name, sha256, size) of every pinned wheel, downloading what it lacks."""
    folder = Path(root) / requirements_digest(req)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        found = _match(pins, folder)
        if found is None:
            # pip keeps files already there whose hash matches and downloads the rest.
            result = subprocess.run(pip_download_command(req, folder), capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise WheelhouseError(f"pip download failed for {req.name}:\n{result.stdout}{result.stderr}")
            found = _match(pins, folder)
            if found is None:
                raise WheelhouseError(f"pip download did not produce one wheel per pin of {req.name} in {folder}")
        return folder, found


def _match(pins: list[Pin], folder: Path) -> list[tuple[str, str, int]] | None:
    """One wheel per pin whose SHA-256 the pin allows, sorted by name; None when any pin has none.

    Files that match no pin (a partial download, an older wheel) are deleted.
    """
    by_hash: dict[str, Path] = {}
    for path in folder.glob("*.whl"):
        by_hash[_sha256(path)] = path
    chosen: list[tuple[str, str, int]] = []
    for pin in pins:
        hits = sorted(h for h in pin.hashes if h in by_hash)
        if not hits:
            return None
        chosen.append((by_hash[hits[0]].name, hits[0], by_hash[hits[0]].stat().st_size))
    keep = {name for name, _, _ in chosen}
    for path in folder.glob("*.whl"):
        if path.name not in keep:
            path.unlink()
    return sorted(chosen)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so concurrent builds do not download into the same folder at once."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _canonical(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blueprint.wheelhouse", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="build the wheelhouse into this folder")
    group.add_argument("--verify", type=Path, metavar="DIR", help="check an existing wheelhouse and print its digest")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="onnx", help="bootstrap profile (default onnx)")
    parser.add_argument("--cache-dir", type=Path, help=f"download cache (default {cache_root()})")
    args = parser.parse_args(argv)
    try:
        folder = args.verify if args.verify else build(args.profile, args.out, cache_dir=args.cache_dir)
        manifest = read_manifest(folder)
        digest = manifest_digest(folder)
    except WheelhouseError as error:
        print(f"wheelhouse: error: {error}", file=sys.stderr)
        return 1
    summary = f"profile {manifest['profile']}, {len(manifest['files'])} wheels, {manifest['total_size'] / 1e6:.1f} MB"
    print(f"{folder}: {summary}", file=sys.stderr)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
