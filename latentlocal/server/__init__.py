"""``latentlocal serve``: an OpenAI-compatible chat server for the latent methods.

``app`` has the routes, ``options`` reads a request into a method and its settings, ``jobs`` is
the queue and the worker that owns the engine (batching plain cot requests through
``latentlocal.batching``), ``choices`` splits thinking from the answer and applies stop strings,
``chunks`` writes the OpenAI shapes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

from latentlocal.engine import Engine
from latentlocal.server.service import ServerConfig, Service

__all__ = ["ServerConfig", "Service", "create_app", "is_loopback", "serve"]


def create_app(service: Service):  # -> starlette.applications.Starlette
    from latentlocal.server.app import create_app as make

    return make(service)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def serve(engine: Engine, config: ServerConfig, host: str = "127.0.0.1", port: int = 8080,
          log_level: str = "info") -> None:
    """Serve ``engine`` until interrupted."""
    import uvicorn

    if not is_loopback(host) and not config.api_key:
        print(f"warning: serving on {host}, which other machines can reach, without an API key: "
              "anyone who can connect can use this model; pass --api-key KEY (or set "
              "LATENTLOCAL_API_KEY)", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    service = Service(engine, config)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level)
