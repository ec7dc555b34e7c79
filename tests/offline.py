"""What "no package index reachable" means in the tests that run the real bootstrap (tests/bootstrap, tests/emr)."""

from __future__ import annotations

import os

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: every package index and proxy points here


def no_index_env() -> dict[str, str]:
    """pip's index and every proxy point at a closed port; this machine's pip config is not read.

    PIP_NO_INDEX is deliberately not set: the bootstrap itself must pass --no-index.
    """
    return {
        "PIP_INDEX_URL": f"{CLOSED}/simple",
        "PIP_CONFIG_FILE": os.devnull,
        "https_proxy": CLOSED,
        "HTTPS_PROXY": CLOSED,
        "http_proxy": CLOSED,
        "HTTP_PROXY": CLOSED,
        "no_proxy": "127.0.0.1",
        "NO_PROXY": "127.0.0.1",
    }
