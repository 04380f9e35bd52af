#!/usr/bin/env bash
# Build the server image (codebeaker:latest) from the top-level Dockerfile, with or without a registry.
# Usage: scripts/build-server-image.sh [--force]
#   --force                   rebuild the local Go builder image and build without the layer cache
#   CODEBEAKER_GO_IMAGE       Go builder image, e.g. golang:1.26-bookworm where a registry is reachable.
#                             Unset: codebeaker-gobuild:local is made from codebeaker-base:bookworm and
#                             the host's Go toolchain ($(go env GOROOT)), so no registry is needed.
#   CODEBEAKER_RUNTIME_IMAGE  base of the final image (default: codebeaker-base:bookworm with the local
#                             Go image, debian:bookworm-slim otherwise)
#   CODEBEAKER_VENDOR         1: vendor the modules into a temporary build context; 0: let the build
#                             download them; unset: vendor only when a container cannot reach the proxy
#   CODEBEAKER_IMAGE          tag to build (default codebeaker:latest)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${CODEBEAKER_IMAGE:-codebeaker:latest}
GOBUILD_IMAGE=codebeaker-gobuild:local
LOCAL_BASE=codebeaker-base:bookworm

parse_force "$@"

started=$SECONDS
ensure_docker
# The official Go tarball's place, often missing from PATH in non-login shells.
if ! have_cmd go && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/codebeaker-server.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# make_gobuild_image: the host's Go toolchain on top of the debootstrap base, standing in for the
# official golang image. Rebuilt only when the Go version or the base image changes.
make_gobuild_image() {
	have_cmd go || die "no Go toolchain on this host: install Go, or set CODEBEAKER_GO_IMAGE to a Go image you can pull"
	local goroot goversion base_id stamp
	goroot=$(go env GOROOT)
	goversion=$(go env GOVERSION)
	base_args=()
	[ "$force" -eq 1 ] && base_args+=(--force)
	"$CODEBEAKER_ROOT/scripts/build-base-image.sh" "${base_args[@]}"
	base_id=$(image_id "$LOCAL_BASE")
	stamp="$goversion $(go env GOOS)/$(go env GOARCH) $base_id"
	if [ "$force" -eq 0 ] && [ -n "$(image_id "$GOBUILD_IMAGE")" ] &&
		[ "$(docker image inspect -f '{{index .Config.Labels "org.codebeaker.gobuild"}}' "$GOBUILD_IMAGE")" = "$stamp" ]; then
		log "$GOBUILD_IMAGE is up to date ($goversion), skipping"
		return
	fi
	log "making $GOBUILD_IMAGE from $LOCAL_BASE and $goroot ($goversion) ..."
	local ctx=$workdir/gobuild
	mkdir -p "$ctx/go"
	# The toolchain's own test suite is not needed to build.
	tar -C "$goroot" --exclude=./test -cf - . | tar -C "$ctx/go" -xf -
	cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $LOCAL_BASE
ARG DEBIAN_FRONTEND=noninteractive
# ca-certificates: the module proxy is HTTPS. No git: modules come from the proxy (or vendor/).
RUN apt-get update -q \\
 && apt-get install -y -q --no-install-recommends ca-certificates \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin
COPY go /usr/local/go
ENV GOPATH=/go GOTOOLCHAIN=local PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.codebeaker.gobuild="$stamp"
DOCKERFILE
	docker build --force-rm -q -t "$GOBUILD_IMAGE" "$ctx" >/dev/null
	rm -rf "$ctx"
}

# proxy_reachable IMAGE: can a build container (default bridge network, like `docker build` RUN steps)
# reach the module proxy?
proxy_reachable() {
	local proxy_env=()
	[ -n "${GOPROXY:-}" ] && proxy_env=(-e "GOPROXY=$GOPROXY")
	# shellcheck disable=SC2016 # expanded by the container's shell
	timeout 60 docker run --rm "${proxy_env[@]}" "$1" sh -c \
		'cd "$(mktemp -d)" && go mod init probe >/dev/null 2>&1 && go list -m -versions golang.org/x/sys >/dev/null' \
		>/dev/null 2>&1
}

if [ -n "${CODEBEAKER_GO_IMAGE:-}" ]; then
	go_image=$CODEBEAKER_GO_IMAGE
	runtime_image=${CODEBEAKER_RUNTIME_IMAGE:-debian:bookworm-slim}
else
	make_gobuild_image
	go_image=$GOBUILD_IMAGE
	runtime_image=${CODEBEAKER_RUNTIME_IMAGE:-$LOCAL_BASE}
fi

context=$CODEBEAKER_ROOT
build_args=(--build-arg "GO_IMAGE=$go_image" --build-arg "RUNTIME_IMAGE=$runtime_image")
[ -n "${GOPROXY:-}" ] && build_args+=(--build-arg "GOPROXY=$GOPROXY")

vendor=${CODEBEAKER_VENDOR:-}
if [ -z "$vendor" ]; then
	if [ -n "$(image_id "$go_image")" ] && ! proxy_reachable "$go_image"; then
		log "build containers cannot reach the Go module proxy: vendoring the modules instead"
		vendor=1
	else
		vendor=0
	fi
fi
if [ "$vendor" = 1 ]; then
	have_cmd go || die "vendoring needs a Go toolchain on this host"
	# A throwaway copy of the tree, so that no vendor/ folder ever lands in the repository.
	log "vendoring modules into a temporary build context ..."
	context=$workdir/context
	mkdir -p "$context"
	tar -C "$CODEBEAKER_ROOT" --exclude=./.git --exclude=./data --exclude=./vendor -cf - . | tar -C "$context" -xf -
	(cd "$context" && go mod vendor)
	build_args+=(--build-arg "GOFLAGS=-mod=vendor")
fi

old_id=$(image_id "$IMAGE")
cache_args=()
[ "$force" -eq 1 ] && cache_args+=(--no-cache)
log "building $IMAGE (GO_IMAGE=$go_image, RUNTIME_IMAGE=$runtime_image) ..."
docker build --force-rm "${cache_args[@]}" "${build_args[@]}" -t "$IMAGE" -f "$context/Dockerfile" "$context"
# Drop the image this one replaces, unless something still uses it, and the build-stage images
# (Go sources plus build cache, ~500 MB each) of earlier builds: the newest one is kept as cache.
if [ -n "$old_id" ] && [ "$old_id" != "$(image_id "$IMAGE")" ]; then
	docker rmi "$old_id" >/dev/null 2>&1 || true
fi
docker images -q --filter dangling=true --filter label=org.codebeaker.stage=server-build |
	tail -n +2 | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $IMAGE in $((SECONDS - started))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
