#!/usr/bin/env bash
# The test command: installs and starts what the tests need (Docker engine,
# runtime images), then runs gofmt, go vet, `go test -race ./...` and the
# Compose check of the server image. CI runs exactly this (.ci/run).
#   scripts/test.sh [go test flags...]   e.g. scripts/test.sh -run TestGuide ./rpc
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CODEBEAKER_ROOT"
started=$SECONDS

[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
have_cmd go || die "Go 1.26 or newer is needed (https://go.dev/doc/install); it is not in Debian 12's packages"

ensure_docker
"$CODEBEAKER_ROOT/scripts/build-runtime-images.sh"
"$CODEBEAKER_ROOT/scripts/install-deno.sh"

log "checking formatting and go vet ..."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || die "gofmt would change: $unformatted"
go vet ./...

log "running go test ..."
if [ $# -gt 0 ]; then
	go test -race -count=1 -timeout 25m "$@"
else
	go test -race -count=1 -timeout 25m ./...
	log "restarting and stopping the docker engine under a running server (alone: it disturbs other tests) ..."
	go test -race -count=1 -timeout 5m -tags disruptive -run 'TestEngineRestart|TestCloseWhileEngineStopped' ./rpc
	"$CODEBEAKER_ROOT/scripts/check-compose.sh"
fi
log "tests passed in $((SECONDS - started))s"
