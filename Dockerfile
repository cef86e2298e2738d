# pgkpi container image (pgkpi and the pgkpi-load workload generator): release build on
# Debian 12, runtime on Debian 12 slim as nobody.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY collectors ./collectors
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pgkpi /src/target/release/pgkpi-load /usr/local/bin/
USER nobody
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/pgkpi"]
