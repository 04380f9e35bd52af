#!/usr/bin/env bash
# Smoke test of the compose deployment: build codebeaker:latest, start docker-compose.yml under a
# throwaway project name, wait up to 60 s for GET /health to answer 200, print it, and always tear down.
#   CODEBEAKER_HTTP_PORT  host port to publish (default 5000)
#   CODEBEAKER_DATA_DIR   data folder (default: a temporary folder, removed afterwards)
#   CODEBEAKER_SKIP_BUILD=1  use the existing codebeaker:latest
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT=codebeaker-check
PORT=${CODEBEAKER_HTTP_PORT:-5000}
WAIT=60

ensure_docker
if [ "${CODEBEAKER_SKIP_BUILD:-}" != 1 ]; then
	"$CODEBEAKER_ROOT/scripts/build-server-image.sh"
fi

# Compose v2 (`docker compose`) when present, else v1 (`docker-compose`), installed from Debian if neither is.
if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	compose=(docker-compose)
else
	log "installing docker-compose ..."
	apt_install docker-compose
	compose=(docker-compose)
fi
command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates

own_data_dir=
if [ -z "${CODEBEAKER_DATA_DIR:-}" ]; then
	CODEBEAKER_DATA_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/codebeaker-check.XXXXXX")
	own_data_dir=$CODEBEAKER_DATA_DIR
fi
export CODEBEAKER_DATA_DIR CODEBEAKER_HTTP_PORT=$PORT
compose_name=${compose[*]}
compose+=(-p "$PROJECT" -f "$CODEBEAKER_ROOT/docker-compose.yml")

teardown() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		log "server logs:"
		"${compose[@]}" logs --tail 50 codebeaker || true
	fi
	log "tearing down ..."
	"${compose[@]}" down --remove-orphans --timeout 10 || true
	# The server ran as root in its container; root may be needed to remove what it wrote.
	[ -n "$own_data_dir" ] && { rm -rf "$own_data_dir" 2>/dev/null || as_root rm -rf "$own_data_dir"; }
	exit "$rc"
}
trap teardown EXIT

log "starting the $PROJECT project with $compose_name (data: $CODEBEAKER_DATA_DIR, port $PORT) ..."
"${compose[@]}" up -d --no-build

log "waiting up to ${WAIT}s for http://127.0.0.1:$PORT/health ..."
deadline=$((SECONDS + WAIT))
until body=$(curl -fsS -m 5 "http://127.0.0.1:$PORT/health" 2>/dev/null); do
	[ "$SECONDS" -lt "$deadline" ] || die "GET /health did not answer 200 within ${WAIT}s (last: $(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health" 2>&1 || true))"
	sleep 1
done
log "GET /health -> 200"
printf '%s\n' "$body"

# A session through the Compose server: its sandbox runs the agent the server copied into the data dir,
# which the host's engine finds at the same path.
# Debian's python3, whose websockets the package provides (a python3 earlier in PATH may lack it).
/usr/bin/python3 -c 'import websockets' 2>/dev/null || apt_install python3-websockets
log "running a command in a python session through the Compose server ..."
/usr/bin/python3 - "$PORT" <<'PY'
import asyncio, json, sys
import websockets

async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/jsonrpc", max_size=None) as ws:
        async def call(i, method, params):
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if "error" in reply:
                sys.exit(f"{method}: {reply['error']}")
            return reply["result"]
        sid = (await call(1, "session.create", {"language": "python"}))["sessionId"]
        res = await call(2, "session.execute", {"sessionId": sid, "command": {"type": "execute_shell", "commandName": "sh", "args": ["-c", "echo compose-ok; id -u"]}})
        await call(3, "session.close", {"sessionId": sid})
        out = (res.get("result") or {}).get("stdout", "")
        if not res.get("success") or "compose-ok" not in out:
            sys.exit(f"execute_shell through Compose: {res}")
        print(out.strip())

asyncio.run(main(int(sys.argv[1])))
PY
log "a command ran through the Compose deployment"
