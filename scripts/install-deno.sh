#!/usr/bin/env bash
# Install what Deno sessions need. Idempotent: cheap when both are there.
#   - bubblewrap (Debian's package), the jail every Deno command runs in;
#   - Deno, from the npm package `deno` (it ships the real binary), pinned to
#     DENO_VERSION, under /opt/codebeaker/deno, with stable links at
#     /opt/codebeaker/deno/bin/deno and /usr/local/bin/deno.
# Prints the deno binary's path on the last line.
#   scripts/install-deno.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The version the tests pass with; change it here only after running them.
DENO_VERSION=${CODEBEAKER_DENO_VERSION:-2.9.6}
PREFIX=/opt/codebeaker/deno
LINK=$PREFIX/bin/deno

if ! have_cmd bwrap; then
	log "installing bubblewrap ..."
	apt_install bubblewrap
fi

# The npm package keeps the binary in a per-platform package
# (@deno/linux-x64-glibc, @deno/linux-arm64-glibc, ...).
find_binary() {
	local f
	for f in "$PREFIX"/node_modules/@deno/*/deno "$PREFIX"/node_modules/@deno/*/bin/deno; do
		if [ -f "$f" ] && [ -x "$f" ]; then
			printf '%s\n' "$f"
			return 0
		fi
	done
	return 1
}

installed_version() {
	"$1" --version 2>/dev/null | sed -n 's/^deno \([0-9][^ ]*\).*/\1/p'
}

bin=$(find_binary || true)
if [ -z "$bin" ] || [ "$(installed_version "$bin")" != "$DENO_VERSION" ]; then
	if ! have_cmd npm; then
		log "installing npm (needed to fetch the deno package) ..."
		apt_install nodejs npm
	fi
	log "installing deno@$DENO_VERSION with npm into $PREFIX ..."
	as_root mkdir -p "$PREFIX"
	as_root npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "deno@$DENO_VERSION"
	bin=$(find_binary) || die "npm installed deno@$DENO_VERSION, but no deno binary for $(uname -m) is under $PREFIX/node_modules/@deno"
fi
got=$(installed_version "$bin")
[ "$got" = "$DENO_VERSION" ] || die "$bin reports version '${got:-?}', want $DENO_VERSION"

# Stable paths: the server looks for deno on the PATH, then at $LINK.
as_root mkdir -p "$PREFIX/bin"
as_root ln -sfn "$bin" "$LINK"
as_root ln -sfn "$bin" /usr/local/bin/deno
log "deno $got and $(bwrap --version) are ready"
printf '%s\n' "$LINK"
