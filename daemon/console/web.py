"""The operators' web dashboard, its JSON API, the live feed (SSE), /metrics and health checks.

A Starlette app served by uvicorn inside `fusewatch run` (role `web`). The pages are plain
HTML + JavaScript shipped in `daemon/console/static/` (no front-end build): the alert list loads
from `/api/alerts` and then follows `/api/events`, a server-sent-event stream fed by the
Redis pub/sub channels the fuse stage and acknowledgements publish on. A stream's timeline
(`/streams/<stream>`) draws `/api/summaries` and opens a clicked moment through
`/api/snapshots` and `POST /api/clips` (`daemon/console/moments.py`).

Every path, pages, API, metrics and health alike, needs the token: an
`Authorization: Bearer <token>` header (scrapers, probes, scripts) or the session cookie
that `/login` sets after the token was typed in (browsers). Anything else is answered 401.

It faces browsers and the network, so it defends itself: request bodies are bounded
(`web.max_body_bytes`, 413) before anything reads them; open live feeds are capped per
process (`web.max_live_connections`, 503) and use a Redis pool of their own, so the API
keeps its connections; malformed input is a 4xx that says what was wrong; a state-changing
request needs `application/json` (the login form: its own encoding) and, from a browser,
the dashboard's own `Origin`, so a form on another site or another port of the same host
cannot act with the operator's cookie; wrong tokens are throttled per client with a
doubling wait; every response carries CSP, frame, referrer and sniffing headers (HSTS and a
`Secure` cookie over TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import redis.asyncio as aioredis
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers, MutableHeaders, QueryParams
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.durations import parse_duration
from config.schema import FusewatchConfig, Identifier, WebConfig
from daemon.console.alerts import AlertFilter, AlertStore
from daemon.console.moments import (
    MAX_SNAPSHOT_RANGE_MS,
    MomentError,
    SpanClips,
    nearest_snapshot,
    parse_span,
)
from daemon.console.search import BadSearch, NoIndex, SearchService, parse_search, parse_similar
from daemon.console.summaries import MAX_PERIODS, SummaryStore
from daemon.telemetry.metrics import Telemetry
from daemon.telemetry.status import StatusStore
from streams.clip_store import open_store
from streams.kafka import client_options
from streams.media_span import MediaSpanReader
from streams.models import Alert, Clip
from streams.redis_schema import REDIS_DOWN, RedisKeys, redis_client, redis_text

log = logging.getLogger(__name__)
COOKIE = "fusewatch_session"
_PING_S = 15.0
_KAFKA_CHECK_S = 3.0
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM = "application/x-www-form-urlencoded"
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_SNAPSHOT_AROUND_MS = 60_000  # where /api/snapshots looks without from_ms/to_ms: a minute either side
# The pages load only their own scripts, styles, snapshots and clips, and never run inside a frame.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": _CSP,
    "x-frame-options": "DENY",
    # The login link carries the token: never pass a URL on to another site. (`no-referrer` would also turn
    # the Origin of the login form's own POST into `null`, which the cross-site check refuses.)
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


def _snapshot_url(alert: Alert) -> str | None:
    snapshot = alert.evidence.snapshot
    return f"/snapshots/{quote(snapshot)}" if snapshot else None


def _snapshot_stream(alert: Alert) -> str | None:
    """Snapshots are written as `<site>/<stream>/<window start>.jpg`."""
    parts = (alert.evidence.snapshot or "").split("/")
    return parts[1] if len(parts) == 3 else None


def _static(name: str) -> str:
    return (resources.files("daemon.console") / "static" / name).read_text(encoding="utf-8")


def same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (compare_digest on str refuses it)."""
    return secrets.compare_digest(given.encode(), expected.encode())


def session_value(token: str) -> str:
    """The cookie a browser holds after logging in: derived from the token, not the token itself."""
    return hmac.new(token.encode(), b"fusewatch-session-v1", hashlib.sha256).hexdigest()


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class SecurityHeaders:
    """ASGI middleware: CSP, frame, referrer and sniffing headers on every response; HSTS over TLS.

    Over TLS means the request's scheme is https: served with TLS, or behind a TLS-terminating
    proxy whose `X-Forwarded-Proto` uvicorn trusts (`--forwarded-allow-ips`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if tls:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before any handler runs.

    The body is read here (up to the limit, whatever Content-Length claims) and handed on in
    one piece, so no handler, authenticated or not, can be made to buffer more.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> Response:
        return _error(413, f"request body over {self.limit} bytes", headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before it finished sending: nobody to answer
            body: bytes = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class LoginThrottle:
    """Wrong tokens per client: after `attempts` in a row, each next try waits, doubling up to a maximum.

    A client is its address as uvicorn reports it (the forwarded one behind a trusted proxy).
    While a client waits, every token it sends is refused unchecked (429), right or wrong, so
    guessing cannot go faster than the backoff; a right token afterwards forgets the count, and
    so does `maximum` seconds without a wrong one. At most `max_clients` are remembered (the
    longest-quiet ones are forgotten first).
    """

    def __init__(
        self,
        attempts: int,
        backoff: float,
        maximum: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.maximum = max(maximum, backoff)
        self.max_clients = max_clients
        self.clock = clock
        # client -> (wrong tokens in a row, must wait until, last wrong one at); the quietest first
        self._clients: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds `client` must still wait before its next try (0: it may try now)."""
        entry = self._clients.get(client)
        return 0.0 if entry is None else max(entry[1] - self.clock(), 0.0)

    def failed(self, client: str) -> None:
        now = self.clock()
        failures, _, last = self._clients.pop(client, (0, 0.0, now))
        failures = 1 if now - last > self.maximum else failures + 1
        until = 0.0
        if failures >= self.attempts:
            until = now + min(self.backoff * 2 ** min(failures - self.attempts, 64), self.maximum)
        self._clients[client] = (failures, until, now)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _origin_allowed(request: Request, trusted: tuple[str, ...]) -> bool:
    origin = request.headers.get("origin", "").strip().lower()
    host = request.headers.get("host", "").strip().lower()
    return bool(origin) and ((bool(host) and origin == f"{request.url.scheme}://{host}") or origin in trusted)


class TokenAuth:
    """ASGI middleware: 401 for every request without the bearer token or the session cookie.

    `/login` is the one way in: it checks a typed-in (POST) or linked (`?token=`) token and
    sets the cookie. Wrong bearer tokens count towards the client's login throttle.

    It also refuses cross-site requests: a state-changing method (anything but GET, HEAD,
    OPTIONS) needs `application/json` (the login form: form encoding) and, when it carries
    an `Origin` (browsers always send one on POST) or rides on the cookie, the dashboard's
    own Origin or one of `web.trusted_origins`. A browser cannot send a cross-origin JSON
    POST without a CORS preflight, which this app never grants; scripts with the bearer
    token send no Origin and need none (a browser never adds that header by itself).
    """

    def __init__(
        self, app: ASGIApp, token: str, throttle: LoginThrottle, trusted_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token)
        self.throttle = throttle
        self.trusted_origins = trusted_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = self._refusal(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        path = request.url.path
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            client = _client(request)
            wait = self.throttle.wait(client)
            if wait > 0:
                return _too_many(wait)
            if not same(header[7:].strip(), self.token):
                self.throttle.failed(client)
                return self._unauthorized(request)
            self.throttle.succeeded(client)
            return self._cross_site(request, cookie=False)
        if same(request.cookies.get(COOKIE, ""), self.session):
            return self._cross_site(request, cookie=True)
        if path == "/login":
            return self._cross_site(request, cookie=False)
        return self._unauthorized(request)

    def _cross_site(self, request: Request, cookie: bool) -> Response | None:
        if request.method in _SAFE_METHODS:
            return None
        if (cookie or "origin" in request.headers) and not _origin_allowed(request, self.trusted_origins):
            shown = request.headers.get("origin", "(none)")[:200]
            return _error(403, f"cross-origin request refused: Origin {shown} is not this dashboard's")
        wanted = _FORM if request.url.path == "/login" else "application/json"
        if _media_type(request.headers) != wanted:
            return _error(415, f"a {request.method} here needs Content-Type: {wanted}")
        return None

    @staticmethod
    def _unauthorized(request: Request) -> Response:
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            return _error(
                401,
                "unauthorized: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="fusewatch"'},
            )
        return _login_page(request.url.path, status=401)


def _too_many(wait: float) -> Response:
    return _error(
        429,
        f"too many wrong tokens from this client: try again in {wait:.1f} s",
        headers={"Retry-After": str(math.ceil(wait))},
        retry_after_s=round(wait, 3),
    )


def _login_page(next_path: str, status: int, error: str = "", headers: dict[str, str] | None = None) -> HTMLResponse:
    page = _static("login.html").replace("{{next}}", quote(next_path, safe="/")).replace("{{error}}", error)
    return HTMLResponse(
        page,
        status_code=status,
        headers={"WWW-Authenticate": 'Bearer realm="fusewatch"', "Cache-Control": "no-store"} | (headers or {}),
    )


def _safe_next(raw: str | None) -> str:
    return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/"


class Dashboard:
    """Request handlers; one Redis client shared by the API, another one for the live feeds' subscriptions."""

    def __init__(
        self,
        config: FusewatchConfig,
        telemetry: Telemetry,
        token: str,
        local_roles: tuple[str, ...],
        stop: asyncio.Event,
        client: aioredis.Redis | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self.token = token
        self.local_roles = local_roles
        self.stop = stop
        self.redis = client or redis_client(config.redis)
        # Each open feed holds a pub/sub connection: a pool of their own, never bigger than the cap,
        # so a full house of feeds cannot take the connections the API answers with.
        self.live_redis = redis_client(config.redis)
        self.live_redis.connection_pool.max_connections = config.web.max_live_connections
        self.live_count = 0
        self.throttle = throttle or _throttle(config.web)
        self.alerts = AlertStore(self.redis, config.redis.key_prefix)
        self.status = StatusStore(self.redis, config.redis.key_prefix)
        self.summaries = SummaryStore(self.redis, config.redis.key_prefix)
        self.keys = RedisKeys(config.redis.key_prefix)
        self.snapshots = Path(config.outputs.snapshots_dir).resolve() if config.outputs.snapshots_dir else None
        self.clips = open_store(config.clips.store)
        self.search_service = SearchService(config.search)
        self.span_clips = SpanClips(
            config.clips, self.clips, lambda: MediaSpanReader(config.kafka, config.clips.max_keyframe_interval)
        )

    # ------------------------------------------------------------------ auth

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                form = parse_qs((await request.body()).decode("utf-8"), max_num_fields=16)
            except UnicodeDecodeError:
                return _login_page("/", status=400, error="the form must be sent as UTF-8")
            except ValueError:
                return _login_page("/", status=400, error="too many form fields")
            token = form.get("token", [""])[0]
            target = _safe_next(form.get("next", ["/"])[0])
        else:
            token = request.query_params.get("token", "")
            target = _safe_next(request.query_params.get("next"))
            if not token:
                return _login_page(target, status=401)
        client = _client(request)
        wait = self.throttle.wait(client)
        if wait > 0:
            return _login_page(
                target,
                status=429,
                error=f"too many wrong tokens: try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not same(token, self.token):
            self.throttle.failed(client)
            return _login_page(target, status=401, error="wrong token")
        self.throttle.succeeded(client)
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE, session_value(self.token), httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    # ------------------------------------------------------------------ pages

    async def index(self, request: Request) -> Response:
        return HTMLResponse(_static("dashboard.html"))

    async def alert_page(self, request: Request) -> Response:
        return HTMLResponse(_static("alert.html"))

    async def timeline_page(self, request: Request) -> Response:
        return HTMLResponse(_static("timeline.html"))

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("common.js", "dashboard.js", "alert.js", "timeline.js", "style.css"):
            return PlainTextResponse("not found", status_code=404)
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(_static(name), media_type=media)

    async def snapshot(self, request: Request) -> Response:
        if self.snapshots is None:
            return PlainTextResponse("snapshots are off", status_code=404)
        if "\x00" in request.path_params["path"]:
            return PlainTextResponse("bad snapshot path: it contains a NUL byte", status_code=400)
        path = (self.snapshots / request.path_params["path"]).resolve()
        if not path.is_relative_to(self.snapshots) or path.suffix != ".jpg" or not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    async def clip(self, request: Request) -> Response:
        """A clip from the store; FileResponse answers Range requests (206), so the player can seek."""
        name = request.path_params["name"].removesuffix(".mp4")
        try:
            path = await asyncio.to_thread(self.clips.local_path, name)
        except ValueError:
            return PlainTextResponse("not a clip name", status_code=400)
        if path is None:
            return PlainTextResponse("no such clip (not cut yet, or removed by retention)", status_code=404)
        return FileResponse(path, media_type="video/mp4")

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
        rows = [a.as_dict() | {"snapshot_url": _snapshot_url(a.alert)} for a in alerts]
        if params.get("group") == "incident":
            return await self._incidents(rows, [a.alert for a in alerts])
        return JSONResponse({"alerts": rows})

    async def _incidents(self, rows: list[dict[str, object]], alerts: list[Alert]) -> Response:
        """One row per incident (its newest alert), with the ids of the alerts it stands for."""
        try:
            incidents = await self.search_service.incidents(alerts)
        except NoIndex as exc:
            return _error(503, str(exc), headers={"Retry-After": "10"})
        by_id = {row["id"]: row for row in rows}
        heads = [by_id[incident.id] | {"incident": [alert.id for alert in incident.alerts]} for incident in incidents]
        return JSONResponse({"alerts": heads, "grouped": "incident"})

    async def get_alert(self, request: Request) -> Response:
        stored = await self.alerts.get(request.path_params["alert_id"])
        if stored is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        data = stored.as_dict()
        data["snapshot_url"] = _snapshot_url(stored.alert)
        data["snapshot_stream"] = stream = _snapshot_stream(stored.alert)
        data["zones"] = self._zones(stream)
        data["clips"] = await self._clips(stored.alert)
        return JSONResponse(data)

    def _zones(self, stream: str | None) -> list[dict[str, object]]:
        """The zones of the snapshot's source, to draw over it."""
        source = next((s for s in self.config.sources if s.id == stream), None)
        if source is None:
            return []
        return [{"name": zone.name, "polygon": zone.polygon} for zone in source.video.zones]

    async def _clips(self, alert: Alert) -> list[dict[str, object]]:
        """The alert's clips that the store still holds, by stream, each with its URL."""
        raw = await self.redis.hgetall(self.keys.clips_of(alert.id))
        out = []
        for value in raw.values():
            try:
                clip = Clip.model_validate_json(value)
            except ValueError:
                continue
            if await asyncio.to_thread(self.clips.has, clip.id):
                out.append(json.loads(clip.model_dump_json()) | {"url": f"/clips/{quote(clip.id)}.mp4"})
        return sorted(out, key=lambda clip: str(clip["stream"]))

    async def ack_alert(self, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        try:
            body: Any = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, nesting too deep
            body = None
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object such as {"by": "dana", "note": "on my way"}')
        by = str(body.get("by") or "operator")[:80]
        if await self.alerts.get(alert_id) is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        ack = await self.alerts.acknowledge(alert_id, by, str(body.get("note") or "")[:500])
        return JSONResponse({"id": alert_id, "ack": json.loads(ack.model_dump_json())})

    async def streams(self, request: Request) -> Response:
        return JSONResponse(await self.status.overview())

    async def search(self, request: Request) -> Response:
        """Moments matching a text query, hybrid-ranked (`daemon.console.search`)."""
        try:
            asked = parse_search(request.query_params)
            results = await self.search_service.search(asked)
        except BadSearch as exc:
            return _error(400, str(exc))
        except NoIndex as exc:
            return _error(503, str(exc), headers={"Retry-After": "10"})
        return JSONResponse({"query": asked.query, "ranking": asked.ranking, "results": results})

    async def similar_moments(self, request: Request) -> Response:
        """The moments nearest in meaning to one moment (query by example)."""
        try:
            where, limit = parse_similar(request.query_params)
            results = await self.search_service.similar(request.path_params["moment_id"], where, limit)
        except BadSearch as exc:
            return _error(400, str(exc))
        except NoIndex as exc:
            return _error(503, str(exc), headers={"Retry-After": "10"})
        if results is None:
            return _error(404, "no such moment")
        return JSONResponse({"moment": request.path_params["moment_id"], "results": results})

    async def similar_to_alert(self, request: Request) -> Response:
        """The past moments most like an alert's moment: has this happened before?"""
        stored = await self.alerts.get(request.path_params["alert_id"])
        if stored is None:
            return _error(404, "no such alert")
        try:
            limit = min(max(int(request.query_params.get("n", "5")), 1), 100)
            results = await self.search_service.like_alert(stored.alert, limit)
        except ValueError:
            return _error(400, "n must be an integer")
        except NoIndex as exc:
            return _error(503, str(exc), headers={"Retry-After": "10"})
        return JSONResponse({"alert": stored.alert.id, "results": results})

    async def list_summaries(self, request: Request) -> Response:
        """A stream's period summaries, oldest first (for a timeline): `stream` (required), `period`
        (`1m`, `1h` or seconds; default the shortest configured), `since_ms` (periods ending after
        it), `limit` (the newest that many, default 1440)."""
        params = request.query_params
        stream = params.get("stream", "")
        if not stream:
            return _error(400, "stream is required, e.g. /api/summaries?stream=lobby&period=1m")
        configured = sorted(self.config.summaries.periods) or [60.0]
        try:
            period = parse_duration(params.get("period") or configured[0])
            since = int(params["since_ms"]) if "since_ms" in params else None
            limit = min(max(int(params.get("limit", "1440")), 1), MAX_PERIODS)
        except ValueError:
            return _error(400, "period must be a duration such as 1m or 3600; since_ms and limit integers")
        if period < 1 or period != int(period):
            return _error(400, f"period must be whole seconds, at least 1 s, got {period:g} s")
        found = await self.summaries.recent(stream, int(period), since, limit)
        return JSONResponse(
            {"stream": stream, "period_s": int(period), "summaries": [s.model_dump(mode="json") for s in found]}
        )

    async def find_snapshot(self, request: Request) -> Response:
        """The snapshot of the window nearest `near_ms` (for a moment clicked on the timeline).

        `stream` and `near_ms` are required; `from_ms`/`to_ms` bound the window starts looked at
        (default a minute either side, at most an hour and a minute); `site` defaults to the
        configured source's, else every site folder is looked in. Only windows with detections
        have a snapshot, so 404 is an ordinary answer.
        """
        if self.snapshots is None:
            return _error(404, "snapshots are off (outputs.snapshots_dir is empty)")
        query = self._snapshot_query(request.query_params)
        if isinstance(query, Response):
            return query
        stream, site, near, from_ms, to_ms = query
        window_ms = round(self.config.windows.size * 1000)
        found = await asyncio.to_thread(nearest_snapshot, self.snapshots, site, stream, near, from_ms, to_ms, window_ms)
        if found is None:
            return _error(
                404, f"no snapshot of {stream} between {from_ms} and {to_ms} (only windows with detections have one)"
            )
        found_site, start = found
        url = f"/snapshots/{quote(found_site)}/{quote(stream)}/{start}.jpg"
        return JSONResponse({"stream": stream, "site": found_site, "window_start": start, "url": url})

    def _snapshot_query(self, params: QueryParams) -> tuple[str, str | None, int, int, int] | Response:
        try:
            stream = _IDENTIFIER.validate_python(params.get("stream", ""))
            site = _IDENTIFIER.validate_python(params["site"]) if params.get("site") else None
            near = int(params["near_ms"])
            from_ms = int(params.get("from_ms", near - _SNAPSHOT_AROUND_MS))
            to_ms = int(params.get("to_ms", near + _SNAPSHOT_AROUND_MS))
        except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
            return _error(400, "stream (a stream id) and near_ms are required; from_ms, to_ms integers; site a site id")
        if not 0 <= to_ms - from_ms <= MAX_SNAPSHOT_RANGE_MS:
            return _error(400, f"to_ms must be after from_ms, by at most {MAX_SNAPSHOT_RANGE_MS} ms")
        if site is None:
            source = next((s for s in self.config.sources if s.id == stream), None)
            site = self.config.site_of(source) if source is not None else None
        return stream, site, near, from_ms, to_ms

    async def cut_span(self, request: Request) -> Response:
        """`POST /api/clips` {stream, from_ms, to_ms}: a clip of any span still on `fw.media`.

        At most 2 min; the same span again answers the clip already cut (`reused`). One cut at
        a time per process: 429 with Retry-After meanwhile. 404 when the topic holds nothing of
        the stream then (or no longer holds it: retention), 503 when Kafka cannot be reached.
        """
        try:
            span = parse_span(await request.body(), self.span_clips.now_ms())
            cut = await self.span_clips.cut(span)
        except MomentError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return _error(exc.status, exc.message, headers=headers)
        clip = cut.clip
        if not cut.reused:
            log.info("web: cut %s (%d bytes) in %.0f ms", clip.id, clip.bytes, clip.cut_ms)
        data = json.loads(clip.model_dump_json()) | {"url": f"/clips/{quote(clip.id)}.mp4"}
        return JSONResponse({"clip": data, "reused": cut.reused})

    async def events(self, request: Request) -> Response:
        """Server-sent events: `alert` (the alert JSON) and `ack` ({id, ack}) as they happen.

        At most `web.max_live_connections` at once in this process; one more is answered 503
        (EventSource retries by itself), and the API keeps answering.
        """
        cap = self.config.web.max_live_connections
        if self.live_count >= cap:
            return _error(
                503,
                f"too many live connections ({cap} open, web.max_live_connections); retry later",
                headers={"Retry-After": "5"},
            )
        self.live_count += 1
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.live_count -= 1
                await _close_quietly(pubsub)

        # Subscribed before the headers go out: once the browser's EventSource is open, nothing is missed.
        pubsub = self.live_redis.pubsub()
        try:
            await pubsub.subscribe(self.keys.live, self.keys.acks_live)
        except BaseException:
            await release()
            raise
        return StreamingResponse(
            self._event_stream(pubsub, release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(release),
        )

    async def _event_stream(self, pubsub: PubSub, release: Callable[[], Any]) -> AsyncIterator[str]:
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
            await release()

    # ------------------------------------------------------------------ metrics and health

    async def metrics(self, request: Request) -> Response:
        return Response(self.telemetry.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "process": self.telemetry.process})

    async def readyz(self, request: Request) -> Response:
        checks = {"kafka": await self._kafka_answers(), "redis": await self._redis_answers()}
        consumers: dict[str, dict[str, object]] = {}
        for role in ("analyze", "fuse"):
            if role in self.local_roles:
                checks[f"{role}_loaded"] = role in self.telemetry.loaded
                health = self.telemetry.consumers.get(role)
                if health is not None:  # what the role's own consumer last saw of the broker and its log
                    consumers[role] = {"broker": health.broker, "stalled": list(health.stalled)}
                    checks[f"{role}_consumer"] = health.broker in ("ok", "unknown") and not health.stalled
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "checks": checks, "consumers": consumers}, status_code=200 if ready else 503
        )

    async def _kafka_answers(self) -> bool:
        """A metadata request through a real client with the configured TLS/SASL: a TCP connect is not enough."""
        try:
            admin = AIOKafkaAdminClient(
                **client_options(self.config.kafka), request_timeout_ms=int(_KAFKA_CHECK_S * 1000)
            )
        except (OSError, ValueError) as exc:  # the CA or client certificate cannot be read
            log.warning("readyz: kafka client not made: %s", exc)
            return False
        try:
            await asyncio.wait_for(self._describe(admin), _KAFKA_CHECK_S)
            return True
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug("readyz: kafka does not answer: %r", exc)
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    @staticmethod
    async def _describe(admin: AIOKafkaAdminClient) -> None:
        await admin.start()
        await admin.describe_cluster()

    async def _redis_answers(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (*REDIS_DOWN, TimeoutError):
            return False


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()


def create_app(
    config: FusewatchConfig,
    telemetry: Telemetry,
    token: str,
    local_roles: tuple[str, ...] = (),
    stop: asyncio.Event | None = None,
    dashboard: bool = True,
) -> Starlette:
    """The ASGI app; `dashboard=False` serves only /metrics, /healthz and /readyz (non-web roles)."""
    if not token:
        raise ValueError("the web app needs a token")
    throttle = _throttle(config.web)
    handlers = Dashboard(config, telemetry, token, local_roles, stop or asyncio.Event(), throttle=throttle)
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
            Route("/streams/{stream}", handlers.timeline_page),
            Route("/static/{name}", handlers.static_file),
            Route("/snapshots/{path:path}", handlers.snapshot),
            Route("/clips/{name}", handlers.clip),
            Route("/api/alerts", handlers.list_alerts),
            Route("/api/alerts/{alert_id}", handlers.get_alert),
            Route("/api/alerts/{alert_id}/ack", handlers.ack_alert, methods=["POST"]),
            Route("/api/streams", handlers.streams),
            Route("/api/summaries", handlers.list_summaries),
            Route("/api/search", handlers.search),
            Route("/api/moments/{moment_id}/similar", handlers.similar_moments),
            Route("/api/alerts/{alert_id}/similar", handlers.similar_to_alert),
            Route("/api/snapshots", handlers.find_snapshot),
            Route("/api/clips", handlers.cut_span, methods=["POST"]),
            Route("/api/events", handlers.events),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await handlers.redis.aclose()
        await handlers.live_redis.aclose()
        await handlers.search_service.close()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={RedisError: _redis_failed})
    app.state.handlers = handlers
    # Outermost last: headers on every answer, then the body bound, then auth and the cross-site checks.
    app.add_middleware(TokenAuth, token=token, throttle=throttle, trusted_origins=tuple(config.web.trusted_origins))
    app.add_middleware(BodyLimit, limit=config.web.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def _throttle(web: WebConfig) -> LoginThrottle:
    return LoginThrottle(web.login_attempts, web.login_backoff, web.login_backoff_max)


async def _redis_failed(request: Request, exc: Exception) -> Response:
    log.warning("web: redis: %s", exc)
    return _error(503, "redis is not available right now", headers={"Retry-After": "2"})


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `fusewatch run` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    config: FusewatchConfig,
    telemetry: Telemetry,
    stop: asyncio.Event,
    token: str,
    local_roles: tuple[str, ...] = (),
    dashboard: bool = True,
    port: int | None = None,
) -> None:
    """Serve the app until `stop`; open event streams are closed within a couple of seconds."""
    app = create_app(config, telemetry, token, local_roles, stop, dashboard)
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            host=config.web.host,
            port=config.web.port if port is None else port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
            lifespan="on",
        )
    )

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


def dashboard_url(config: FusewatchConfig, token: str | None, host: str | None = None) -> str:
    """The link that logs a browser in (the token travels once, then a cookie holds the session).

    Without a token: the sign-in page's address, safe to log.
    """
    shown = host or ("127.0.0.1" if config.web.host in ("0.0.0.0", "::") else config.web.host)
    login = f"http://{shown}:{config.web.port}/login"
    return login if token is None else f"{login}?token={quote(token)}"


def resolve_token(config: FusewatchConfig) -> tuple[str, bool]:
    """The configured token, or a fresh random one (and True) when the config has none."""
    if config.web.token is not None:
        return config.web.token.get_secret_value(), False
    return secrets.token_urlsafe(18), True
