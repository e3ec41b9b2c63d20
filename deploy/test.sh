#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (unit, integration, e2e).
# Extra arguments go to pytest. "No tests collected" (exit 5) counts as a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/deploy/install.sh"
cd "$root"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
