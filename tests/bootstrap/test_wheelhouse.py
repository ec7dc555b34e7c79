"""blueprint/wheelhouse.py offline: the real `pip download` against a local folder of tiny wheels
(PIP_NO_INDEX/PIP_FIND_LINKS), the manifest, its digest, the cache, and install.sh reading the manifest."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from blueprint import wheelhouse
from blueprint.wheelhouse import WheelhouseError
from tests.bootstrap.conftest import REPO, Fakes


def make_wheel(folder: Path, name: str, version: str) -> tuple[Path, str]:
    """A minimal valid pure-Python wheel (installable on any platform) and its SHA-256."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{name.replace('-', '_')}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{dist}.dist-info/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{dist}.dist-info/RECORD", record)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local 'index' of two wheels that pip download reads instead of the network."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    return folder


@pytest.fixture
def lock(index: Path, tmp_path: Path) -> Path:
    lines = ["# a lock like bootstrap/lock.py writes"]
    for name, version in (("demo-alpha", "1.0"), ("demo-beta", "2.1")):
        _, sha = make_wheel(index, name, version)
        lines.append(f"{name}=={version} --hash=sha256:{sha}")
    path = tmp_path / "requirements-onnx.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_build_downloads_the_pinned_wheels_and_writes_a_verified_manifest(lock: Path, tmp_path: Path) -> None:
    out = wheelhouse.build("onnx", tmp_path / "wh", requirements=lock, cache_dir=tmp_path / "cache")
    assert out == tmp_path / "wh"
    manifest = json.loads((out / "manifest.json").read_text())
    names = [entry["name"] for entry in manifest["files"]]
    assert names == ["demo_alpha-1.0-py3-none-any.whl", "demo_beta-2.1-py3-none-any.whl"]
    assert sorted(p.name for p in out.iterdir()) == [*names, "manifest.json"]
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert (entry["sha256"], entry["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert manifest["requirements_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert (manifest["profile"], manifest["python_version"], manifest["implementation"]) == ("onnx", "3.11", "cp")
    assert manifest["total_size"] == sum(entry["size"] for entry in manifest["files"])
    assert len(wheelhouse.manifest_digest(out)) == 64


def test_digest_is_content_addressed_and_the_cache_serves_a_second_build(
    lock: Path, index: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = wheelhouse.build("onnx", tmp_path / "a", requirements=lock, cache_dir=cache)
    for wheel in index.iterdir():  # the "network" is gone: only the cache can serve the second build
        wheel.unlink()
    second = wheelhouse.build("onnx", tmp_path / "elsewhere" / "b", requirements=lock, cache_dir=cache)
    assert wheelhouse.manifest_digest(first) == wheelhouse.manifest_digest(second)
    assert (cache / wheelhouse.requirements_digest(lock)).is_dir()
    # Another lock is another cache entry and another digest.
    other = tmp_path / "other.txt"
    other.write_text(lock.read_text().splitlines()[1] + "\n")
    assert wheelhouse.requirements_digest(other) != wheelhouse.requirements_digest(lock)


def test_a_corrupted_cache_is_downloaded_again(lock: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wheelhouse.build("onnx", tmp_path / "a", requirements=lock, cache_dir=cache)
    cached = next((cache / wheelhouse.requirements_digest(lock)).glob("demo_alpha*.whl"))
    cached.write_bytes(b"truncated")
    out = wheelhouse.build("onnx", tmp_path / "b", requirements=lock, cache_dir=cache)
    assert wheelhouse.manifest_digest(out) == wheelhouse.manifest_digest(tmp_path / "a")


def test_a_wheel_with_another_hash_fails_the_build(index: Path, tmp_path: Path) -> None:
    make_wheel(index, "demo-alpha", "1.0")
    lock = tmp_path / "requirements.txt"
    lock.write_text("demo-alpha==1.0 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(WheelhouseError, match="pip download failed"):
        wheelhouse.build("tf", tmp_path / "wh", requirements=lock, cache_dir=tmp_path / "cache")


def test_tampering_is_detected(lock: Path, tmp_path: Path) -> None:
    out = wheelhouse.build("onnx", tmp_path / "wh", requirements=lock, cache_dir=tmp_path / "cache")
    wheel = next(out.glob("demo_beta*.whl"))
    data = wheel.read_bytes()
    wheel.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WheelhouseError, match="SHA-256 differs"):
        wheelhouse.manifest_digest(out)
    wheel.write_bytes(data)
    (out / "extra.whl").write_bytes(b"x")
    with pytest.raises(WheelhouseError, match=r"unlisted \['extra.whl'\]"):
        wheelhouse.manifest_digest(out)


def test_rebuilding_into_a_wheelhouse_replaces_stale_wheels_and_refuses_other_files(lock: Path, tmp_path: Path) -> None:
    out = tmp_path / "wh"
    out.mkdir()
    (out / "old-0.1-py3-none-any.whl").write_bytes(b"stale")
    wheelhouse.build("onnx", out, requirements=lock, cache_dir=tmp_path / "cache")
    assert not (out / "old-0.1-py3-none-any.whl").exists()
    (out / "notes.txt").write_text("not a wheel")
    with pytest.raises(WheelhouseError, match=r"other files than a wheelhouse: notes.txt"):
        wheelhouse.build("onnx", out, requirements=lock, cache_dir=tmp_path / "cache")


def test_only_hash_pinned_locks_are_accepted(tmp_path: Path) -> None:
    lock = tmp_path / "r.txt"
    lock.write_text("numpy>=1.26\n")
    with pytest.raises(WheelhouseError, match="not a hash-pinned requirement"):
        wheelhouse.parse_requirements(lock)
    with pytest.raises(WheelhouseError, match="unknown profile 'torch'"):
        wheelhouse.build("torch", tmp_path / "wh")


@pytest.mark.parametrize("profile", sorted(wheelhouse.PROFILES))
def test_the_real_locks_parse_with_one_hash_per_pin(profile: str) -> None:
    pins = wheelhouse.parse_requirements(wheelhouse.requirements_path(profile))
    assert pins and all(len(pin.hashes) == 1 for pin in pins)
    assert wheelhouse.requirements_path(profile).parent == REPO / "bootstrap"


def test_pip_download_targets_the_nodes(tmp_path: Path) -> None:
    cmd = wheelhouse.pip_download_command(Path("r.txt"), tmp_path)
    joined = " ".join(cmd)
    for flag in ("download", "--only-binary=:all:", "--no-deps", "--require-hashes", "--implementation cp"):
        assert flag in joined
    assert "--python-version 3.11" in joined
    platforms = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--platform"}
    assert {"manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"} <= platforms
    assert not any("aarch64" in p or "2_35" in p for p in platforms)  # Amazon Linux 2023 has glibc 2.34


def test_cli_verify_prints_the_digest(lock: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = wheelhouse.build("onnx", tmp_path / "wh", requirements=lock, cache_dir=tmp_path / "cache")
    assert wheelhouse.main(["--verify", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == wheelhouse.manifest_digest(out)
    assert "2 wheels" in captured.err
    assert wheelhouse.main(["--verify", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_install_sh_installs_from_a_built_wheelhouse_without_the_index(
    lock: Path, tmp_path: Path, fakes: Fakes
) -> None:
    """The manifest this module writes is the one install.sh checks (fake python/pip; see test_install_script)."""
    out = wheelhouse.build("onnx", tmp_path / "wh", requirements=lock, cache_dir=tmp_path / "cache")
    result = fakes.run("--profile", "onnx", "--wheelhouse", str(out), requirements=lock)
    assert result.returncode == 0, result.stderr
    pip_call = next(line for line in (fakes.state / "calls").read_text().splitlines() if " -m pip " in line)
    for flag in ("--no-index", f"--find-links {out}", "--require-hashes", "--no-deps", "--only-binary=:all:"):
        assert flag in pip_call
