# Shared by dev.sh and test.sh (sourced, from the repository root): prepares .venv and
# node_modules, each only when missing or out of date.
PYTHON="${PYTHON:-python3.11}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# .venv with Python 3.11 and requirements-dev.txt (re-installed only when requirements change).
ensure_venv() {
  if [[ ! -x .venv/bin/python ]] \
    || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 (or set PYTHON=...)"
    log "creating .venv with $PYTHON"
    "$PYTHON" -m venv --clear .venv
  fi
  [[ -f requirements.txt ]] || die "requirements.txt is missing"
  local stamp=.venv/.requirements.cksum want
  want=$(cat requirements.txt requirements-local.txt requirements-dev.txt | cksum)
  if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    log "installing Python requirements into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
    printf '%s\n' "$want" >"$stamp"
  fi
}

# node_modules from package-lock.json (Azurite); `npm ci` only when the lock changed.
ensure_node_modules() {
  command -v npm >/dev/null || die "npm not found: install Node.js 20+ (Azurite comes from npm)"
  if [[ ! -f package-lock.json ]]; then
    log "npm install (no package-lock.json)"
    npm install --no-audit --no-fund
    return
  fi
  local stamp=node_modules/.imagerag-lock.cksum want
  want=$(cat package.json package-lock.json | cksum)
  if [[ ! -x node_modules/.bin/azurite-blob || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    log "npm ci"
    npm ci --no-audit --no-fund
    printf '%s\n' "$want" >"$stamp"
  fi
}
