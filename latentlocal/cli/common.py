"""What several commands share: the model flags, the method flags, the engine they open, and
the check that a server's address is free."""

from __future__ import annotations

import argparse
import socket

from latentlocal.engine import Engine
from latentlocal.engine_settings import REASONING_MODES, EngineSettings
from latentlocal.errors import LatentLocalError

_DEFAULTS = EngineSettings()


def add_model_args(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="path to a .gguf file (default: the bundled SmolLM2-135M)")
    g.add_argument("--n-gpu-layers", type=int, default=d.n_gpu_layers,
                   help="layers to offload to the GPU (CUDA/Metal builds)")
    g.add_argument("--rpc", default="", metavar="HOST:PORT[,...]",
                   help="run the offloaded layers on these llama.cpp RPC workers (`latentlocal worker` "
                        "on each machine); with --rpc, --n-gpu-layers defaults to every layer")
    g.add_argument("--tensor-split", default="", metavar="SHARES",
                   help="comma-separated share of the offloaded layers per device, workers first "
                        "(e.g. 3,1; default: by free memory)")
    g.add_argument("--n-ctx", type=int, default=d.n_ctx, help=f"context size in tokens (default {d.n_ctx})")
    g.add_argument("--threads", type=int, default=d.n_threads, help="CPU threads (default: all cores, at most 8)")
    g.add_argument("--parallel", type=int, default=d.n_seq_max,
                   help=f"parallel sequences the context holds (default {d.n_seq_max})")
    g.add_argument("--reasoning", choices=REASONING_MODES, default=d.reasoning,
                   help="on a model with <think> tokens: auto thinks, off answers at once after an "
                        "empty thinking span (for instruction models sharing a thinking model's "
                        f"tokenizer), on refuses a model without them (default {d.reasoning})")
    g.add_argument("--verbose", action="store_true", help="show llama.cpp's own log")


def add_method_args(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    from latentlocal.methods.registry import add_method_flags

    add_method_flags(p, with_method=with_method)


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    """The engine the model flags (and ``--seed``, where the command has it) describe."""
    return EngineSettings(
        model=args.model,
        n_gpu_layers=args.n_gpu_layers,
        rpc=args.rpc,
        tensor_split=args.tensor_split,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_seq_max=args.parallel,
        reasoning=args.reasoning,
        # --seed seeds the engine and the method; unset (None), the engine keeps its default
        seed=_DEFAULTS.seed if getattr(args, "seed", None) is None else args.seed,
        verbose=args.verbose,
    )


def open_engine(args: argparse.Namespace) -> Engine:
    """Load the model the arguments name (run, bench, seal extract, seal sweep)."""
    return Engine.open(engine_settings(args))


def check_bindable(host: str, port: int) -> None:
    """A clear error for a port in use or an address not on this machine, before a model loads
    and before the server's own (uvicorn's, llama.cpp's) error."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as exc:
        raise LatentLocalError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}): pick another --port, or a "
            "--host address this machine has") from exc
