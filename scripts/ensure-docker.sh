#!/usr/bin/env bash
# Make sure a Docker engine is installed and answering. Idempotent: cheap when it already runs.
#   - installs Debian's docker.io when dockerd is missing;
#   - starts the engine when `docker info` gets no answer (systemd when it runs the machine,
#     otherwise dockerd directly in the background, logging to /var/log/codebeaker-dockerd.log);
#   - waits up to CODEBEAKER_DOCKER_WAIT seconds (default 60) for it to answer.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKERD_LOG=/var/log/codebeaker-dockerd.log
WAIT=${CODEBEAKER_DOCKER_WAIT:-60}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# Scripts that call each other check once per run (see ensure_docker in lib.sh).
if [ "${CODEBEAKER_DOCKER_READY:-}" = 1 ] && engine_answers; then
	exit 0
fi

if ! have_cmd dockerd || ! have_cmd docker; then
	log "installing docker.io ..."
	apt_install docker.io
fi

if engine_answers; then
	log "docker engine is up ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
	exit 0
fi

dockerd_running() {
	local pid
	pid=$(cat /var/run/docker.pid 2>/dev/null || true)
	[ -n "$pid" ] && [ -d "/proc/$pid" ]
}

# `systemctl is-system-running` prints "offline" (or is missing) when systemd is not PID 1,
# which is the case in containers and in the CI machines: there we start the binary ourselves.
systemd_state=$(systemctl is-system-running 2>/dev/null || true)
case "$systemd_state" in
running | degraded | starting | initializing)
	log "starting docker with systemctl ..."
	as_root systemctl start docker
	;;
*)
	if dockerd_running; then
		log "dockerd is running but does not answer yet; waiting ..."
	else
		log "starting dockerd (log: $DOCKERD_LOG) ..."
		dockerd_pid=$(as_root sh -c "nohup dockerd >>'$DOCKERD_LOG' 2>&1 </dev/null & echo \$!")
	fi
	;;
esac

dockerd_pid=${dockerd_pid:-}
deadline=$((SECONDS + WAIT))
until engine_answers; do
	exited=0
	# Gone, or a zombie nobody reaps (PID 1 of a container may not).
	if [ -n "$dockerd_pid" ]; then
		state=$(awk '{ print $3 }' "/proc/$dockerd_pid/stat" 2>/dev/null || true)
		case "$state" in "" | Z | X) exited=1 ;; esac
	fi
	if [ "$exited" -eq 1 ] || [ "$SECONDS" -ge "$deadline" ]; then
		if [ "$exited" -eq 1 ]; then
			echo "error: dockerd exited before the engine answered." >&2
		else
			echo "error: the docker engine did not answer within ${WAIT}s." >&2
		fi
		echo "docker info says:" >&2
		timeout 10 docker info 2>&1 | tail -n 5 >&2 || true
		if [ -r "$DOCKERD_LOG" ]; then
			printf 'last lines of %s:\n' "$DOCKERD_LOG" >&2
			tail -n 20 "$DOCKERD_LOG" >&2
		fi
		exit 1
	fi
	sleep 1
done
log "docker engine is up ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
