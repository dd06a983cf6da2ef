# One image for every unit of an exported Flow (docs/kubernetes.md): the
# gateway, heads, shards, replicas and singleton Peas all run `jina-wasm`,
# differing only by arguments.
#
#   docker build -t jina-wasm:0.1.0 .                                  # the runtime image
#   docker build --target executors -t jina-wasm-executors:0.1.0 .     # + the example executors in /executors/
#
# Not built in this repository's CI (its machines have no Docker engine).

# --- build: the host binary and the example executors -----------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip2 \
 && cargo build --release --locked --bin jina-wasm \
 && cargo build --release --locked --target wasm32-wasip2 \
      -p passthrough -p text-encoder -p sentence-segmenter -p vector-indexer -p match-merger

# --- base: a slim system, a non-root user, the directories units use ---------
FROM debian:bookworm-slim AS base
# Directories are created owned by the user, so Docker named volumes mounted on
# them start out writable (Kubernetes uses the pod's fsGroup instead).
RUN groupadd --gid 10001 jina \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin jina \
 && mkdir -p /executors /workspace /cache /flow \
 && chown 10001:10001 /workspace /cache
COPY --from=build /src/target/release/jina-wasm /usr/local/bin/jina-wasm
ENV JINA_WASM_CACHE_DIR=/cache
USER 10001:10001
ENTRYPOINT ["jina-wasm"]
CMD ["--help"]

# --- executors: the example executors, for the init container's copy --------
# Your own: FROM jina-wasm:0.1.0 + COPY my_executor.wasm /executors/
FROM base AS executors
COPY --from=build /src/target/wasm32-wasip2/release/*.wasm /executors/

# --- runtime (the default target) --------------------------------------------
FROM base AS runtime
