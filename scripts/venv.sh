# Sourced by scripts/run and scripts/test: make .venv match requirements.lock exactly.
# Needs only Python 3.11+ with pip and venv. Set PYTHON to choose the interpreter.

ensure_venv() {
    local python="${PYTHON:-}" candidate
    if [[ -z "$python" ]]; then
        # Run each candidate: a pyenv shim can exist for a version that is not selected.
        for candidate in python3 python3.11 python3.12 python3.13; do
            if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
                >/dev/null 2>&1; then
                python="$candidate"
                break
            fi
        done
    fi
    if [[ -z "$python" ]] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
        return 1
    fi
    if [[ ! -x .venv/bin/python ]]; then
        echo "==> creating .venv with $("$python" --version)"
        "$python" -m venv .venv
    fi
    # Reinstall only when the lock file or the package metadata changed since last time.
    local stamp
    stamp=$(cat requirements.lock pyproject.toml | .venv/bin/python -c \
        'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    if [[ "$(cat .venv/.idp-installed 2>/dev/null)" != "$stamp" ]]; then
        echo "==> installing requirements.lock into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
            --require-hashes -r requirements.lock
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
            --no-deps -e .
        echo "$stamp" > .venv/.idp-installed
    fi
}
