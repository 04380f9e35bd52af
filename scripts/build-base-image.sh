#!/usr/bin/env bash
# Build codebeaker-base:bookworm, a Debian 12 minbase image, straight from Debian's package mirror
# (debootstrap + `docker import`), so that no container registry is needed.
# Usage: scripts/build-base-image.sh [--force]
#   Skipped when the image exists, unless --force.
#   CODEBEAKER_DEBIAN_MIRROR           default http://deb.debian.org/debian
#   CODEBEAKER_DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=codebeaker-base:bookworm
SUITE=bookworm
MIRROR=${CODEBEAKER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${CODEBEAKER_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

parse_force "$@"

ensure_docker

if [ "$force" -eq 0 ] && [ -n "$(image_id "$IMAGE")" ]; then
	log "$IMAGE exists, skipping (--force rebuilds it)"
	exit 0
fi

if ! have_cmd debootstrap || [ ! -e /usr/share/keyrings/debian-archive-keyring.gpg ]; then
	log "installing debootstrap ..."
	apt_install debootstrap debian-archive-keyring
fi

started=$SECONDS
workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/codebeaker-base.XXXXXX")
rootfs=$workdir/rootfs
raw_tag=codebeaker-base:raw-$$
upgraded_tag=codebeaker-base:upgraded-$$
cid=
cleanup() {
	if [ -n "$cid" ]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
	docker rmi "$upgraded_tag" "$raw_tag" >/dev/null 2>&1 || true
	# debootstrap mounts proc/sys in the target and may leave them behind when it fails.
	if [ -d "$rootfs" ]; then
		awk -v r="$rootfs/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
			while read -r m; do as_root umount -l "$m" || true; done
	fi
	as_root rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute) ..."
as_root debootstrap --variant=minbase \
	--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
	"$SUITE" "$rootfs" "$MIRROR" >"$workdir/debootstrap.log" 2>&1 || {
	tail -n 30 "$workdir/debootstrap.log" >&2
	die "debootstrap failed (full log above)"
}
log "debootstrap done in $((SECONDS - started))s"

# Make the tree look like Debian's own container images: apt sources for updates and security,
# no docs/man pages/translations (now or in later installs), no stale apt caches, no host identity.
configure_rootfs() {
	local r=$1 mirror=$2 security=$3
	rm -f "$r/etc/apt/sources.list"
	mkdir -p "$r/etc/apt/sources.list.d"
	cat >"$r/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
	cat >"$r/etc/dpkg/dpkg.cfg.d/codebeaker-excludes" <<'EXCLUDES'
# Containers need no documentation; keep the copyright files.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EXCLUDES
	cat >"$r/etc/apt/apt.conf.d/codebeaker-container" <<'APTCONF'
// Keep layers small: no downloaded .debs or package caches left behind, no translations.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APTCONF
	# No daemons get started by package scripts inside image builds.
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod 0755 "$r/usr/sbin/policy-rc.d"
	find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/usr/share/lintian/*
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb
	rm -rf "$r"/var/log/* "$r"/tmp/* "$r"/var/tmp/*
	: >"$r/etc/hostname"
	: >"$r/etc/resolv.conf"
	[ -e "$r/etc/machine-id" ] && : >"$r/etc/machine-id"
	return 0
}
as_root bash -c "$(declare -f configure_rootfs); configure_rootfs \"\$@\"" _ "$rootfs" "$MIRROR" "$SECURITY_MIRROR"

log "importing the tree as $raw_tag ..."
as_root tar -C "$rootfs" --numeric-owner -cf - . | docker import - "$raw_tag" >/dev/null

# The bookworm suite is the last point release; security fixes published since then live in
# bookworm-security. Apply them in a throwaway build, then flatten to a single layer.
log "applying updates from bookworm-updates and bookworm-security ..."
printf 'FROM %s\nRUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q && rm -rf /var/lib/apt/lists/*\n' "$raw_tag" |
	docker build --force-rm -q -t "$upgraded_tag" - >/dev/null
cid=$(docker create "$upgraded_tag" true)
docker export "$cid" | docker import \
	--change "ENV PATH=$PATH_ENV" \
	--change 'CMD ["bash"]' \
	--change "LABEL org.codebeaker.base=debootstrap-minbase-$SUITE" \
	--message "debootstrap --variant=minbase $SUITE $MIRROR" \
	- "$IMAGE" >/dev/null

log "built $IMAGE in $((SECONDS - started))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
