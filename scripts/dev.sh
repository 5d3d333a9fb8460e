#!/usr/bin/env bash
# Run imagerag offline: Azurite Blob on 127.0.0.1:10000 + devhost on 127.0.0.1:7071.
# Idempotent: creates .venv / node_modules / local.settings.json only when needed.
# Arguments are passed to `python -m devhost`. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

AZURITE_PORT=10000
# Azurite's well-known development account; the key is public and only opens the local emulator.
AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
BlobEndpoint=http://127.0.0.1:${AZURITE_PORT}/devstoreaccount1;"

source scripts/setup.sh

port_answers() {
  .venv/bin/python - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(0.5)
    sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))
PY
}

azurite_pid=""
devhost_pid=""
cleanup() {
  if [[ -n "$devhost_pid" ]] && kill -0 "$devhost_pid" 2>/dev/null; then
    kill -TERM "$devhost_pid" 2>/dev/null || true
  fi
  if [[ -n "$azurite_pid" ]] && kill -0 "$azurite_pid" 2>/dev/null; then
    log "stopping Azurite (pid $azurite_pid)"
    kill -TERM "$azurite_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$azurite_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$azurite_pid" 2>/dev/null || true
  fi
}

start_azurite() {
  mkdir -p .azurite
  if port_answers "$AZURITE_PORT"; then
    log "127.0.0.1:$AZURITE_PORT already answers: using the Azurite that is running there"
    return
  fi
  log "starting Azurite Blob on 127.0.0.1:$AZURITE_PORT (data in .azurite/, log in .azurite/azurite.log)"
  node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
    --location .azurite --skipApiVersionCheck --loose --disableTelemetry \
    >>.azurite/azurite.log 2>&1 &
  azurite_pid=$!
  trap cleanup EXIT
  for _ in $(seq 300); do
    port_answers "$AZURITE_PORT" && return
    kill -0 "$azurite_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 40 .azurite/azurite.log >&2 || true
  die "Azurite did not start on 127.0.0.1:$AZURITE_PORT (log above: .azurite/azurite.log)"
}

# Prints the images container name (IMAGES_CONTAINER from local.settings.json, default
# "images") after creating it in Azurite if it is missing.
ensure_images_container() {
  AZURITE_CONNECTION_STRING="$AZURITE_CONNECTION_STRING" .venv/bin/python - <<'PY'
import json, os
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

with open("local.settings.json", encoding="utf-8") as f:
    name = json.load(f).get("Values", {}).get("IMAGES_CONTAINER") or "images"
service = BlobServiceClient.from_connection_string(os.environ["AZURITE_CONNECTION_STRING"])
try:
    service.create_container(name)
except ResourceExistsError:
    pass
print(name)
PY
}

ensure_venv
ensure_node_modules
if [[ ! -f local.settings.json ]]; then
  log "creating local.settings.json from local.settings.example.json"
  cp local.settings.example.json local.settings.json
fi
start_azurite
container=$(ensure_images_container)

cat <<BANNER

------------------------------------------------------------------------------------
 imagerag is running offline.

 Drop files into Blob container '${container}' on Azurite:
     http://127.0.0.1:${AZURITE_PORT}/devstoreaccount1/${container}
   - one or more metadata*.json: JSON array of {"image_blob_path", "description"}
   - the images they list (.jpg .jpeg .png .gif .bmp .tiff .tif)
 Connection string (Azurite's public development account):
     ${AZURITE_CONNECTION_STRING}

 Functions host (devhost): http://127.0.0.1:7071   e.g. curl http://127.0.0.1:7071/api/ingestions
 Azurite log: .azurite/azurite.log          Stop: Ctrl-C
------------------------------------------------------------------------------------

BANNER

if [[ -z "$azurite_pid" ]]; then
  # Nothing of ours to clean up: hand the process over to devhost.
  exec .venv/bin/python -m devhost "$@"
fi

# We own Azurite, so stay around to stop it when devhost exits (exec would drop the trap).
# devhost runs in the background (so SIGINT/SIGTERM reach this shell) and gets SIGTERM from us.
.venv/bin/python -m devhost "$@" &
devhost_pid=$!
trap 'kill -TERM "$devhost_pid" 2>/dev/null || true' INT TERM
while true; do
  wait "$devhost_pid" && rc=0 || rc=$?
  # A status above 128 can mean our wait was interrupted by a trapped signal: wait again.
  if ((rc > 128)) && kill -0 "$devhost_pid" 2>/dev/null; then continue; fi
  break
done
exit "$rc"
