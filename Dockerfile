# The Moneta node as a container image (README.md, "Deploying"):
#   docker build -t moneta .
#   docker run -d --name moneta -p 8080:8080 -v moneta-data:/var/lib/moneta moneta
# No HEALTHCHECK: the image has no HTTP client; orchestrators probe GET /healthz and /readyz
# on port 8080 themselves (deploy/k8s/statefulset.yaml).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit keeps the crate registry and the target folder between builds; the binary is
# copied out of the cached folder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin moneta \
 && install -m 0755 target/release/moneta /usr/local/bin/moneta

# The binary needs only glibc, libm and libgcc_s (all in the slim image): no package to install.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 moneta \
 && useradd --system --uid 10001 --gid moneta --no-create-home \
      --home-dir /var/lib/moneta --shell /usr/sbin/nologin moneta \
 && install -d -m 0700 -o moneta -g moneta /var/lib/moneta
COPY --from=build /usr/local/bin/moneta /usr/local/bin/moneta
COPY deploy/docker/config.toml /etc/moneta/config.toml
# Plain log lines (no terminal colours); MONETA_LOG_FORMAT=json for log shippers.
ENV NO_COLOR=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/moneta
# The data folder, the erasure list and the backup key (deploy/docker/config.toml).
VOLUME ["/var/lib/moneta"]
# 8080: the HTTP gateway. 7070: the cluster's peer port (used once the node has a cluster secret).
EXPOSE 8080 7070
STOPSIGNAL SIGTERM
ENTRYPOINT ["moneta"]
CMD ["serve", "--config", "/etc/moneta/config.toml"]
