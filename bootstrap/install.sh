#!/usr/bin/env bash
# EMR bootstrap action: build the featurizer's isolated Python environment on every node.
#
# Why a venv: EMR installs its applications after bootstrap actions and may replace system packages;
# an isolated venv keeps the job's pinned numpy/pandas/pyarrow/TensorFlow intact, and the cluster's
# spark-env/spark-defaults point PySpark at it. pyspark itself comes from EMR's Spark.
#
# Why it exits non-zero on any failure: a failed bootstrap action fails the node (and cluster start),
# which is better than a half-installed node that fails tasks later.
#
# Usage:
#   install.sh --requirements URI [--profile tf|onnx] [--venv DIR] [--python python3.11]
#              [--weights-uri URI --weights-sha256 HEX [--weights-dir DIR]]
#              [--wheelhouse URI] [--retries N] [--retry-delay SECONDS]
# URIs are s3://... (fetched with `aws s3 cp`) or local paths. A second run with the same inputs is a
# fast no-op: a marker in the venv records the hash of the requirements, profile and interpreter.
# --wheelhouse: a folder built by `python -m blueprint.wheelhouse` (the lock's wheels + manifest.json),
# an s3:// prefix (copied with `aws s3 sync`, only when an install is needed) or a local path. pip then
# installs with --no-index --find-links DIR --require-hashes and never contacts a package index, so the
# node needs S3 only. Without it, pip installs the same hash-pinned wheels from the package index (PyPI
# or PIP_INDEX_URL), which needs internet access (a NAT gateway) from the nodes.
set -euo pipefail
umask 022

VENV=/opt/featurizer/venv
PYTHON=python3.11
PROFILE=tf
REQUIREMENTS=
WEIGHTS_URI=
WEIGHTS_SHA256=
WEIGHTS_DIR=/opt/featurizer/weights
WHEELHOUSE=
RETRIES=3
RETRY_DELAY=10
MARKER_NAME=.featurizer-bootstrap

log() { printf '%s featurizer-bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0"
    exit 0
}

parse_args() {
    while (($# > 0)); do
        case "$1" in
            --help | -h) usage ;;
            --venv | --python | --profile | --requirements | --weights-uri | --weights-sha256 | \
                --weights-dir | --wheelhouse | --retries | --retry-delay)
                (($# >= 2)) || die "option $1 needs a value"
                case "$1" in
                    --venv) VENV=$2 ;;
                    --python) PYTHON=$2 ;;
                    --profile) PROFILE=$2 ;;
                    --requirements) REQUIREMENTS=$2 ;;
                    --weights-uri) WEIGHTS_URI=$2 ;;
                    --weights-sha256) WEIGHTS_SHA256=$2 ;;
                    --weights-dir) WEIGHTS_DIR=$2 ;;
                    --wheelhouse) WHEELHOUSE=$2 ;;
                    --retries) RETRIES=$2 ;;
                    --retry-delay) RETRY_DELAY=$2 ;;
                esac
                shift 2
                ;;
            *) die "unknown argument: $1 (see --help)" ;;
        esac
    done
    [[ -n $REQUIREMENTS ]] || die "--requirements is required"
    case "$PROFILE" in
        tf) IMPORTS="tensorflow numpy pandas pyarrow PIL cv2 matplotlib ml_dtypes" ;;
        onnx) IMPORTS="onnxruntime onnx numpy pandas pyarrow PIL cv2 matplotlib" ;;
        *) die "unknown --profile '$PROFILE' (expected tf or onnx)" ;;
    esac
    [[ $RETRIES =~ ^[1-9][0-9]*$ ]] || die "--retries must be a positive integer, got '$RETRIES'"
    [[ $RETRY_DELAY =~ ^[0-9]+$ ]] || die "--retry-delay must be a whole number of seconds, got '$RETRY_DELAY'"
    [[ $VENV == /* && $WEIGHTS_DIR == /* ]] || die "--venv and --weights-dir must be absolute paths"
    case "$WHEELHOUSE" in
        s3://*/?*) ;;
        s3://*) die "--wheelhouse must be an s3://bucket/prefix (the folder of wheels and manifest.json), got '$WHEELHOUSE'" ;;
    esac
    if [[ -n $WEIGHTS_URI || -n $WEIGHTS_SHA256 ]]; then
        [[ -n $WEIGHTS_URI && -n $WEIGHTS_SHA256 ]] || die "--weights-uri and --weights-sha256 go together"
        [[ $WEIGHTS_SHA256 =~ ^[0-9a-f]{64}$ ]] || die "--weights-sha256 must be 64 lowercase hex digits"
        local name=${WEIGHTS_URI##*/}
        [[ $name =~ ^[A-Za-z0-9._-]+$ && $name != . && $name != .. ]] ||
            die "weights file name '$name' must be letters, digits, '.', '_' or '-'"
    fi
}

# retry CMD...: run CMD up to $RETRIES times, waiting longer after each failure (transient network errors).
retry() {
    local attempt=1
    until "$@"; do
        if ((attempt >= RETRIES)); then
            log "giving up after $attempt attempts: $1"
            return 1
        fi
        log "attempt $attempt/$RETRIES failed: $1; retrying in $((RETRY_DELAY * attempt))s"
        sleep "$((RETRY_DELAY * attempt))"
        attempt=$((attempt + 1))
    done
}

# fetch SRC DEST: s3:// through the AWS CLI (with retries), anything else as a local path.
fetch() {
    case "$1" in
        s3://*) retry aws s3 cp --only-show-errors "$1" "$2" ;;
        *) cp -- "$1" "$2" ;;
    esac
}

# fetch_dir SRC DEST: an s3:// prefix synced into DEST (with retries); a local folder is used as it is.
# Prints the folder to use.
fetch_dir() {
    case "$1" in
        s3://*)
            retry aws s3 sync --only-show-errors "${1%/}/" "$2" >&2 || return 1
            printf '%s\n' "$2"
            ;;
        *)
            [[ -d $1 ]] || {
                log "no such folder: $1"
                return 1
            }
            printf '%s\n' "$1"
            ;;
    esac
}

# manifest_value FILE KEY: the string value of a top-level "KEY": "VALUE" line of the wheelhouse's manifest.json
# (written one key per line by blueprint/wheelhouse.py).
manifest_value() {
    sed -n "s/^ \{0,1\}\"$2\": \"\([^\"]*\)\".*/\1/p" -- "$1" | head -n 1
}

# prepare_wheelhouse REQUIREMENTS DEST: fetch $WHEELHOUSE and check it was built for this lock and python.
# Prints the folder pip should use as --find-links.
prepare_wheelhouse() {
    local requirements=$1 dest=$2 dir manifest
    log "fetching wheelhouse $WHEELHOUSE"
    dir=$(fetch_dir "$WHEELHOUSE" "$dest") || die "could not fetch wheelhouse from $WHEELHOUSE"
    manifest="$dir/manifest.json"
    [[ -f $manifest ]] ||
        die "wheelhouse $WHEELHOUSE has no manifest.json (build it with: python -m blueprint.wheelhouse --profile $PROFILE --out DIR)"
    local built_for actual built_python python_version
    built_for=$(manifest_value "$manifest" requirements_sha256)
    actual=$(sha256sum -- "$requirements" | cut -d' ' -f1)
    [[ $built_for == "$actual" ]] ||
        die "wheelhouse $WHEELHOUSE was built for other requirements (sha256 ${built_for:-none}, these are $actual): rebuild it"
    built_python=$(manifest_value "$manifest" python_version)
    python_version=$("$PYTHON" --version 2>&1)
    python_version=${python_version#Python }
    [[ $python_version == "$built_python" || $python_version == "$built_python".* ]] ||
        die "wheelhouse $WHEELHOUSE holds wheels for Python ${built_python:-?}, but $PYTHON is $python_version"
    printf '%s\n' "$dir"
}

# ensure_dir DIR: create DIR owned by the current user, with sudo where the parent is root's (/opt).
ensure_dir() {
    if mkdir -p -- "$1" 2>/dev/null && [[ -w $1 ]]; then
        return 0
    fi
    if ! { sudo mkdir -p -- "$1" && sudo chown "$(id -u):$(id -g)" -- "$1"; }; then
        die "cannot create directory $1"
    fi
}

find_python() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        if command -v dnf >/dev/null 2>&1; then
            log "$PYTHON not found; installing it with dnf"
            retry sudo dnf install -y "$PYTHON" || die "dnf could not install $PYTHON"
        fi
        command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found on PATH (EMR 7.x nodes ship python3.11)"
    fi
}

import_check() {
    local code="import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)"
    # shellcheck disable=SC2086 # IMPORTS is a fixed, space-separated list of module names
    "$VENV/bin/python" -c "$code" $IMPORTS
}

install_venv() {
    local requirements=$1 fingerprint=$2 work=$3
    local marker="$VENV/$MARKER_NAME"
    if [[ -f $marker && $(<"$marker") == "$fingerprint" ]] && import_check 2>/dev/null; then
        log "environment $VENV is up to date (profile $PROFILE); nothing to install"
        return 0
    fi
    # Fetched only when an install is needed, and before the old environment is removed.
    local wheels=
    if [[ -n $WHEELHOUSE ]]; then
        wheels=$(prepare_wheelhouse "$requirements" "$work/wheelhouse") || exit 1
    fi
    if [[ -e $VENV ]]; then
        log "removing incomplete or outdated environment $VENV"
        rm -rf -- "$VENV"
    fi
    # Every wheel is pinned by its SHA-256; the lock is complete, so no dependency resolution either.
    local pip=("$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check
        --require-hashes --only-binary=:all: --no-deps)
    ensure_dir "$(dirname -- "$VENV")"
    log "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv -- "$VENV" || die "$PYTHON -m venv failed"
    if [[ -n $wheels ]]; then
        # Local files only: nothing to retry, and no index is ever contacted.
        log "installing pinned requirements (profile $PROFILE) from the wheelhouse, no package index"
        "${pip[@]}" --no-index --find-links "$wheels" -r "$requirements" ||
            die "pip install from the wheelhouse failed (see the messages above)"
    else
        log "installing pinned requirements (profile $PROFILE) from the package index"
        retry "${pip[@]}" --retries 5 --timeout 60 -r "$requirements" ||
            die "pip install failed (see the messages above)"
    fi
    log "checking imports: $IMPORTS"
    import_check || die "import check failed in $VENV"
    printf '%s' "$fingerprint" >"$marker"
    log "environment ready: $VENV/bin/python"
}

stage_weights() {
    local name=${WEIGHTS_URI##*/}
    local dest="$WEIGHTS_DIR/$name"
    ensure_dir "$WEIGHTS_DIR"
    if [[ -f $dest ]] && sha256sum -- "$dest" | grep -q "^$WEIGHTS_SHA256 "; then
        log "weights $dest already staged and verified"
        return 0
    fi
    local part="$dest.part.$$"
    log "staging weights $WEIGHTS_URI -> $dest"
    fetch "$WEIGHTS_URI" "$part" || {
        rm -f -- "$part"
        die "could not fetch weights from $WEIGHTS_URI"
    }
    local actual
    actual=$(sha256sum -- "$part" | cut -d' ' -f1)
    if [[ $actual != "$WEIGHTS_SHA256" ]]; then
        rm -f -- "$part"
        die "weights SHA-256 mismatch for $WEIGHTS_URI: expected $WEIGHTS_SHA256, got $actual"
    fi
    chmod 0644 -- "$part"
    mv -f -- "$part" "$dest"
    log "weights verified: $dest"
}

main() {
    parse_args "$@"
    find_python
    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
    trap "rm -rf -- '$work'" EXIT
    fetch "$REQUIREMENTS" "$work/requirements.txt" || die "could not fetch requirements from $REQUIREMENTS"
    local fingerprint
    fingerprint=$({
        cat -- "$work/requirements.txt"
        printf '\nprofile=%s\npython=%s\n' "$PROFILE" "$("$PYTHON" --version 2>&1)"
    } | sha256sum | cut -d' ' -f1)
    install_venv "$work/requirements.txt" "$fingerprint" "$work"
    if [[ -n $WEIGHTS_URI ]]; then
        stage_weights
    fi
    log "done"
}

main "$@"
