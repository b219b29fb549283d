"""Start the server: the service (what answers) behind the app (the HTTP API) on uvicorn, until SIGTERM or Ctrl+C.

The first version is pulled, verified and loaded before uvicorn listens: a failure there is the command's one-line
error, as is an address that cannot be listened on (checked before the model loads). On SIGTERM uvicorn stops
accepting connections and lets the requests in flight finish; then the service stops its watcher and backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.publish.config import ModelLocation
from sqltune.serve.config import API_KEY_ENV, ServeConfig

if TYPE_CHECKING:
    from sqltune.serve.service import Service

log = get_logger(__name__)
GRACEFUL_SHUTDOWN_S = 30


def build_service(
    config: ServeConfig, *, location: ModelLocation | None, adapter: str | None, endpoint_url: str | None
) -> Service:
    """The Service for a registry channel (`location`) or one fixed `adapter`."""
    from sqltune.serve.service import ChannelSource, FixedSource, Service, default_versions_dir

    if location is not None:
        versions_dir = Path(config.versions_dir) if config.versions_dir else default_versions_dir(location)
        source = ChannelSource(location.registry(endpoint_url), config.channel, versions_dir)
        return Service(config, source, model_id=location.model_name, endpoint_url=endpoint_url)
    assert adapter is not None
    model_id = str(adapter).rstrip("/").rsplit("/", 1)[-1]
    return Service(config, FixedSource(adapter, endpoint_url), model_id=model_id, endpoint_url=endpoint_url)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port(host: str, port: int) -> None:
    """Fail before the model loads (minutes for a large one) when the address cannot be listened on."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise SqltuneError(f"cannot listen on {host}:{port} (--host/--port): {exc.strerror or exc}") from None


def serve(
    config: ServeConfig,
    *,
    location: ModelLocation | None = None,
    adapter: str | None = None,
    endpoint_url: str | None = None,
) -> None:
    import uvicorn

    from sqltune.serve.app import build_app

    _check_port(config.host, config.port)
    service = build_service(config, location=location, adapter=adapter, endpoint_url=endpoint_url)
    if config.candidates > 1 and "forkserver" in multiprocessing.get_all_start_methods():
        # The candidate check's worker processes start from a forkserver (the server has threads): import their
        # code there once, not in every worker of every request.
        multiprocessing.get_context("forkserver").set_forkserver_preload(["sqltune.predict.candidates"])
    if not _loopback(config.host) and config.api_key is None:
        log.warning("listening on %s without an API key: anyone who reaches it can use it (set %s)", config.host,
                    API_KEY_ENV)  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(service),
            host=config.host,
            port=config.port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            log_level="info",
        )
    )

    async def main() -> None:
        try:
            await service.start()
        except BaseException:
            await service.close()
            raise
        await server.serve()

    asyncio.run(main())
