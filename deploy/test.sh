#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (unit, integration, e2e).
# Extra arguments go to pytest. "No tests collected" (exit 5) counts as a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/deploy/install.sh"
cd "$root"
# The dashboard test drives a real browser: Debian's chromium (playwright brings only its driver).
if ! command -v chromium >/dev/null; then
  echo "test: apt-get install chromium"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
