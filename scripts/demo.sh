#!/usr/bin/env bash
# Load the demo data source "demo" (a dozen photos with descriptions) into the app that
# ./scripts/dev.sh runs, then print the playground's URL. Arguments go to scripts/demo.py
# (--help lists them; e.g. --url for another app, --key for its function key).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/setup.sh

ensure_venv
ensure_demo_photos
exec .venv/bin/python scripts/demo.py "$@"
