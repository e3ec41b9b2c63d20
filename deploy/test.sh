#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (unit, integration, e2e).
# Extra arguments go to pytest. "No tests collected" (exit 5) counts as a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/deploy/install.sh"
cd "$root"
# The dashboard test drives a real browser: Debian's chromium (playwright brings only its driver).
# The deploy tests (tests/deploy) check the alert rules with promtool (Debian's prometheus), the
# units with systemd-analyze (systemd) and KEDA's schemas with node; deploy/tools/fetch.sh, run by
# those tests, brings helm and docker-compose from registry packages.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: apt-get install ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
