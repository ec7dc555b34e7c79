#!/usr/bin/env bash
# One-step set-up on a fresh machine (Debian/Ubuntu-like, Python 3.10-3.12, Node 18+):
#   Java 17 for local Spark (installed with apt when missing), the Python virtualenv .venv
#   with every extra pinned by constraints.txt, and the npm AWS CDK CLI in node_modules/.
# Idempotent: a second run only checks (the venv is rebuilt when pyproject/constraints change).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# --- Java (Spark 3.5 runs on 8/11/17) ------------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
  log "Java not found: installing openjdk-17-jre-headless with apt"
  command -v apt-get >/dev/null || die "no java and no apt-get: install a Java 17 runtime, then rerun"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -n 1 | sed 's/^/setup: /' >&2

# --- shellcheck (lints the EMR bootstrap script in the tests; optional elsewhere) -------------
if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "installing shellcheck with apt (used by tests/bootstrap)"
  ( as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null ) \
    || log "warning: could not install shellcheck; its test will be skipped"
fi

# --- Python virtualenv ------------------------------------------------------------------------
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[ -n "$PYTHON" ] || die "no python3 found"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
  || die "$PYTHON is $("$PYTHON" --version 2>&1); TensorFlow 2.21 + PySpark 3.5 need Python 3.10-3.12"

stamp_now="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp_now" ]; then
  log "installing Python dependencies into .venv (first time: ~2 min, ~3 GB)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,onnx]'
  echo "$stamp_now" > .venv/.setup-stamp
else
  log ".venv is up to date"
fi

# --- npm AWS CDK CLI (for `npx cdk synth/deploy`) -----------------------------------------------
# The CLI needs Node.js >= 18 (package-lock.json); Debian 12's nodejs is 18.19.
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "npm not found: installing nodejs and npm with apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if command -v npm >/dev/null 2>&1 && [ -f package-lock.json ]; then
  if [ ! -x node_modules/.bin/cdk ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing the AWS CDK CLI into node_modules"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  fi
else
  log "warning: npm not found and apt-get unavailable; the CDK CLI tests will be skipped (install Node.js 18+ for cdk deploy)"
fi
# Local runs start their JVM ~5 s sooner with a class-data archive of Spark's classes (job/jvm_archive.py):
# made once here (~1-2 min: the job runs on a few synthetic images), reused while Java and Spark stay the same.
if ! .venv/bin/python -m job.jvm_archive --if-missing >&2; then
  log "warning: no JVM class archive (see above); local runs work, their JVM starts ~5 s slower"
fi
log "ready"
