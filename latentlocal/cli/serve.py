"""The ``latentlocal serve`` subcommand: its flags and what it runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from latentlocal.cli.common import add_model_args, check_bindable, open_engine
from latentlocal.errors import LatentLocalError

API_KEY_ENV = "LATENTLOCAL_API_KEY"


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible chat server (POST /v1/chat/completions) "
                       "whose requests pick a latent method and its settings")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on every route but /health "
                        f"(default: ${API_KEY_ENV}, else none)")
    p.add_argument("--vectors", action="append", default=[], metavar="DIR",
                   help="a folder of SEAL vectors that requests may name (repeatable; searched "
                        "before the user's and the shipped vectors folders)")
    p.add_argument("--queue", type=int, default=16,
                   help="requests that may wait; more get HTTP 503 with Retry-After (default 16)")
    p.add_argument("--time-limit", type=float, default=300.0, metavar="S",
                   help="seconds one request may run before it ends with finish_reason 'length' "
                        "(default 300)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. http://localhost:3000, or * for any) call "
                        "the server from a browser (repeatable; default: none, since any page the "
                        "browser opens could then use the model)")
    add_model_args(p)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from latentlocal.server import ServerConfig, serve

    if args.queue < 1:
        raise LatentLocalError(f"--queue must be at least 1, not {args.queue}")
    if not args.time_limit > 0:
        raise LatentLocalError(f"--time-limit must be positive, not {args.time_limit}")
    if not 0 < args.port < 65536:
        raise LatentLocalError(f"--port must lie in 1..65535, not {args.port}")
    for d in args.vectors:
        if not Path(d).expanduser().is_dir():
            raise LatentLocalError(f"--vectors {d}: no such folder")
    config = ServerConfig(api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
                          vector_dirs=[Path(d) for d in args.vectors], queue_size=args.queue,
                          time_limit=args.time_limit, cors_origins=tuple(args.cors_origin))
    check_bindable(args.host, args.port)  # before the model loads, not after
    engine = open_engine(args)
    print(f"latentlocal serve: {engine.model.path.name} on http://{args.host}:{args.port}/v1 "
          f"({'API key required' if config.api_key else 'no API key'})", flush=True)
    serve(engine, config, host=args.host, port=args.port)
    return 0
