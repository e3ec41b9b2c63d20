"""`python -m daemon.runtime.probe [/healthz|/readyz]`: a health check that sends the bearer token.

Every path of a fusewatch process needs `Authorization: Bearer <token>`, health included
(`daemon/console/web.py`). Container health checks cannot add a secret to an HTTP check:
Docker's `HEALTHCHECK` has no HTTP check at all, and Kubernetes never expands `$(VAR)` in a
probe's `httpHeaders` (only in `command`, `args` and `env`), so a token there would have to be
written into the pod spec. This probe runs inside the container instead, reads the token from
the environment the process got (`FUSEWATCH_WEB_TOKEN`, or the file `FUSEWATCH_WEB_TOKEN_FILE`
names) and asks `127.0.0.1:$FUSEWATCH_HEALTH_PORT` (default 8686, the web role's port; a
process without the web role serves health on its `--metrics-port`).

Standard library only and nothing of fusewatch imported, so a check costs a bare interpreter
start. Exit 0 when the answer is 200, else 1 with the reason on stderr (Docker and the kubelet
keep it with the check's result).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PORT = 8686
PATHS = ("/healthz", "/readyz", "/metrics")


class ProbeError(RuntimeError):
    """The probe could not even ask: no token, a bad port."""


def token_from(env: Mapping[str, str]) -> str:
    """The bearer token: `FUSEWATCH_WEB_TOKEN`, else the content of the file `FUSEWATCH_WEB_TOKEN_FILE` names."""
    token = env.get("FUSEWATCH_WEB_TOKEN", "")
    if not token and env.get("FUSEWATCH_WEB_TOKEN_FILE"):
        try:
            token = Path(env["FUSEWATCH_WEB_TOKEN_FILE"]).read_text().strip()
        except OSError as exc:
            raise ProbeError(f"cannot read FUSEWATCH_WEB_TOKEN_FILE: {exc.strerror or exc}") from None
    if not token:
        raise ProbeError(
            "no token: set FUSEWATCH_WEB_TOKEN (the web.token of the site file) or FUSEWATCH_WEB_TOKEN_FILE"
        )
    return token


def port_from(env: Mapping[str, str], given: int | None) -> int:
    """`--port`, else `FUSEWATCH_HEALTH_PORT`, else 8686."""
    raw = str(given) if given is not None else env.get("FUSEWATCH_HEALTH_PORT", "") or str(DEFAULT_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ProbeError(f"FUSEWATCH_HEALTH_PORT: expected a port number, got {raw!r}")
    return int(raw)


def probe(path: str, port: int, token: str, host: str = "127.0.0.1", timeout: float = 4.0) -> tuple[bool, str]:
    """Ask `http://host:port/path` with the token: (answered 200, what to say about it)."""
    request = urllib.request.Request(f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status == 200, f"{path}: {answer.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace").strip()
        return False, f"{path}: {exc.code} {body}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{path}: no answer from {host}:{port} ({reason})"


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.runtime.probe", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default="/healthz", choices=PATHS)
    parser.add_argument("--port", type=int, default=None, help="default: $FUSEWATCH_HEALTH_PORT, else 8686")
    args = parser.parse_args(argv)
    environment = os.environ if env is None else env
    try:
        ok, said = probe(args.path, port_from(environment, args.port), token_from(environment))
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    print(said, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
