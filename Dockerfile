# chat-server's container image, for Cloud Run (see cloudrun/ and terraform/).
#
# Two stages. `build` compiles the release binary in two steps so that the slow part, the
# dependencies, sits in a layer of its own that is reused as long as Cargo.toml and Cargo.lock
# do not change (the same idea as cargo-chef, without having to install it): first a skeleton
# crate (empty lib, empty main) is built against the real manifest and lockfile, then the real
# sources are copied in and only the crate itself is compiled. The final stage is distroless
# (glibc, libgcc, CA certificates, no shell, no package manager, no compiler) and holds nothing
# but the binary; it runs as the image's unprivileged `nonroot` user (65532).
#
# Configuration is the environment only (README "Configuration"); the server listens on $PORT,
# which Cloud Run sets: 8000 with cloudrun/ and terraform/, whose METRICS_PORT takes 8080 (where
# the metrics sidecar scrapes). EXPOSE names the server's own default.
#
# Only Dockerfile syntax that the classic builder also understands is used (no heredocs, no
# cache mounts), so Cloud Build's Kaniko (cloudrun/deploy.sh), the classic builder and BuildKit
# all build it as it is. Cloud Build has no layer cache of its own: Kaniko keeps the layers in
# the image repository, so step 1 below is reused there too until the manifest or lockfile
# changes (README "What a build costs").
#
#checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: the runtime image has no shell or client to run one, and Cloud Run ignores it; its startup probe (/readyz) and liveness probe (/healthz) are set in cloudrun/service.yaml and terraform/main.tf.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# 1. Dependencies only, cached until the manifest or the lockfile changes. The skeleton has an
#    empty src/lib.rs, and an empty main at src/main.rs and at every other target `path` the
#    manifest names (extra binaries), so cargo accepts the manifest as it is.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && sed -n 's/^path *= *"\(.*\.rs\)"$/\1/p' Cargo.toml | while read -r target; do \
        mkdir -p "$(dirname "$target")" && echo 'fn main() {}' > "$target"; \
    done \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The crate. Touching every source makes it newer than the skeleton's build, whatever
#    modification times the copy kept, so cargo rebuilds the crate rather than keeping the
#    skeleton's empty binary.
COPY src ./src
RUN find src -type f -exec touch {} + \
    && cargo build --release --locked \
    && cp target/release/chat-server /chat-server

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /chat-server /usr/local/bin/chat-server
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat-server"]
