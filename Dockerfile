# pgkpi container image: a static-enough release build on Debian 12 slim, running as nobody.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin pgkpi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pgkpi /usr/local/bin/pgkpi
USER nobody
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/pgkpi"]
