# syntax=docker/dockerfile:1
# wspush in a container: docker build --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) -t wspush .
#                        docker run -p 8083:8083 -e WSPUSH_API_KEY=secret wspush

FROM rust:bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY assets ./assets
# The build context has no .git: the commit for `wspush --version` comes from here.
ARG GIT_COMMIT=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    WSPUSH_GIT_COMMIT="$GIT_COMMIT" cargo build --release --locked --bin wspush \
    && install -m 0755 target/release/wspush /usr/local/bin/wspush

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wspush
COPY --from=build /usr/local/bin/wspush /usr/bin/wspush
USER wspush
ENV WSPUSH_LISTEN=0.0.0.0:8083 \
    WSPUSH_NO_CONSOLE=true
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8083/healthz || exit 1
ENTRYPOINT ["/usr/bin/wspush"]
CMD ["serve"]
