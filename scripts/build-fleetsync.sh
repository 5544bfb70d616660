#!/usr/bin/env bash
# Sourced by the demo scripts: installs what is missing, builds fleetsync, sets $bin, and defines
# helpers to run PostgreSQL programs as the postgres user and to find a free loopback port.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install-deps.sh
echo "==> building fleetsync (first build compiles all dependencies: several minutes)"
swift build --product fleetsync 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
bin="$(swift build --show-bin-path)/fleetsync"
pgbin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
