"""The operators' web dashboard, its JSON API, the live feed (SSE), /metrics and health checks.

A Starlette app served by uvicorn inside `fusewatch run` (role `web`). The pages are plain
HTML + JavaScript shipped in `daemon/static/` (no front-end build): the alert list loads
from `/api/alerts` and then follows `/api/events`, a server-sent-event stream fed by the
Redis pub/sub channels the fuse stage and acknowledgements publish on.

Every path, pages, API, metrics and health alike, needs the token: an
`Authorization: Bearer <token>` header (scrapers, probes, scripts) or the session cookie
that `/login` sets after the token was typed in (browsers). Anything else is answered 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Generator
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, quote

import redis.asyncio as aioredis
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio.client import PubSub
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from config.schema import FusewatchConfig
from daemon.alerts import AlertFilter, AlertStore
from daemon.metrics import Telemetry
from daemon.status import StatusStore
from streams.sinks import REDIS_DOWN, RedisKeys, redis_client, redis_text

log = logging.getLogger(__name__)
COOKIE = "fusewatch_session"
_PING_S = 15.0


def _static(name: str) -> str:
    return (resources.files("daemon") / "static" / name).read_text(encoding="utf-8")


def same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (compare_digest on str refuses it)."""
    return secrets.compare_digest(given.encode(), expected.encode())


def session_value(token: str) -> str:
    """The cookie a browser holds after logging in: derived from the token, not the token itself."""
    return hmac.new(token.encode(), b"fusewatch-session-v1", hashlib.sha256).hexdigest()


class TokenAuth:
    """ASGI middleware: 401 for every request without the bearer token or the session cookie.

    `/login` is the one way in: it checks a typed-in (POST) or linked (`?token=`) token and
    sets the cookie.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token)

    def allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and same(header[7:].strip(), self.token):
            return True
        return same(request.cookies.get(COOKIE, ""), self.session)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if request.url.path == "/login" or self.allowed(request):
            await self.app(scope, receive, send)
            return
        response: Response
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            response = JSONResponse({"error": "unauthorized: send Authorization: Bearer <token>"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Bearer realm="fusewatch"'})
        else:
            response = _login_page(request.url.path, status=401)
        await response(scope, receive, send)


def _login_page(next_path: str, status: int, error: str = "") -> HTMLResponse:
    page = _static("login.html").replace("{{next}}", quote(next_path, safe="/")).replace(
        "{{error}}", error)
    return HTMLResponse(page, status_code=status, headers={"WWW-Authenticate": 'Bearer realm="fusewatch"'})


def _safe_next(raw: str | None) -> str:
    return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/"


class Dashboard:
    """Request handlers; one Redis client shared by all of them."""

    def __init__(self, config: FusewatchConfig, telemetry: Telemetry, token: str, local_roles: tuple[str, ...],
                 stop: asyncio.Event, client: aioredis.Redis | None = None) -> None:
        self.config = config
        self.telemetry = telemetry
        self.token = token
        self.local_roles = local_roles
        self.stop = stop
        self.redis = client or redis_client(config.redis)
        self.alerts = AlertStore(self.redis, config.redis.key_prefix)
        self.status = StatusStore(self.redis, config.redis.key_prefix)
        self.keys = RedisKeys(config.redis.key_prefix)
        self.snapshots = Path(config.outputs.snapshots_dir).resolve() if config.outputs.snapshots_dir else None

    # ------------------------------------------------------------------ auth

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            form = parse_qs((await request.body()).decode())
            token = form.get("token", [""])[0]
            target = _safe_next(form.get("next", ["/"])[0])
        else:
            token = request.query_params.get("token", "")
            target = _safe_next(request.query_params.get("next"))
            if not token:
                return _login_page(target, status=401)
        if not same(token, self.token):
            return _login_page(target, status=401, error="wrong token")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, session_value(self.token), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    # ------------------------------------------------------------------ pages

    async def index(self, request: Request) -> Response:
        return HTMLResponse(_static("dashboard.html"))

    async def alert_page(self, request: Request) -> Response:
        return HTMLResponse(_static("alert.html"))

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("common.js", "dashboard.js", "alert.js", "style.css"):
            return PlainTextResponse("not found", status_code=404)
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(_static(name), media_type=media)

    async def snapshot(self, request: Request) -> Response:
        if self.snapshots is None:
            return PlainTextResponse("snapshots are off", status_code=404)
        path = (self.snapshots / request.path_params["path"]).resolve()
        if not path.is_relative_to(self.snapshots) or path.suffix != ".jpg" or not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    # ------------------------------------------------------------------ API

    async def list_alerts(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = min(max(int(params.get("limit", "100")), 1), 1000)
            since = int(params["since_ms"]) if "since_ms" in params else None
        except ValueError:
            return JSONResponse({"error": "limit and since_ms must be integers"}, status_code=400)
        where = AlertFilter(site=params.get("site") or None, event=params.get("event") or None, since_ms=since)
        alerts = await self.alerts.recent(limit, where)
        return JSONResponse({"alerts": [a.as_dict() for a in alerts]})

    async def get_alert(self, request: Request) -> Response:
        stored = await self.alerts.get(request.path_params["alert_id"])
        if stored is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        data = stored.as_dict()
        snapshot = stored.alert.evidence.snapshot
        data["snapshot_url"] = f"/snapshots/{quote(snapshot)}" if snapshot else None
        return JSONResponse(data)

    async def ack_alert(self, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        by = str(body.get("by") or "operator")[:80]
        if await self.alerts.get(alert_id) is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        ack = await self.alerts.acknowledge(alert_id, by, str(body.get("note") or "")[:500])
        return JSONResponse({"id": alert_id, "ack": json.loads(ack.model_dump_json())})

    async def streams(self, request: Request) -> Response:
        return JSONResponse(await self.status.overview())

    async def events(self, request: Request) -> Response:
        """Server-sent events: `alert` (the alert JSON) and `ack` ({id, ack}) as they happen."""
        # Subscribed before the headers go out: once the browser's EventSource is open, nothing is missed.
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.keys.live, self.keys.acks_live)
        return StreamingResponse(self._event_stream(pubsub), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                 background=BackgroundTask(_close_quietly, pubsub))

    async def _event_stream(self, pubsub: PubSub) -> AsyncIterator[str]:
        names = {self.keys.live: "alert", self.keys.acks_live: "ack"}
        try:
            yield "retry: 2000\n: connected\n\n"
            idle = 0.0
            while not self.stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    idle += 1.0
                    if idle >= _PING_S:
                        idle = 0.0
                        yield ": ping\n\n"
                    continue
                channel = redis_text(message["channel"])
                yield f"event: {names.get(channel, 'message')}\ndata: {redis_text(message['data'])}\n\n"
        finally:
            await _close_quietly(pubsub)

    # ------------------------------------------------------------------ metrics and health

    async def metrics(self, request: Request) -> Response:
        return Response(self.telemetry.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "process": self.telemetry.process})

    async def readyz(self, request: Request) -> Response:
        checks = {"kafka": await self._kafka_reachable(), "redis": await self._redis_answers()}
        for role in ("analyze", "fuse"):
            if role in self.local_roles:
                checks[f"{role}_loaded"] = role in self.telemetry.loaded
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def _kafka_reachable(self) -> bool:
        for server in self.config.kafka.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    async def _redis_answers(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (*REDIS_DOWN, TimeoutError):
            return False


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def create_app(config: FusewatchConfig, telemetry: Telemetry, token: str, local_roles: tuple[str, ...] = (),
               stop: asyncio.Event | None = None, dashboard: bool = True) -> Starlette:
    """The ASGI app; `dashboard=False` serves only /metrics, /healthz and /readyz (non-web roles)."""
    if not token:
        raise ValueError("the web app needs a token")
    handlers = Dashboard(config, telemetry, token, local_roles, stop or asyncio.Event())
    routes = [
        Route("/metrics", handlers.metrics),
        Route("/healthz", handlers.healthz),
        Route("/readyz", handlers.readyz),
    ]
    if dashboard:
        routes += [
            Route("/login", handlers.login, methods=["GET", "POST"]),
            Route("/", handlers.index),
            Route("/alerts/{alert_id}", handlers.alert_page),
            Route("/static/{name}", handlers.static_file),
            Route("/snapshots/{path:path}", handlers.snapshot),
            Route("/api/alerts", handlers.list_alerts),
            Route("/api/alerts/{alert_id}", handlers.get_alert),
            Route("/api/alerts/{alert_id}/ack", handlers.ack_alert, methods=["POST"]),
            Route("/api/streams", handlers.streams),
            Route("/api/events", handlers.events),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await handlers.redis.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.handlers = handlers
    app.add_middleware(TokenAuth, token=token)
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `fusewatch run` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(config: FusewatchConfig, telemetry: Telemetry, stop: asyncio.Event, token: str,
                local_roles: tuple[str, ...] = (), dashboard: bool = True, port: int | None = None) -> None:
    """Serve the app until `stop`; open event streams are closed within a couple of seconds."""
    app = create_app(config, telemetry, token, local_roles, stop, dashboard)
    server = _EmbeddedServer(uvicorn.Config(
        app, host=config.web.host, port=config.web.port if port is None else port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=3, lifespan="on",
    ))

    async def stop_server() -> None:
        await stop.wait()
        server.should_exit = True

    try:
        async with asyncio.TaskGroup() as tasks:
            stopper = tasks.create_task(stop_server())
            await server.serve()
            stopper.cancel()
    finally:
        # Cancelled (a second Ctrl-C, a crash elsewhere): uvicorn skips its shutdown, so close the sockets here.
        for listener in getattr(server, "servers", []):
            listener.close()
    if not server.started:
        raise OSError(f"web: could not listen on {config.web.host}:{config.web.port if port is None else port}")


def dashboard_url(config: FusewatchConfig, token: str, host: str | None = None) -> str:
    """The link that logs a browser in (the token travels once, then a cookie holds the session)."""
    shown = host or ("127.0.0.1" if config.web.host in ("0.0.0.0", "::") else config.web.host)
    return f"http://{shown}:{config.web.port}/login?token={quote(token)}"


def resolve_token(config: FusewatchConfig) -> tuple[str, bool]:
    """The configured token, or a fresh random one (and True) when the config has none."""
    if config.web.token is not None:
        return config.web.token.get_secret_value(), False
    return secrets.token_urlsafe(18), True

