#!/usr/bin/env bash
# The run command: installs and starts what the service needs (Docker
# engine, runtime images), builds codebeaker and serves on localhost:5000.
#   scripts/serve.sh [codebeaker serve flags...]   e.g. scripts/serve.sh --addr 0.0.0.0:5000
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CODEBEAKER_ROOT"

[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
have_cmd go || die "Go 1.26 or newer is needed (https://go.dev/doc/install); it is not in Debian 12's packages"

ensure_docker
"$CODEBEAKER_ROOT/scripts/build-runtime-images.sh"
"$CODEBEAKER_ROOT/scripts/install-deno.sh"
log "building codebeaker ..."
go build -trimpath -o "$CODEBEAKER_ROOT/codebeaker" ./cmd/codebeaker
# Static: it runs inside every sandbox, whatever the image's libc.
CGO_ENABLED=0 go build -trimpath -o "$CODEBEAKER_ROOT/codebeaker-agent" ./cmd/codebeaker-agent
log "serving (Ctrl-C drains running commands; a second Ctrl-C exits at once) ..."
exec "$CODEBEAKER_ROOT/codebeaker" serve "$@"
