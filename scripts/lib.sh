# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Sourced, not run.

log() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run CMD as root (directly, or through sudo when we are not root).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "root is needed to run: $*"
	fi
}

# apt_install PKG...: install Debian packages, running `apt-get update` once per script run.
_codebeaker_apt_updated=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
	if [ "$_codebeaker_apt_updated" -eq 0 ]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		_codebeaker_apt_updated=1
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# have_cmd NAME: like `command -v`, but also looks in the sbin folders, which a non-root PATH often lacks.
have_cmd() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# image_id REF: the local image id of REF, empty when it does not exist.
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# Repository root, whatever the caller's working directory.
CODEBEAKER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ensure_docker: run ensure-docker.sh once; scripts called from this one then skip the messages.
ensure_docker() {
	"$CODEBEAKER_ROOT/scripts/ensure-docker.sh"
	export CODEBEAKER_DOCKER_READY=1
}

# usage: print the comment block at the top of the running script (its help text).
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# parse_force ARGS...: the argument handling of scripts that take only --force and --help (which calls
# the script's own usage function). Sets force=1 when --force is given.
parse_force() {
	force=0
	for arg in "$@"; do
		case "$arg" in
		--force) force=1 ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown argument: $arg" ;;
		esac
	done
}
