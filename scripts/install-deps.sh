#!/usr/bin/env bash
# Installs what FleetSync needs on a fresh Debian 12 machine (run as root): PostgreSQL 15,
# zlib headers (wire compression), openssl + curl (TLS and HTTP/2 tests), and Caddy (two shore
# replicas behind a balancer, examples/Caddyfile).
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v caddy >/dev/null || need+=(caddy)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "==> Debian packages already present (postgresql, zlib1g-dev, openssl, curl, caddy)"
fi
command -v swift >/dev/null || export PATH=/opt/swift/usr/bin:$PATH
command -v swift >/dev/null || { echo "swift not found (expected at /opt/swift/usr/bin)"; exit 1; }
