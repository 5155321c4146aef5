# syntax=docker/dockerfile:1
# The nodelens image for docker users. The canonical build is `cargo xtask image` (no
# docker engine needed), which writes the same image as an OCI archive; this Dockerfile
# packs the same static binaries with the same labels (a unit test in xtask/src/image.rs
# keeps the two equal), so the two cannot drift. Build the binaries first:
#
#   cargo xtask image
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/nodelens:0.1.0 --push .
#
# A static binary needs no libc, shell or CA bundle: nothing but the binary ships.
FROM scratch
ARG TARGETARCH
LABEL org.opencontainers.image.title="nodelens" \
      org.opencontainers.image.description="eBPF node agent for Kubernetes: run-queue, disk and memory latency per node and per pod" \
      org.opencontainers.image.source="https://github.com/nodelens/nodelens" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY target/image/${TARGETARCH}/nodelens /nodelens
EXPOSE 9560
# Runs as root with only CAP_BPF and CAP_PERFMON (see manifests/daemonset.yaml).
ENTRYPOINT ["/nodelens"]
