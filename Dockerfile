# shoal's container image: a Release build on Debian 12, run as an unprivileged user.
#   docker build -t shoal:0.1.0 .
# The Helm chart (helm/shoal) expects this image: uid/gid 10001, /bin/sh for its init step,
# shoal-bench for `helm test`, and a read-only root filesystem.

FROM debian:12 AS build
ARG DEBIAN_FRONTEND=noninteractive
# The same packages as BUILD_PKGS in the Makefile.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake gcc make pkg-config libuv1-dev libssl-dev libhiredis-dev libprotobuf-c-dev \
      protobuf-c-compiler libcmocka-dev libwslay-dev libhttp-parser-dev libargon2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Warnings fail the Debug builds of `make test`; optimised builds can add maybe-uninitialized
# false alarms that must not stop an image build.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DWERROR=OFF \
 && cmake --build /build -j"$(nproc)" --target shoal shoal-passwd shoal-bench \
 && install -D -m 0755 -t /out /build/shoal /build/shoal-passwd /build/shoal-bench

FROM debian:12-slim
ARG DEBIAN_FRONTEND=noninteractive
# Runtime libraries only: libuv, OpenSSL, hiredis, protobuf-c, wslay, http-parser, argon2.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libssl3 libhiredis0.14 libprotobuf-c1 libwslay1 libhttp-parser2.9 libargon2-1 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shoal \
 && mkdir -p /etc/shoal /run/shoal/conf.d \
 && printf 'listener 1883\nallow_anonymous true\nlog_dest stdout\n' > /etc/shoal/shoal.conf
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# MQTT, MQTT over TLS, WebSocket, WebSocket over TLS, node-to-node, metrics and health.
EXPOSE 1883 8883 8083 8084 17990 8080
ENTRYPOINT ["/usr/local/bin/shoal", "-c", "/etc/shoal/shoal.conf"]
