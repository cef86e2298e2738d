# pgkpi container image (pgkpi and the pgkpi-load workload generator), in two stages: a release
# build on Debian 12, then only the two binaries on distroless's Debian 12 image for programs
# linked against glibc and libgcc (no shell, no package manager; CA certificates for
# sslrootcert=system), run as its unprivileged user nonroot (uid 65532).
# Expected size about 40 MB: the base image about 23 MB (the Debian 12 libraries it holds), the
# two binaries 16.7 MB once stripped of debug information (pgkpi 13.2 MB, pgkpi-load 3.5 MB,
# measured on Debian 12). Not measured as an image: see the README, "Container image".
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY collectors ./collectors
# The release profile keeps line tables for profiling on the build machine; the image does not
# need them (symbols stay, so a panic's backtrace still names functions).
RUN cargo build --release --locked --bins \
 && strip --strip-debug target/release/pgkpi target/release/pgkpi-load

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/pgkpi /src/target/release/pgkpi-load /usr/local/bin/
USER nonroot
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/pgkpi"]
