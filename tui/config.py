"""The TUI's settings, kept in ``config_dir()/config.toml``.

Read with ``tomllib`` (``tomli`` on Python 3.10), written with ``tomli_w``, atomically
(``latentlocal.atomic``), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from latentlocal.atomic import write_text_atomic
from latentlocal.engine_settings import EngineSettings
from latentlocal.models import config_dir

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FILE_NAME = "config.toml"


def config_path() -> Path:
    return config_dir() / FILE_NAME


_ENGINE = EngineSettings()  # the engine defaults, written once there


@dataclass
class ModelSettings:
    path: str = ""          # last loaded model ("" = none yet)
    n_gpu_layers: int = _ENGINE.n_gpu_layers
    n_ctx: int = _ENGINE.n_ctx
    threads: int = 0        # 0 = automatic (all cores, at most 8); TOML has no None
    parallel: int = _ENGINE.n_seq_max  # sequences the context holds (sc samples, search candidates)
    reasoning: str = _ENGINE.reasoning  # auto / on / off on models with <think> tokens
    rpc: str = ""           # llama.cpp RPC workers, HOST:PORT[,HOST:PORT...] ("" = this machine only)
    tensor_split: str = ""  # shares of the offloaded layers per device, e.g. "3,1" ("" = by free memory)
    autoload: bool = True   # load the last model at start-up


@dataclass
class RunSettings:
    method: str = "cot"
    prompt: str = "A farmer has 12 cows and buys 5 more, then sells 3. How many cows does he have?"


@dataclass
class UiSettings:
    theme: str = "textual-dark"
    inline_candidates: bool = False  # show each soft step's top candidates inside the trace
    # how often streamed tokens reach the screen: each frame costs the UI thread ~10 ms, taken
    # from the cores the model decodes on (bench/bench_tui.py: 50 ms frames cost 20-25% of a core)
    flush_ms: int = 200


@dataclass
class CompareSettings:
    methods: list[str] = field(default_factory=lambda: ["cot", "soft-thinking"])
    max_tokens: int = 0              # 0 = each method's own setting


@dataclass
class VectorSettings:
    data: str = ""
    out: str = ""
    limit: int = 20
    layer: int = 0                   # 0 = the method's default layer
    elicit: str = "cue"
    max_tokens: int = 256
    inspect: str = ""
    export_to: str = ""


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    run: RunSettings = field(default_factory=RunSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    vectors: VectorSettings = field(default_factory=VectorSettings)
    # method name -> {option dest -> value}; only options the user set (unset = method default)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)


_SECTIONS = {"model": ModelSettings, "run": RunSettings, "ui": UiSettings,
             "compare": CompareSettings, "vectors": VectorSettings}


def _coerce(value: Any, like: Any) -> Any:
    """``value`` as the type of the default ``like``; ValueError when it cannot be."""
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(like, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(like, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(value)
    if isinstance(like, str):
        if isinstance(value, str):
            return value
        raise ValueError(value)
    if isinstance(like, list):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(value)
    raise ValueError(value)


def from_dict(data: dict[str, Any]) -> tuple[Config, list[str]]:
    """A Config from parsed TOML; unknown keys and wrongly typed values are skipped and named."""
    cfg = Config()
    problems: list[str] = []
    for name, cls in _SECTIONS.items():
        section = data.get(name, {})
        if not isinstance(section, dict):
            problems.append(f"[{name}] is not a table")
            continue
        target = getattr(cfg, name)
        known = {f.name for f in fields(cls)}
        for key, value in section.items():
            if key not in known:
                problems.append(f"unknown setting {name}.{key}")
                continue
            try:
                setattr(target, key, _coerce(value, getattr(target, key)))
            except ValueError:
                problems.append(f"{name}.{key} = {value!r} has the wrong type")
    methods = data.get("methods", {})
    if isinstance(methods, dict):
        for m, opts in methods.items():
            if isinstance(opts, dict):
                cfg.methods[m] = {k: v for k, v in opts.items()
                                  if isinstance(v, (str, int, float, bool))}
    return cfg, problems


def load(path: Path | None = None) -> tuple[Config, list[str]]:
    """The saved settings (defaults when there is no file) and any problems found reading them."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(), []
    except OSError as exc:
        return Config(), [f"cannot read {path} ({exc.strerror}); using defaults"]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # the next save writes defaults over it: one typo must not cost the user every setting
        kept = _set_aside(path)
        where = f"kept as {kept}" if kept else "it could not be set aside and is rewritten on save"
        return Config(), [f"{path} is not valid TOML ({exc}); using defaults ({where})"]
    return from_dict(data)


def _set_aside(path: Path) -> Path | None:
    """Move a broken settings file to the first free ``NAME.bad``, ``NAME.bad.1``, ...; None if
    it cannot be moved."""
    for i in range(100):
        target = path.with_name(path.name + ".bad" + (f".{i}" if i else ""))
        if not target.exists():
            try:
                path.rename(target)
            except OSError:
                return None
            return target
    return None


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

_HEADER = ("# latentlocal terminal UI settings (written by the app; edits to these settings are kept,\n"
           "# keys it does not know are dropped with a warning)\n\n")


def _writable(values: dict[str, Any]) -> dict[str, Any]:
    # TOML has no null, and a non-finite float would not compare equal to itself on reading
    # back; both are left out, so the setting falls back to its default.
    return {k: v for k, v in values.items()
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


def dumps(cfg: Config) -> str:
    """The TOML text of ``cfg``."""
    doc: dict[str, Any] = {name: _writable(asdict(getattr(cfg, name))) for name in _SECTIONS}
    methods = {m: _writable(cfg.methods[m]) for m in sorted(cfg.methods) if cfg.methods[m]}
    if methods:
        doc["methods"] = methods
    return _HEADER + tomli_w.dumps(doc)


def save(cfg: Config, path: Path | None = None) -> Path:
    """Write ``cfg`` atomically (``latentlocal.atomic``: a crash never leaves half a file)."""
    path = path or config_path()
    write_text_atomic(path, dumps(cfg))
    return path
