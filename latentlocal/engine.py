"""The one module that touches llama.cpp through llama-cpp-python's ctypes bindings.

Three layers, one each: ``Model`` (weights, vocabulary, metadata), ``Engine`` (a context on a model:
token and embedding batches, logits, sequences, layer capture, control vectors), and the methods
above them, which never see ctypes.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from latentlocal.blas import single_thread_blas
from latentlocal.engine_settings import MAX_SEQUENCES, EngineSettings, check_kv_memory, kv_bytes_per_token
from latentlocal.errors import LatentLocalError
from latentlocal.gguf_header import check_gguf_file, locate_tensor
from latentlocal.llama_libs import C, ggml_base
from latentlocal.rpc import (
    guard_aborts,
    keep_alive_to,
    local_gpus,
    parse_endpoints,
    release,
    silence_timeout,
    worker_devices,
)


# ---------------------------------------------------------------------------------------------
# logging: llama.cpp prints a lot to stderr; silent unless the user asks for it
# ---------------------------------------------------------------------------------------------

_verbose = False
_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR
# llama.cpp's last error lines, even when silent: a lost RPC worker's message quotes them
_recent_errors: collections.deque[str] = collections.deque(maxlen=6)


@C.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if not text:
        return
    if level == _LOG_ERROR:
        _recent_errors.append(text.decode("utf-8", "replace"))
    if _verbose:
        os.write(2, text)


def recent_errors() -> list[str]:
    return list(_recent_errors)


def set_verbose(verbose: bool) -> None:
    """Let llama.cpp's own log through to stderr (``--verbose``) or keep it silent."""
    global _verbose
    _verbose = bool(verbose)


_backend_lock = threading.Lock()
_backend_ready = False


def ensure_backend() -> None:
    """Initialise llama.cpp's backends once per process, with its log routed through
    :func:`set_verbose`'s switch; any direct llama.cpp call made before a Model opens (a
    requantization, a device query) needs it first."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            C.llama_log_set(_log_callback, ctypes.c_void_p(0))
            C.llama_backend_init()
            _backend_ready = True


def gpu_offload_supported() -> bool:
    """Whether this machine has a GPU this build offloads to (llama_supports_gpu_offload is also
    true for any build with the RPC backend, which every install.sh build has)."""
    ensure_backend()
    return bool(local_gpus())


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


# Rope types whose positions are several per token (llama.cpp's llama_model_rope_type), and the
# architecture names that have them, for a llama.cpp build that reports them otherwise.
MULTI_POSITION_ROPE = frozenset({C.LLAMA_ROPE_TYPE_MROPE, C.LLAMA_ROPE_TYPE_IMROPE, C.LLAMA_ROPE_TYPE_VISION})
MULTI_POSITION_ARCHS = frozenset({"qwen2vl", "qwen25vl", "qwen3vl", "qwen3vlmoe", "glm4v", "glm4vmoe"})


class LoadCancelled(LatentLocalError):
    """A model load stopped by its ``cancel`` event."""


class Model:
    """Weights, vocabulary and metadata of one GGUF file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_gpu_layers: int = 0,
        rpc: Sequence[str] = (),
        tensor_split: Sequence[float] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        """``rpc``: parsed worker endpoints (EngineSettings.rpc); their devices take the first
        ``n_gpu_layers`` (0: every layer) offloaded layers, shared out by ``tensor_split``.
        ``cancel``, once set, stops the load at llama.cpp's next progress report (the TUI's
        Escape and Ctrl+Q waited for a whole load, minutes for a large model on a GPU)."""
        self.path = check_gguf_file(path)
        ensure_backend()
        self.rpc = parse_endpoints(rpc)
        params = C.llama_model_default_params()
        if cancel is not None:
            # llama.cpp aborts the load when the callback returns false; kept alive by the local
            # name until llama_model_load_from_file has returned
            progress = C.llama_progress_callback(lambda _fraction, _user: not cancel.is_set())
            params.progress_callback = progress
        if self.rpc:
            timeout = silence_timeout()
            # a worker lost from now on (registration included) ends the run with a clear message
            guard_aborts(self.rpc, recent_errors)
            # workers first, then this machine's GPUs: llama.cpp's own order (src/llama.cpp:256-263)
            devices = worker_devices(self.rpc) + local_gpus()
            self._devices = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
            params.devices = ctypes.cast(self._devices, ctypes.c_void_p)
            n_gpu_layers = n_gpu_layers or -1  # -1: all, as llama_model_default_params has it
        else:
            devices = local_gpus()
            if n_gpu_layers and not devices:
                warnings.warn(
                    f"--n-gpu-layers {n_gpu_layers} ignored: this llama-cpp-python build has no GPU "
                    "support (reinstall with LATENTLOCAL_BACKEND=cuda or metal); running on CPU",
                    RuntimeWarning,
                    stacklevel=2,
                )
                n_gpu_layers = 0
        try:
            if tensor_split:
                if len(tensor_split) > max(1, len(devices)):
                    raise LatentLocalError(
                        f"--tensor-split has {len(tensor_split)} shares but there are {len(devices)} "
                        f"devices to split across (the RPC workers' and this machine's GPUs); give "
                        "one share per device, workers first")
                self._split = (ctypes.c_float * C.llama_max_devices())(*tensor_split)
                params.tensor_split = self._split
            params.n_gpu_layers = int(n_gpu_layers)
            ptr = C.llama_model_load_from_file(str(self.path).encode(), params)
            if not ptr and cancel is not None and cancel.is_set():
                raise LoadCancelled(f"loading {self.path.name} was cancelled")
            if not ptr:
                raise LatentLocalError(
                    f"llama.cpp could not load {self.path}: the file is truncated, corrupt or of an "
                    "architecture this llama.cpp does not know; rerun with --verbose to see why"
                )
        except BaseException:
            release(self.rpc)
            raise
        if self.rpc:
            # ggml-rpc's connections (one per worker, opened at registration) get keepalive, so a
            # worker's machine that vanishes ends the run within the timeout instead of hanging it
            keep_alive_to(self.rpc, timeout)
        self._ptr = ptr
        self._vocab = C.llama_model_get_vocab(ptr)
        self.n_layer: int = C.llama_model_n_layer(ptr)
        self.n_embd: int = C.llama_model_n_embd(ptr)
        self.kv_bytes_per_token: int = kv_bytes_per_token(
            self.n_layer, self.n_embd, C.llama_model_n_head(ptr), C.llama_model_n_head_kv(ptr))
        # layers offloaded (llama.cpp caps the request at n_layer + 1, the output layer included)
        self.n_gpu_layers = self.n_layer + 1 if n_gpu_layers < 0 else min(int(n_gpu_layers), self.n_layer + 1)
        self.n_vocab: int = C.llama_vocab_n_tokens(self._vocab)
        self.arch: str = self.meta("general.architecture") or "unknown"
        self.name: str = self.meta("general.name") or self.path.stem
        self.size_bytes: int = self.path.stat().st_size
        self.bos: int = C.llama_vocab_bos(self._vocab)
        self.eos: int = C.llama_vocab_eos(self._vocab)
        self.rope_type: int = int(C.llama_model_rope_type(ptr))
        # EngineSettings.reasoning; Engine.open sets it (prompts.reasoning_format reads it)
        self.reasoning: str = "auto"
        # set by latentlocal.parity: rows reproduce tokens (None: not checked yet), and by how much
        self.embedding_input_checked: bool | None = None
        self.embedding_parity: float | None = None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._embeddings = None
        # contexts open on these weights, and whether the last one to close frees them (an Engine
        # that loaded this model owns it: Engine.open)
        self._contexts = 0
        self._free_when_unused = False

    # metadata -----------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = C.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        raw = C.llama_model_chat_template(self._ptr, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    # vocabulary ---------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes one token renders to, special tokens included (cached: the hot path asks often)."""
        b = self._pieces.get(token)
        if b is None:
            if not 0 <= token < self.n_vocab:
                raise LatentLocalError(f"token id {token} is outside the vocabulary of {self.n_vocab}")
            buf = ctypes.create_string_buffer(64)
            n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
            b = buf.raw[:n]
            self._pieces[token] = b
        return b

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def detokenize(self, tokens: Iterable[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        v = self._eog.get(token)
        if v is None:
            v = bool(C.llama_vocab_is_eog(self._vocab, token))
            self._eog[token] = v
        return v

    def find_token(self, text: str) -> int | None:
        """The id of a token that renders exactly as ``text`` (e.g. ``</think>``), if one exists."""
        ids = self.tokenize(text, add_special=False, parse_special=True)
        if len(ids) == 1 and self.piece(ids[0]) == text.encode():
            return ids[0]
        return None

    def think_tokens(self) -> tuple[int, int] | None:
        """The ids of ``<think>`` and ``</think>`` if the vocabulary has both as single tokens."""
        start, end = self.find_token("<think>"), self.find_token("</think>")
        return None if start is None or end is None else (start, end)

    # chat ---------------------------------------------------------------------------------
    def apply_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """Format messages with the GGUF's chat template (llama.cpp's built-in matcher, then Jinja)."""
        tmpl = self.chat_template()
        if tmpl is None:
            # No template: a neutral plain-text layout rather than guessing a vendor format.
            text = "".join(f"{m.role.capitalize()}: {m.content}\n" for m in messages)
            return text + ("Assistant:" if add_generation_prompt else "")
        arr = (C.llama_chat_message * len(messages))()
        keep = []
        for i, m in enumerate(messages):
            role, content = m.role.encode(), m.content.encode("utf-8")
            keep += [role, content]
            arr[i].role = role
            arr[i].content = content
        size = 2 * sum(len(m.content) for m in messages) + 1024
        buf = ctypes.create_string_buffer(size)
        n = C.llama_chat_apply_template(tmpl.encode(), arr, len(messages), add_generation_prompt, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n + 1)
            n = C.llama_chat_apply_template(tmpl.encode(), arr, len(messages), add_generation_prompt, buf, n + 1)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", errors="replace")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        fmt = Jinja2ChatFormatter(
            template=tmpl,
            eos_token=self.token_text(self.eos),
            bos_token=self.token_text(self.bos),
            add_generation_prompt=add_generation_prompt,
        )
        result = fmt(messages=[{"role": m.role, "content": m.content} for m in messages])
        return result.prompt

    # embeddings ---------------------------------------------------------------------------
    @property
    def multi_position_rope(self) -> bool:
        """M-RoPE models (qwen2vl, qwen3vl, ...) read several positions per input embedding row."""
        return self.rope_type in MULTI_POSITION_ROPE or self.arch in MULTI_POSITION_ARCHS

    @property
    def embeddings(self):  # -> EmbeddingTable; imported lazily to keep plain decoding light
        if self._embeddings is None:
            from latentlocal.embeddings import EmbeddingTable

            self._embeddings = EmbeddingTable(self.path, arch=self.arch, n_embd=self.n_embd,
                                              location=locate_tensor(self.path, "token_embd.weight"))
        return self._embeddings

    @property
    def placement(self) -> str:
        """Where the layers run, for status lines."""
        if self.rpc:
            return f"{self.n_gpu_layers} layers on RPC {', '.join(self.rpc)}"
        return f"GPU {self.n_gpu_layers} layers" if self.n_gpu_layers else "CPU"

    @property
    def closed(self) -> bool:
        return not getattr(self, "_ptr", None)

    def close(self) -> None:
        """Free the weights now (idempotent); contexts still open on them must not decode again."""
        if getattr(self, "_ptr", None):
            C.llama_model_free(self._ptr)
            self._ptr = None
            if self.rpc:
                release(self.rpc)

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Engine: a context on a model
# ---------------------------------------------------------------------------------------------


class _Batch:
    """A ``llama_batch`` allocated once and reused, with NumPy views over its arrays."""

    def __init__(self, capacity: int, n_embd: int = 0) -> None:
        self.capacity = capacity
        self.n_embd = n_embd
        self.raw = C.llama_batch_init(capacity, n_embd, 1)
        if n_embd:
            self.embd = np.ctypeslib.as_array(self.raw.embd, shape=(capacity, n_embd))
        else:
            self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        self.seq_ids = [np.ctypeslib.as_array(self.raw.seq_id[i], shape=(1,)) for i in range(capacity)]
        self.n_seq_id[:] = 1

    def fill(self, n: int, pos: np.ndarray, seqs: Sequence[int] | int, logits: np.ndarray) -> None:
        self.raw.n_tokens = n
        self.pos[:n] = pos
        self.logits[:n] = logits
        if isinstance(seqs, int):
            for i in range(n):
                self.seq_ids[i][0] = seqs
        else:
            for i, s in enumerate(seqs):
                self.seq_ids[i][0] = s

    def free(self) -> None:
        if self.raw is not None:
            C.llama_batch_free(self.raw)
            self.raw = None


LogitsSpec = str | Sequence[bool] | np.ndarray


def _logit_flags(n: int, spec: LogitsSpec) -> np.ndarray:
    if isinstance(spec, str):
        flags = np.zeros(n, dtype=np.int8)
        if spec == "all":
            flags[:] = 1
        elif spec == "last":
            flags[-1] = 1
        elif spec != "none":
            raise ValueError(f"logits must be 'last', 'all', 'none' or a mask, not {spec!r}")
        return flags
    flags = np.asarray(spec, dtype=np.int8)
    if flags.shape != (n,):
        raise ValueError(f"logits mask has shape {flags.shape}, expected ({n},)")
    return flags


_DEFAULTS = EngineSettings()


class Engine:
    """A llama.cpp context on a ``Model``: decoding, logits, sequences, capture and steering.

    ``Engine.open(settings)`` loads the model and owns it: closing that engine (and any
    ``sibling`` contexts on the same weights) frees the model too. ``Engine(model, ...)`` opens a
    context on a model the caller keeps and frees.

    Positions are tracked per sequence so every decode continues where the sequence stands. One
    batch carries either token ids or embedding rows, never both (llama.cpp's rule).
    """

    def __init__(
        self,
        model: Model,
        n_ctx: int = _DEFAULTS.n_ctx,
        n_batch: int = 512,
        n_seq_max: int = _DEFAULTS.n_seq_max,
        n_threads: int | None = _DEFAULTS.n_threads,
        seed: int = _DEFAULTS.seed,
        capture_layers: Iterable[int] | None = None,
    ) -> None:
        self.model = model
        self.seed = seed
        if model.closed:
            raise LatentLocalError(f"the model {model.path.name} was closed; load it again")
        if not 1 <= n_seq_max <= MAX_SEQUENCES:
            raise LatentLocalError(f"n_seq_max must be between 1 and {MAX_SEQUENCES}, not {n_seq_max}")
        self.capture_layers = tuple(sorted(set(capture_layers or ())))
        for il in self.capture_layers:
            self._check_layer(il, "capture")
        # llama.cpp cuts the batch to the context and reserves an output row per sequence in it;
        # a batch with fewer rows than sequences aborts the process inside llama_init_from_model
        if 0 < n_ctx < min(n_batch, n_seq_max):
            raise LatentLocalError(
                f"a context of {n_ctx} tokens cannot hold {n_seq_max} parallel sequences (llama.cpp "
                f"needs a batch row for each); pass --n-ctx {n_seq_max} or more, or --parallel {n_ctx} "
                "or fewer")
        if n_batch < n_seq_max:
            raise LatentLocalError(f"a batch of {n_batch} rows cannot serve {n_seq_max} parallel "
                                   f"sequences (llama.cpp needs a row for each); open with n_batch >= "
                                   f"{n_seq_max} or n_seq_max <= {n_batch}")
        if not model.n_gpu_layers:
            check_kv_memory(n_ctx, model.kv_bytes_per_token, model.path.name)
        threads = n_threads or default_threads()
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_seq_max
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True
        params.no_perf = True
        self._capture_store: dict[int, list[np.ndarray]] = {}
        if self.capture_layers:
            self._wanted = {f"l_out-{il}".encode(): il for il in self.capture_layers}
            self._cb = C.ggml_backend_sched_eval_callback(self._on_eval)
            params.cb_eval = self._cb
            params.cb_eval_user_data = None
            self._ggml = ggml_base()
        ptr = C.llama_init_from_model(model._ptr, params)
        if not ptr:
            raise LatentLocalError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {model.path.name}; "
                "try a smaller --n-ctx (memory) or rerun with --verbose"
            )
        self._ctx = ptr
        model._contexts += 1
        self._mem = C.llama_get_memory(ptr)
        self.n_ctx: int = C.llama_n_ctx(ptr)
        self.n_batch: int = C.llama_n_batch(ptr)
        self.n_seq_max = n_seq_max
        self.n_threads = threads
        self._tok = _Batch(self.n_batch)
        self._emb: _Batch | None = None
        self._pos: dict[int, int] = {}
        self.clears = 0  # engine.clear() calls: what a cache of KV contents checks it is still valid
        # attention KV in cells that sequences can share and cut at any position; recurrent
        # state (Mamba, RWKV, hybrids) is one summary per sequence and cannot be cut
        self.prefix_reuse = not (C.llama_model_is_recurrent(model._ptr) or C.llama_model_is_hybrid(model._ptr))
        self._cvec: tuple[int, int, int] | None = None  # (id(buffer), il_start, il_end) now set
        self._cvec_buf: np.ndarray | None = None
        self.cvec_changes = 0
        self.control_vector_tag: object = None  # the tag given with the vector now set
        # OpenBLAS threads spinning after numpy calls steal the cores from ggml (latentlocal.blas)
        single_thread_blas.__enter__()
        self._blas_pinned = True

    @classmethod
    def open(cls, settings: EngineSettings | None = None, cancel: threading.Event | None = None,
             **kwargs) -> Engine:
        """Load the model ``settings`` name and open a context on it; the engine owns the model.

        ``cancel``: see :class:`Model` (a cancelled load raises :class:`LoadCancelled`).
        ``kwargs`` go to the constructor (``capture_layers``, ``n_batch``).
        """
        settings = settings or _DEFAULTS
        set_verbose(settings.verbose)
        model = Model(settings.model_path(), n_gpu_layers=settings.n_gpu_layers, rpc=settings.rpc,
                      tensor_split=settings.tensor_split, cancel=cancel)
        try:
            model.reasoning = settings.reasoning
            if settings.reasoning == "on" and model.think_tokens() is None:
                raise LatentLocalError(
                    f"--reasoning on needs a model that thinks in <think>...</think>, but "
                    f"{model.path.name} has no such tokens; use --reasoning auto (or off)")
            engine = cls(model, n_ctx=settings.n_ctx, n_seq_max=settings.n_seq_max,
                         n_threads=settings.n_threads, seed=settings.seed, **kwargs)
        except BaseException:
            model.close()
            raise
        model._free_when_unused = True
        return engine

    def sibling(self, **kwargs) -> Engine:
        """Another context on the same weights (e.g. one that captures layers)."""
        opts = dict(n_ctx=self.n_ctx, n_batch=self.n_batch, n_seq_max=self.n_seq_max,
                    n_threads=self.n_threads, seed=self.seed)
        opts.update(kwargs)
        return Engine(self.model, **opts)

    # conveniences -----------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    @property
    def n_embd(self) -> int:
        return self.model.n_embd

    @property
    def n_layer(self) -> int:
        return self.model.n_layer

    def pos(self, seq: int = 0) -> int:
        """The next position of ``seq`` (its length so far)."""
        return self._pos.get(seq, 0)

    def _check_layer(self, il: int, what: str) -> None:
        n = self.model.n_layer
        if not 0 <= il < n:
            raise LatentLocalError(
                f"{what} layer {il} is out of range: {self.model.name} has blocks 0..{n - 1}"
            )

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq_max:
            raise LatentLocalError(
                f"sequence {seq} is out of range: this context holds {self.n_seq_max} sequences"
            )

    def _check_room(self, seq: int, n: int) -> None:
        if self.pos(seq) + n > self.n_ctx:
            raise LatentLocalError(
                f"{self.pos(seq) + n} tokens do not fit the context of {self.n_ctx}: shorten the "
                "prompt or --max-tokens, or pass a larger --n-ctx"
            )

    # decoding ---------------------------------------------------------------------------------
    def _decode(self, batch: _Batch) -> None:
        if self.capture_layers:
            self._capture_store = {il: [] for il in self.capture_layers}
        rc = C.llama_decode(self._ctx, batch.raw)
        if rc != 0:
            if rc == 1:
                raise LatentLocalError(
                    f"the context of {self.n_ctx} tokens is full; pass a larger --n-ctx or fewer "
                    "--max-tokens / samples"
                )
            raise LatentLocalError(f"llama_decode failed with code {rc}; rerun with --verbose to see why")

    def _token_ids(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        toks = np.asarray(tokens, dtype=np.int32)
        if toks.min() < 0 or toks.max() >= self.n_vocab:
            raise LatentLocalError(f"token ids must lie in 0..{self.n_vocab - 1}")
        return toks

    def decode_tokens(self, tokens: Sequence[int], seq: int = 0, logits: LogitsSpec = "last") -> None:
        """Append ``tokens`` to sequence ``seq``; logits are kept for the rows ``logits`` selects."""
        n = len(tokens)
        if n == 0:
            return
        self._check_seq(seq)
        self._check_room(seq, n)
        flags = _logit_flags(n, logits)
        toks = self._token_ids(tokens)
        start = self.pos(seq)
        cap = self._tok.capacity
        for off in range(0, n, cap):
            m = min(cap, n - off)
            self._tok.token[:m] = toks[off:off + m]
            self._tok.fill(m, np.arange(start + off, start + off + m), seq, flags[off:off + m])
            self._decode(self._tok)
            self._pos[seq] = start + off + m

    def _emb_batch(self, n: int) -> _Batch:
        if self._emb is None or self._emb.capacity < n:
            if self._emb is not None:
                self._emb.free()
            self._emb = _Batch(max(n, 16), self.n_embd)
        return self._emb

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.model.multi_position_rope:
            # llama.cpp would read n_pos_per_embd positions per row, past our one-per-row buffer.
            raise LatentLocalError(
                f"{self.model.name} is a '{self.model.arch}' model, whose M-RoPE reads several "
                "positions for every input embedding; latentlocal feeds one position per row, so "
                "methods that feed embeddings (soft-thinking, soft-reasoning) cannot run on it. "
                "Use cot, sc or seal, or the text-only model of the same family"
            )
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n_embd:
            raise LatentLocalError(
                f"embedding rows have width {rows.shape[-1]}, but {self.model.name} has n_embd "
                f"{self.n_embd}: build rows from this model's embedding table"
            )
        if not np.isfinite(rows).all():
            raise LatentLocalError("embedding rows contain NaN or infinity")
        return rows

    def decode_embeddings(self, rows: np.ndarray, seq: int = 0, logits: LogitsSpec = "last") -> None:
        """Append input embedding rows (n, n_embd) to ``seq``, as if they were tokens."""
        rows = self._check_rows(rows)
        n = rows.shape[0]
        self._check_seq(seq)
        self._check_room(seq, n)
        flags = _logit_flags(n, logits)
        start = self.pos(seq)
        cap = min(n, self.n_batch)
        batch = self._emb_batch(cap)
        for off in range(0, n, cap):
            m = min(cap, n - off)
            batch.embd[:m] = rows[off:off + m]
            batch.fill(m, np.arange(start + off, start + off + m), seq, flags[off:off + m])
            self._decode(batch)
            self._pos[seq] = start + off + m

    def decode_step(
        self,
        seqs: Sequence[int],
        tokens: Sequence[int] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        """One new position for each of ``seqs`` in a single batch: token ids or embedding rows.

        Logits row ``i`` (``logits(i)``) belongs to ``seqs[i]``.
        """
        if (tokens is None) == (rows is None):
            raise ValueError("decode_step takes tokens or rows, not both")
        n = len(seqs)
        for s in seqs:
            self._check_seq(s)
            self._check_room(s, 1)
        pos = np.fromiter((self.pos(s) for s in seqs), dtype=np.int32, count=n)
        ones = np.ones(n, dtype=np.int8)
        if tokens is not None:
            if n > self._tok.capacity:
                raise LatentLocalError(f"at most {self._tok.capacity} sequences per step")
            self._tok.token[:n] = tokens
            self._tok.fill(n, pos, seqs, ones)
            self._decode(self._tok)
        else:
            rows = self._check_rows(rows)
            if rows.shape[0] != n:
                raise ValueError(f"{rows.shape[0]} rows for {n} sequences")
            batch = self._emb_batch(n)
            batch.embd[:n] = rows
            batch.fill(n, pos, seqs, ones)
            self._decode(batch)
        for s in seqs:
            self._pos[s] = self._pos.get(s, 0) + 1

    def decode_many(self, feeds: Sequence[tuple[int, Sequence[int]]]) -> dict[int, int]:
        """Append each feed's tokens to its sequence (distinct sequences), sharing ``llama_decode``
        calls: as few as the batch size allows, with every feed's last token in the final one.

        Returns ``{seq: i}``: ``logits(i)`` is the next-token distribution of ``seq`` (the only
        rows kept). Several prompts prefilled this way cost one decode's fixed cost, not one each.
        """
        if not feeds:
            return {}
        cap = self._tok.capacity
        if len({s for s, _ in feeds}) != len(feeds):
            raise ValueError("decode_many takes one feed per sequence")
        if len(feeds) > cap:
            raise LatentLocalError(f"at most {cap} sequences per decode")
        seqs, pos, toks = [], [], []
        for s, t in feeds:
            if not len(t):
                raise ValueError(f"an empty feed for sequence {s}")
            self._check_seq(s)
            self._check_room(s, len(t))
            start = self.pos(s)
            seqs.append(np.full(len(t), s, dtype=np.int32))
            pos.append(np.arange(start, start + len(t), dtype=np.int32))
            toks.append(np.asarray(t, dtype=np.int32))
        all_tok = self._token_ids(np.concatenate(toks))
        # every feed's last token goes to the end, in the final decode: the only one whose logits
        # survive; the rest, in order per sequence, fill the decodes before it and then that one
        last = np.cumsum([len(t) for t in toks]) - 1
        body = np.ones(len(all_tok), dtype=bool)
        body[last] = False
        order = np.concatenate([np.flatnonzero(body), last])
        all_seq, all_pos, all_tok = np.concatenate(seqs)[order], np.concatenate(pos)[order], all_tok[order]
        flags = np.zeros(len(order), dtype=np.int8)
        flags[-len(feeds):] = 1
        n_body = len(order) - len(feeds)
        head = max(0, n_body - (cap - len(feeds)))  # body tokens that cannot ride in the final decode
        cuts = list(range(0, head, cap)) + [head]
        for a, b in zip(cuts, cuts[1:] + [len(order)]):
            if b > a:
                self._tok.token[:b - a] = all_tok[a:b]
                self._tok.fill(b - a, all_pos[a:b], all_seq[a:b].tolist(), flags[a:b])
                self._decode(self._tok)
        for s, t in feeds:
            self._pos[s] = self.pos(s) + len(t)
        return {s: len(order) - head - len(feeds) + i for i, (s, _) in enumerate(feeds)}

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of output row ``i`` of the last decode, as a view valid until the next decode."""
        ptr = C.llama_get_logits_ith(self._ctx, i)
        if not ptr:
            raise LatentLocalError(f"no logits for output row {i} of the last decode")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # sequences --------------------------------------------------------------------------------
    def seq_copy(self, src: int, dst: int, length: int | None = None) -> None:
        """Make ``dst`` a copy of ``src``, or of its first ``length`` positions (shares the KV
        cells: no memory is duplicated)."""
        self._check_seq(src)
        self._check_seq(dst)
        n = self.pos(src) if length is None else length
        if not 0 <= n <= self.pos(src):
            raise ValueError(f"sequence {src} holds {self.pos(src)} positions, not {n}")
        if n < self.pos(src) and not self.prefix_reuse:
            raise LatentLocalError(f"{self.model.name} keeps a recurrent state per sequence, "
                                   "which cannot be copied in part")
        C.llama_memory_seq_rm(self._mem, dst, -1, -1)
        C.llama_memory_seq_cp(self._mem, src, dst, -1, -1 if length is None else n)
        self._pos[dst] = n
        if not n:
            self._pos.pop(dst, None)

    def seq_intact(self, seq: int) -> bool:
        """Whether ``seq`` still holds the KV of every position from 0 (a sliding-window cache
        drops the oldest ones once the sequence outgrows the window)."""
        self._check_seq(seq)
        return self.pos(seq) > 0 and C.llama_memory_seq_pos_min(self._mem, seq) == 0

    def seq_remove(self, seq: int, p0: int = 0) -> None:
        """Drop positions ``p0`` and later from ``seq`` (all of it by default)."""
        self._check_seq(seq)
        C.llama_memory_seq_rm(self._mem, seq, p0, -1)
        if p0 <= 0:
            self._pos.pop(seq, None)
        else:
            self._pos[seq] = min(self.pos(seq), p0)

    def seq_keep(self, seq: int) -> None:
        C.llama_memory_seq_keep(self._mem, seq)
        self._pos = {seq: self.pos(seq)}

    def clear(self) -> None:
        C.llama_memory_clear(self._mem, True)
        self._pos.clear()
        self.clears += 1

    # control vectors --------------------------------------------------------------------------
    def set_control_vector(
        self, directions: Mapping[int, np.ndarray] | None, scale: float = 1.0, tag: object = None
    ) -> None:
        """Add ``scale * directions[il]`` to the output of each block ``il``; ``None`` clears.

        Every call makes llama.cpp re-reserve its scheduler on the next decode (milliseconds), so
        callers toggle it only when the state really changes; ``tag`` (any object, kept as
        :attr:`control_vector_tag` until the next call) lets them tell which vector is set.
        """
        if directions is None:
            self.control_vector_tag = None
            if self._cvec is not None:
                C.llama_set_adapter_cvec(self._ctx, None, 0, self.n_embd, -1, -1)
                self._cvec = None
                self.cvec_changes += 1
            return
        if not directions:
            raise LatentLocalError("control vector has no directions")
        buf = np.zeros((self.n_layer - 1, self.n_embd), dtype=np.float32)
        for il, vec in directions.items():
            if not 1 <= il < self.n_layer:
                raise LatentLocalError(
                    f"control vector layer {il} is out of range: {self.model.name} can be steered "
                    f"at blocks 1..{self.n_layer - 1}"
                )
            v = np.asarray(vec, dtype=np.float32).reshape(-1)
            if v.shape[0] != self.n_embd:
                raise LatentLocalError(
                    f"control vector for layer {il} has width {v.shape[0]}, but {self.model.name} "
                    f"has n_embd {self.n_embd}: it was made for another model"
                )
            buf[il - 1] = v * scale
        lo, hi = min(directions), max(directions)
        flat = np.ascontiguousarray(buf.reshape(-1))
        rc = C.llama_set_adapter_cvec(
            self._ctx, flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), flat.size, self.n_embd, lo, hi
        )
        if rc != 0:
            raise LatentLocalError("llama.cpp refused the control vector; rerun with --verbose")
        self._cvec_buf = flat
        self._cvec = (id(flat), lo, hi)
        self.cvec_changes += 1
        self.control_vector_tag = tag

    @property
    def control_vector_active(self) -> bool:
        return self._cvec is not None

    # layer capture ----------------------------------------------------------------------------
    def _on_eval(self, tensor: ctypes.c_void_p, ask: bool, user_data: ctypes.c_void_p) -> bool:
        try:
            g = self._ggml
            il = self._wanted.get(g.ggml_get_name(tensor))
            if il is None:
                return False if ask else True
            if ask:
                return True
            nbytes = g.ggml_nbytes(tensor)
            out = np.empty(nbytes // 4, dtype=np.float32)
            g.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, nbytes)
            self._capture_store[il].append(out.reshape(-1, self.n_embd))
            return True
        except Exception:  # an exception must never cross into C; report it after decode
            self._capture_store.setdefault(-1, []).append(np.zeros(0))
            return False

    def captured(self, il: int) -> np.ndarray:
        """Residual stream after block ``il`` for the rows of the last decode, shape (rows, n_embd).

        Rows are every batch position, except for the last block, where llama.cpp keeps only the
        rows whose logits were requested.
        """
        if il not in self.capture_layers:
            raise LatentLocalError(
                f"layer {il} is not captured by this context; open it with capture_layers=[{il}]"
            )
        if -1 in self._capture_store:
            raise LatentLocalError("layer capture failed inside llama.cpp's eval callback")
        parts = self._capture_store.get(il) or []
        if not parts:
            return np.zeros((0, self.n_embd), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    # teardown ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not getattr(self, "_ctx", None)

    def close(self) -> None:
        """Free the context (idempotent), and the model when this engine loaded it and no sibling
        context is still open on it."""
        if getattr(self, "_ctx", None):
            self._tok.free()
            if self._emb is not None:
                self._emb.free()
            C.llama_free(self._ctx)
            self._ctx = None
            self.model._contexts -= 1
            if self.model._free_when_unused and self.model._contexts == 0:
                self.model.close()
        if getattr(self, "_blas_pinned", False):
            self._blas_pinned = False
            single_thread_blas.__exit__()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


def default_threads() -> int:
    """All cores the process may use, capped at 8 (more rarely helps memory-bound decoding)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class TextStream:
    """Turns token bytes into text without splitting multi-byte UTF-8 characters."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._dec.decode(self._model.piece(token))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
