#!/usr/bin/env bash
# Build the sandbox images the server runs code in, without any container registry:
#   codebeaker-base:bookworm   Debian 12 minbase from debootstrap (scripts/build-base-image.sh)
#   codebeaker-<lang>:latest   from images/<lang>/Dockerfile, for python javascript go csharp
# Usage: scripts/build-runtime-images.sh [--force] [LANG...]
#   --force                 rebuild everything, even images that are up to date
#   LANG...                 build only these languages (default: all)
#   CODEBEAKER_BASE_IMAGE   base of the language images (default codebeaker-base:bookworm); set it to
#                           e.g. debian:bookworm-slim where a registry is reachable to skip debootstrap
# The images' sandbox user gets the uid:gid of sandbox/uid.go (the server's one definition of it).
# An image is up to date when an image labelled with the same content hash exists: the hash covers
# the files in images/<lang>/, the id of the base image and the sandbox uid:gid.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOCAL_BASE=codebeaker-base:bookworm
BASE_IMAGE=${CODEBEAKER_BASE_IMAGE:-$LOCAL_BASE}
HASH_LABEL=org.codebeaker.content-hash
ALL_LANGS=(python javascript go csharp)

force=0
langs=()
for arg in "$@"; do
	case "$arg" in
	--force) force=1 ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option: $arg" ;;
	*)
		[ -f "$CODEBEAKER_ROOT/images/$arg/Dockerfile" ] || die "no images/$arg/Dockerfile (known: ${ALL_LANGS[*]})"
		langs+=("$arg")
		;;
	esac
done
[ ${#langs[@]} -gt 0 ] || langs=("${ALL_LANGS[@]}")

# The sandbox uid:gid, from the line `const UID, GID = 71000, 71000` of sandbox/uid.go.
sandbox_ids=$(sed -n 's/^const UID, GID = \([0-9][0-9]*\), \([0-9][0-9]*\)$/\1 \2/p' "$CODEBEAKER_ROOT/sandbox/uid.go")
read -r SANDBOX_UID SANDBOX_GID <<<"$sandbox_ids" || true
[ -n "${SANDBOX_GID:-}" ] || die "cannot read 'const UID, GID = <uid>, <gid>' from sandbox/uid.go"

started=$SECONDS
ensure_docker

if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
	base_args=()
	[ "$force" -eq 1 ] && base_args+=(--force)
	"$CODEBEAKER_ROOT/scripts/build-base-image.sh" "${base_args[@]}"
elif [ -z "$(image_id "$BASE_IMAGE")" ]; then
	# The hash needs the base image's id, so fetch it before building.
	log "pulling $BASE_IMAGE ..."
	docker pull "$BASE_IMAGE"
fi
base_id=$(image_id "$BASE_IMAGE")
[ -n "$base_id" ] || die "base image $BASE_IMAGE not found"

# content_hash DIR: sha256 of every file under DIR (names and contents), the base image id and the
# sandbox uid:gid.
content_hash() {
	{
		(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		echo "base $base_id"
		echo "sandbox $SANDBOX_UID:$SANDBOX_GID"
	} | sha256sum | cut -d' ' -f1
}

built=() skipped=()
for lang in "${langs[@]}"; do
	dir=$CODEBEAKER_ROOT/images/$lang
	image=codebeaker-$lang:latest
	hash=$(content_hash "$dir")
	if [ "$force" -eq 0 ]; then
		match=$(docker images -q --no-trunc --filter "label=$HASH_LABEL=$hash" | head -n 1)
		if [ -n "$match" ]; then
			# Same content already built; make sure the tag points at it.
			[ "$(image_id "$image")" = "$match" ] || docker tag "$match" "$image"
			log "$image is up to date (${hash:0:12}), skipping"
			skipped+=("$lang")
			continue
		fi
	fi
	old_id=$(image_id "$image")
	log "building $image from images/$lang (base $BASE_IMAGE) ..."
	t0=$SECONDS
	# --force-rm: a failed step leaves no stopped container behind (the classic builder's default does).
	docker build --force-rm \
		--build-arg "BASE_IMAGE=$BASE_IMAGE" \
		--build-arg "SANDBOX_UID=$SANDBOX_UID" --build-arg "SANDBOX_GID=$SANDBOX_GID" \
		--label "$HASH_LABEL=$hash" \
		-t "$image" "$dir"
	# Drop the image this one replaces, unless something still uses it.
	if [ -n "$old_id" ] && [ "$old_id" != "$(image_id "$image")" ]; then
		docker rmi "$old_id" >/dev/null 2>&1 || true
	fi
	log "built $image in $((SECONDS - t0))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
	built+=("$lang")
done

log "done in $((SECONDS - started))s: built [${built[*]}] skipped [${skipped[*]}]"
docker images --filter 'reference=codebeaker-*' --format '    {{.Repository}}:{{.Tag}}  {{.Size}}'
