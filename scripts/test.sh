#!/usr/bin/env bash
# Prepare the local toolchain (.venv + node_modules) and run the test suite.
# Arguments are passed to pytest, e.g. ./scripts/test.sh -m "not slow" -k ingest
# pytest starts its own Azurite (tests/conftest.py); nothing else is started here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/setup.sh

ensure_venv
ensure_node_modules
ensure_chromium      # the playground's browser tests (tests/test_playground_browser.py)
ensure_demo_photos   # the demo data source's photos (tests/test_playground_demo.py)

# Lint and types first: cheap, and a failure there is cheaper to read than a test failure.
log "ruff + mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check . || die "ruff format would change files: run .venv/bin/ruff format ."
.venv/bin/mypy
.venv/bin/mypy --strict imagerag activities orchestrations api function_app.py

# Security linters; each allowed finding has its reason in pyproject.toml / .checkov.yaml.
log "bandit + checkov"
.venv/bin/bandit -q -c pyproject.toml -r imagerag api activities orchestrations devhost function_app.py
.venv/bin/checkov --config-file .checkov.yaml

exec .venv/bin/python -m pytest "$@"
