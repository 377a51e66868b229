# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=$(git describe --always) -t geminidb-patch-bot .
# Smoke test without a Docker engine: deploy/image-smoke (podman, buildah).
#
# Both base images are pinned by digest (tag@sha256:…): a rebuild of the same
# commit gets the same bases, and a moved tag cannot change the image
# unnoticed. The tag says what the digest is; the digest decides. To refresh
# (e.g. for a Go patch release or a distroless security update), look up the
# current digest of each tag's multi-arch index and replace it here:
#   crane digest golang:1.26.8-bookworm
#   crane digest gcr.io/distroless/static-debian12:nonroot
# (or `docker buildx imagetools inspect <tag>`: the "Digest:" line),
# keeping the golang tag on the Go version of go.mod.
FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/geminidb-patch-bot . \
 && mkdir -p /out/data

# distroless/static: CA certificates and tzdata, no shell, runs as nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/geminidb-patch-bot /usr/local/bin/geminidb-patch-bot
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV BOT_STORE=/data/geminidb-patch.db \
    BOT_HTTP_ADDR=:8080
VOLUME ["/data"]
EXPOSE 8080
# No shell or curl in the image: the binary checks its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/geminidb-patch-bot", "healthcheck"]
# SIGTERM makes the bot finish batch calls in flight for up to
# BOT_SHUTDOWN_TIMEOUT (30s): give the container longer than that before it
# is killed (docker run --stop-timeout 45, compose stop_grace_period: 45s,
# Kubernetes terminationGracePeriodSeconds: 45); Docker's default is 10s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/geminidb-patch-bot"]
