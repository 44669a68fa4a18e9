# syntax=docker/dockerfile:1
#
# veto's image: a release build on Debian bookworm, run on distroless (glibc, CA
# certificates, no shell, no package manager) as the unprivileged user 65532.
#
#   docker build -t registry.example.com/veto:0.1.0 .
#
# k8s/base/kustomization.yaml names the image (`images:`); the pod runs it with a read-only
# root filesystem and `serve --config /etc/veto/config/veto.yaml`.

# The toolchain the project is tested with (Cargo.toml's rust-version is the minimum).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Not compiled here, but Cargo.toml names these targets and cargo checks they exist.
COPY tests ./tests
COPY benches ./benches
# --locked: exactly the dependency versions of Cargo.lock, or fail. The cache mounts keep
# the crate registry and target/ between builds (BuildKit), so a code change recompiles
# veto, not its dependencies; the binary is copied out because the mount is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -D -m 0755 target/release/veto /out/veto

# Same Debian release as the build stage, so the glibc veto was linked against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/veto /usr/local/bin/veto
# The image's "nonroot" user, by number, so `runAsNonRoot: true` can verify it.
USER 65532:65532
# The admin listener (probes, metrics, rules API). The Check listener is on 127.0.0.1:9191
# in the pod and not exposed.
EXPOSE 9192
ENTRYPOINT ["/usr/local/bin/veto"]
CMD ["serve", "--config", "/etc/veto/config/veto.yaml"]
