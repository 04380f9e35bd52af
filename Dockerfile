# CodeBeaker server image.
#   docker build -t codebeaker:latest .
# Where no registry is reachable, scripts/build-server-image.sh builds the same file with a local Go
# image and the debootstrap base (GO_IMAGE=codebeaker-gobuild:local, RUNTIME_IMAGE=codebeaker-base:bookworm).
# The server drives the host's Docker engine through /var/run/docker.sock; see docker-compose.yml.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
# Lets build-server-image.sh find and prune the stage images of earlier builds.
LABEL org.codebeaker.stage=server-build
WORKDIR /src
# Build args reach RUN as environment variables (empty means Go's default). GOFLAGS=-mod=vendor when
# the build context carries a vendor/ folder: build-server-image.sh does that where the build cannot
# reach the module proxy.
ARG GOFLAGS=
ARG GOPROXY=
ENV CGO_ENABLED=0
# Modules first, so that editing code does not download them again.
COPY go.mod go.sum ./
RUN case "$GOFLAGS" in *-mod=vendor*) echo "vendored modules: skipping go mod download" ;; *) go mod download ;; esac
COPY . .
RUN go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/codebeaker ./cmd/codebeaker \
 && go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/codebeaker-agent ./cmd/codebeaker-agent

FROM ${RUNTIME_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin \
 && mkdir -p /var/lib/codebeaker
# The agent beside the server, where it looks for it; the server copies it into the data dir, whose
# host path the engine knows, and bind-mounts it into every sandbox as its init.
COPY --from=build /out/codebeaker /out/codebeaker-agent /usr/local/bin/
EXPOSE 5000
ENTRYPOINT ["codebeaker"]
CMD ["serve", "--addr", "0.0.0.0:5000", "--data-dir", "/var/lib/codebeaker"]
