"""Run bootstrap/install.sh for real with bash, against fake python/pip/aws placed first on PATH."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bootstrap" / "install.sh"

# A fake interpreter: `-m venv DIR` makes DIR/bin/python (itself), `-m pip` records the install and
# fails as many times as $FAKE/pip_failures says, `-c` (the import check) fails when $FAKE/import_fails exists.
FAKE_PYTHON = r"""#!/usr/bin/env bash
set -u
printf '%s\n' "python $*" >>"$FAKE/calls"
case "$1" in
    --version) echo "Python 3.11.99" ;;
    -m)
        case "$2" in
            venv) dir="${*: -1}"; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python" ;;
            pip)
                left=$(cat "$FAKE/pip_failures" 2>/dev/null || echo 0)
                if ((left > 0)); then
                    echo $((left - 1)) >"$FAKE/pip_failures"; echo "fake pip: connection reset" >&2; exit 1
                fi
                req="${*: -1}"; cp "$req" "$FAKE/installed_requirements"; echo install >>"$FAKE/pip_installs" ;;
        esac ;;
    -c) if [[ -e "$FAKE/import_fails" ]]; then echo "ModuleNotFoundError: tensorflow" >&2; exit 1; fi ;;
esac
"""

# A fake AWS CLI: `aws s3 cp SRC DEST` copies $FAKE/s3/<bucket>/<key>, `aws s3 sync s3://PREFIX/ DIR` copies the
# folder $FAKE/s3/<bucket>/<prefix> (nothing, and success, when it does not exist, as the real one does);
# every argv is recorded verbatim.
FAKE_AWS = r"""#!/usr/bin/env bash
set -u
{ printf 'ARGV'; printf ' <%s>' "$@"; printf '\n'; } >>"$FAKE/aws_calls"
[[ "$1 $2" == "s3 cp" || "$1 $2" == "s3 sync" ]] || exit 2
src="${*: -2:1}"; dest="${*: -1}"
left=$(cat "$FAKE/aws_failures" 2>/dev/null || echo 0)
if ((left > 0)); then echo $((left - 1)) >"$FAKE/aws_failures"; echo "fake aws: throttled" >&2; exit 1; fi
if [[ $2 == sync ]]; then
    mkdir -p -- "$dest"
    if [[ -d "$FAKE/s3/${src#s3://}" ]]; then cp -R -- "$FAKE/s3/${src#s3://}/." "$dest/"; fi
    exit 0
fi
cp -- "$FAKE/s3/${src#s3://}" "$dest"
"""


@dataclass
class Fakes:
    """A sandbox: fake tools on PATH, a fake S3, and where the script installs."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "featurizer" / "venv"

    @property
    def weights_dir(self) -> Path:
        return self.root / "opt" / "featurizer" / "weights"

    def s3_put(self, uri: str, data: bytes) -> None:
        path = self.state / "s3" / uri.removeprefix("s3://")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def count(self, name: str) -> int:
        path = self.state / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    def run(self, *args: str, requirements: Path | str | None = None) -> subprocess.CompletedProcess[str]:
        req = str(requirements) if requirements is not None else str(REPO / "bootstrap" / "requirements.txt")
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "FAKE": str(self.state),
            "HOME": str(self.root),
            "LC_ALL": "C",
        }
        argv = ["bash", str(SCRIPT), "--venv", str(self.venv), "--requirements", req, "--retry-delay", "0", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("python3.11", FAKE_PYTHON), ("aws", FAKE_AWS)):
        (bin_dir / name).write_text(body)
        os.chmod(bin_dir / name, 0o755)
    (tmp_path / "state").mkdir()
    return Fakes(tmp_path)
