"""A real dashboard server for tests: uvicorn on a free port, the embedded Redis, a snapshot folder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from config.schema import FusewatchConfig, WebConfig
from daemon.console.web import COOKIE, serve, session_value
from daemon.telemetry.metrics import Telemetry
from streams.sinks import RedisOutputs
from tests.helpers import free_port

TOKEN = "s3cret-token"


@dataclass
class Web:
    config: FusewatchConfig
    url: str
    telemetry: Telemetry
    outputs: RedisOutputs
    snapshots: Path

    def client(self, token: str | None = TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    def browser(self, local_address: str | None = None) -> httpx.AsyncClient:
        """A client signed in the way a browser is: the session cookie, no Authorization header."""
        transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
        return httpx.AsyncClient(
            base_url=self.url, cookies={COOKIE: session_value(TOKEN)}, timeout=10, transport=transport
        )

    def anonymous(self, local_address: str) -> httpx.AsyncClient:
        """A client without credentials connecting from `local_address` (127.0.0.x: another client)."""
        return httpx.AsyncClient(
            base_url=self.url, timeout=10, transport=httpx.AsyncHTTPTransport(local_address=local_address)
        )

    @property
    def origin(self) -> str:
        """The dashboard's own Origin, as a browser on one of its pages sends it."""
        return self.url


@contextlib.asynccontextmanager
async def running_web(
    config: FusewatchConfig,
    snapshots: Path,
    local_roles: tuple[str, ...] = ("web",),
    telemetry: Telemetry | None = None,
    web: dict[str, object] | None = None,
) -> AsyncIterator[Web]:
    """The server on a free port; `web` overrides `web.*` settings (validated like a site file's)."""
    port = free_port()
    config = config.model_copy(
        update={
            "web": WebConfig.model_validate(config.web.model_dump() | (web or {}) | {"port": port}),
            "outputs": config.outputs.model_copy(update={"snapshots_dir": str(snapshots)}),
            "clips": config.clips.model_copy(
                update={"store": config.clips.store.model_copy(update={"path": str(snapshots.parent / "clips")})}
            ),
        }
    )
    telemetry = telemetry or Telemetry()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(config, telemetry, stop, token=TOKEN, local_roles=local_roles))
    outputs = RedisOutputs(config.redis)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                await probe.get(f"{url}/healthz")
                break
            await asyncio.sleep(0.05)
    try:
        yield Web(config, url, telemetry, outputs, snapshots)
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        await outputs.close()


def write_snapshot(root: Path, name: str) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:, :, 0] = 200
    Image.fromarray(pixels).save(path, format="JPEG")
    return name
