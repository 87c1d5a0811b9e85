"""One typed configuration: ``vivace.toml`` < ``VIVACE_*`` env vars < CLI flags.

Every knob lives in one flat dataclass so that a key has exactly one name in
all three layers (``kv_cache_dtype`` in TOML, ``VIVACE_KV_CACHE_DTYPE`` in the
environment, ``--kv-cache-dtype`` on the command line).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from vivace.choices import Backend, Compression, Dialect, Dtype, Execution, KVCacheDtype, LongForm, Mode, Scheduling, values
from vivace.errors import ConfigError, unknown_key

DEFAULT_CONFIG_FILE = "vivace.toml"


def _choices(kind: type[StrEnum]) -> dict[str, Any]:
    """A key whose value is one of ``kind``'s spellings (``vivace.choices``)."""
    return {"choices": values(kind)}


def _bounds(*, min: float | None = None, above: float | None = None, max: float | None = None) -> dict[str, Any]:
    """A numeric key's range (``min``/``max`` inclusive, ``above`` exclusive), checked in every layer."""
    return {"min": min, "above": above, "max": max}


_URL = {"url": True}  # each value must parse as an http(s) URL with a host

DEFAULT_MODEL = "default"  # the name of the model the top-level keys describe
# What a [models.NAME] table may set: how that model is served. Sampling defaults, limits, orchestration
# and retrieval stay process-wide (a step sets its own sampling in the pipeline file).
MODEL_KEYS = (
    "backend", "model", "served_model_name", "dtype", "max_model_len", "quantization", "kv_cache_dtype",
    "enable_prefix_caching", "max_num_seqs", "kv_cache_space_gib", "gpu_memory_utilization", "enforce_eager", "seed",
    "base_urls", "api_key_env", "request_timeout_s", "connect_retries", "openai_dialect", "requests_per_minute",
    "prefix_affinity",
)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What an [mcp.NAME] table may set: a stdio server (command, args, env, cwd) or a streamable-HTTP one (url).
MCP_KEYS = ("command", "args", "env", "cwd", "url", "timeout_s", "startup_timeout_s", "tools", "pure",
            "requires_approval")
_MCP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,31}$")  # no '.': tools are named NAME.TOOL


@dataclass
class Config:
    """Everything vivace can be told. Defaults are the embedded CPU setup.

    Every value, from whichever layer or from ``replace``, goes through the same
    coercion and checks (``_coerce``): a bad one is a ``ConfigError`` naming the key.
    """

    home: Path = field(default_factory=lambda: Path("~/.cache/vivace").expanduser())
    backend: str = field(default="vllm", metadata=_choices(Backend))
    model: str = "smollm2-135m"
    served_model_name: str | None = None

    # vLLM engine
    dtype: str = field(default="auto", metadata=_choices(Dtype))
    max_model_len: int | None = field(default=None, metadata=_bounds(min=1))
    quantization: str | None = None
    kv_cache_dtype: str = field(default="auto", metadata=_choices(KVCacheDtype))
    enable_prefix_caching: bool = True
    max_num_seqs: int = field(default=64, metadata=_bounds(min=1))
    kv_cache_space_gib: float = field(default=1.0, metadata=_bounds(above=0))
    gpu_memory_utilization: float | None = field(default=None, metadata=_bounds(above=0, max=1))
    enforce_eager: bool = True
    seed: int = field(default=0, metadata=_bounds(min=0))

    # OpenAI-compatible servers
    base_urls: list[str] = field(default_factory=list, metadata=_URL)
    api_key_env: str = "VIVACE_API_KEY"
    request_timeout_s: float = field(default=120.0, metadata=_bounds(above=0))
    connect_retries: int = field(default=3, metadata=_bounds(min=0))
    # what the servers accept: vLLM-style vendor fields, or the standard fields only (hosted APIs); auto probes
    openai_dialect: str = field(default="auto", metadata=_choices(Dialect))
    requests_per_minute: float | None = field(default=None, metadata=_bounds(above=0))  # per server, as APIs meter
    prefix_affinity: bool = True  # a fleet sends calls that share a prompt prefix to the same server

    # Process-wide limits and generation defaults
    max_in_flight: int = field(default=32, metadata=_bounds(min=1))
    sot_load_aware: bool = True  # auto mode: SoT fans out only into the batch slots free (vivace.agents.sot.load)
    max_tokens: int = field(default=512, metadata=_bounds(min=1))
    temperature: float = field(default=0.0, metadata=_bounds(min=0))
    repetition_penalty: float = field(default=1.15, metadata=_bounds(above=0))

    # Orchestration
    mode: str = field(default="auto", metadata=_choices(Mode))
    sot_max_points: int = field(default=8, metadata=_bounds(min=1))
    sot_pipelined: bool = False  # expand each point as soon as its skeleton line is complete
    sot_length_plan: bool = True  # plan the points' count and budgets from the expected normal length
    execution: str = field(default="dataflow", metadata=_choices(Execution))  # pipelines
    long_form: str = field(default="off", metadata=_choices(LongForm))  # SoT inside agents (the writer)
    scheduling: str = field(default="program", metadata=_choices(Scheduling))

    # Durable runs: every run is checkpointed after each finished step (vivace.runtime.checkpoints)
    checkpoints: bool = True
    checkpoint_url: str | None = None  # postgresql://... (shared by serve replicas) or sqlite:///PATH; default $VIVACE_HOME
    keep_runs: int = field(default=1000, metadata=_bounds(min=1))  # older runs' checkpoints are pruned

    # Retrieval and compression
    chroma_path: Path | None = None  # default: $VIVACE_HOME/chroma
    chroma_url: str | None = field(default=None, metadata=_URL)  # a Chroma server instead of the local store
    embedder: str | None = None  # default: the bundled all-MiniLM-L6-v2
    retrieval_k: int = field(default=4, metadata=_bounds(min=1))
    chunk_tokens: int = field(default=200, metadata=_bounds(min=1))
    chunk_overlap: int = field(default=40, metadata=_bounds(min=0))
    compression: str = field(default="auto", metadata=_choices(Compression))
    compression_margin_s: float = field(default=0.05, metadata=_bounds(min=0))
    compression_ratio: float = field(default=2.0, metadata=_bounds(min=1))  # target original/compressed

    # Named models beside the default: [models.NAME] tables, each overriding some MODEL_KEYS of the above
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # MCP servers whose tools the runtime registers as NAME.TOOL: [mcp.NAME] tables (MCP_KEYS)
    mcp: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not f.default:  # a default is valid as it stands (and Config() is built per bare-backend run)
                setattr(self, f.name, _coerce(f.name, value))
        for name in self.models:
            served = self.for_model(name)
            if served.backend == "openai" and not served.base_urls:
                raise ConfigError(f"models.{name}: backend 'openai' needs base_urls (in the table or at the top level)")

    @property
    def model_names(self) -> list[str]:
        """Every model a step or call may name: ``default`` (the top-level keys) first."""
        return [DEFAULT_MODEL, *self.models]

    def for_model(self, name: str | None) -> "Config":
        """The config that serves model ``name``: the top-level keys with its table's keys on top."""
        if name in (None, "", DEFAULT_MODEL):
            return self
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; models: {', '.join(self.model_names)}")
        return dataclasses.replace(self, models={}, **self.models[name])

    @property
    def chroma_dir(self) -> Path:
        return self.chroma_path or self.home / "chroma"

    @property
    def runs_dir(self) -> Path:
        """Where every run's trace is appended as JSONL."""
        return self.home / "runs"

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes``, checked like every other layer (``--temperature nan`` fails as in TOML)."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = get_type_hints(Config)


def _number(key: str, value: Any, base: type) -> int | float:
    """An int or float from TOML, env or a flag; bools, inf/nan and fractional ints are refused."""
    kind = base.__name__
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}: {value!r} is not a valid {kind}")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if base is int else float(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a valid {kind}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    if base is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: {value!r} is not a valid int")
        return int(value)
    return float(value)


def _check_bounds(key: str, out: int | float, meta: Mapping[str, Any]) -> None:
    low, above, high = meta.get("min"), meta.get("above"), meta.get("max")
    if low is not None and out < low:
        raise ConfigError(f"{key}: {out!r} must be at least {low}")
    if above is not None and out <= above:
        raise ConfigError(f"{key}: {out!r} must be greater than {above}")
    if high is not None and out > high:
        raise ConfigError(f"{key}: {out!r} must be at most {high}")


def _check_url(key: str, url: str) -> None:
    """Refuse a malformed server URL now, not as a traceback from the HTTP client later."""
    full = url if "://" in url or key != "chroma_url" else f"http://{url}"  # chroma also takes host:port
    try:
        parts = urlsplit(full)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{key}: {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {url!r} is not a valid URL: expected http://HOST[:PORT][/PATH]")


def _coerce_models(value: Any) -> dict[str, dict[str, Any]]:
    """The ``[models.NAME]`` tables, each key checked as the top-level key of the same name."""
    if not isinstance(value, dict):
        raise ConfigError(f"models: {value!r} is not a table; write [models.NAME] tables in the TOML file")
    out: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if name == DEFAULT_MODEL:
            raise ConfigError(f"models.{name}: the default model is set by the top-level keys, not a table")
        if not _MODEL_NAME.match(name):
            raise ConfigError(f"models.{name}: a model name is letters, digits, '_', '.' or '-' (at most 64)")
        if not isinstance(table, dict):
            raise ConfigError(f"models.{name}: {table!r} is not a table (write [models.{name}] then key = value lines)")
        if unknown := sorted(set(table) - set(MODEL_KEYS)):
            raise ConfigError(f"models.{name}: {unknown_key(unknown[0], MODEL_KEYS)}")
        try:
            out[name] = {k: _coerce(k, v) for k, v in table.items()}
        except ConfigError as exc:
            raise ConfigError(f"models.{name}.{exc}") from None
    return out


def _mcp_table(name: str, table: Any) -> dict[str, Any]:
    """One ``[mcp.NAME]`` table, typed and with its defaults; an error is one line naming ``mcp.NAME.key``."""
    where = f"mcp.{name}"
    if not _MCP_NAME.match(name):
        raise ConfigError(f"{where}: a server name is letters, digits, '_' or '-' (at most 32), not first a digit")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {table!r} is not a table (write [{where}] then key = value lines)")
    if unknown := sorted(set(table) - set(MCP_KEYS)):
        raise ConfigError(f"{where}: {unknown_key(unknown[0], MCP_KEYS)}")
    if ("command" in table) == ("url" in table):
        raise ConfigError(f"{where}: set command (a stdio server) or url (streamable HTTP)"
                          + (", not both" if "command" in table else ""))
    out: dict[str, Any] = {"timeout_s": 30.0, "startup_timeout_s": 20.0, "pure": [],  # "tools" absent: all
                           "requires_approval": []}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in ("command", "cwd", "url"):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{at}: {value!r} is not a non-empty string")
            if key == "url":
                _check_url(at, value)
        elif key in ("args", "tools", "pure", "requires_approval"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{at}: {value!r} is not a list of strings")
            value = list(value)
        elif key == "env":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{at}: {value!r} is not a table of strings (env = {{ NAME = \"value\" }})")
            value = {str(k): v for k, v in value.items()}
        else:  # timeout_s, startup_timeout_s
            value = _number(at, value, float)
            _check_bounds(at, value, {"above": 0})
        out[key] = value
    if "url" in out and ({"args", "env", "cwd"} & set(table)):
        raise ConfigError(f"{where}: args, env and cwd are for a stdio server (command), not a url")
    return out


def _coerce_mcp(value: Any) -> dict[str, dict[str, Any]]:
    """The ``[mcp.NAME]`` tables (``vivace.runtime.mcp`` starts the servers)."""
    if not isinstance(value, dict):
        raise ConfigError(f"mcp: {value!r} is not a table; write [mcp.NAME] tables in the TOML file")
    return {name: _mcp_table(name, table) for name, table in value.items()}


def _coerce(key: str, value: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type and check it, or raise one line naming the key."""
    if key == "models":
        return _coerce_models(value)
    if key == "mcp":
        return _coerce_mcp(value)
    hint = _HINTS[key]
    optional = get_origin(hint) is not None and type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint) if optional else hint
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    meta = _FIELDS[key].metadata
    out: Any
    if base is bool:
        if isinstance(value, bool):
            out = value
        elif str(value).lower() in ("1", "true", "yes", "on"):
            out = True
        elif str(value).lower() in ("0", "false", "no", "off"):
            out = False
        else:
            raise ConfigError(f"{key}: {value!r} is not a valid bool")
    elif base in (int, float):
        out = _number(key, value, base)
        _check_bounds(key, out, meta)
    elif get_origin(base) is list:
        if not isinstance(value, (str, list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not a list")
        items = value.split(",") if isinstance(value, str) else list(value)
        out = [str(v).strip() for v in items if str(v).strip()]
    else:  # str or Path
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: {value!r} is not a valid {getattr(base, '__name__', base)}")
        if not str(value).strip():
            raise ConfigError(f"{key}: must not be empty")
        out = Path(str(value)).expanduser() if base is Path else str(value)
    choices = meta.get("choices")
    if choices and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(choices)}")
    if meta.get("url"):
        for url in out if isinstance(out, list) else [out]:
            _check_url(key, url)
    return out


def _apply(values: dict[str, Any], layer: Mapping[str, Any], origin: str) -> None:
    for key, value in layer.items():
        if key not in _FIELDS:
            raise ConfigError(f"{origin}: {unknown_key(key, _FIELDS)}")
        try:
            values[key] = _coerce(key, value)
        except ConfigError as exc:
            where = f"VIVACE_{key.upper()}" if origin == "environment" else origin
            raise ConfigError(f"{exc} (from {where})") from None


def _read_file(file: Path) -> dict[str, Any]:
    """The TOML layer; an unreadable, non-UTF-8 or invalid file is one line naming it."""
    try:
        return tomllib.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it ({exc.strerror or exc})") from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config from its three layers; ``None`` overrides and empty ``VIVACE_*`` variables are ignored.

    An empty variable counts as unset (``VIVACE_HOME=`` means the default home,
    not the current directory), as most tools treat ``VAR=``.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    file = Path(path) if path else Path(DEFAULT_CONFIG_FILE)
    if path and not file.is_file():
        raise ConfigError(f"config file not found: {file}" + (" (it is a directory)" if file.is_dir() else ""))
    if file.is_file():
        _apply(values, _read_file(file), str(file))
    env_layer = {key: value for key in _FIELDS if (value := environ.get(f"VIVACE_{key.upper()}", "")).strip()}
    _apply(values, env_layer, "environment")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "the command line")
    return Config(**values)
