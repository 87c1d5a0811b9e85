"""One typed configuration: ``vivace.toml`` < ``VIVACE_*`` env vars < CLI flags.

Every knob lives in one flat dataclass so that a key has exactly one name in
all three layers (``kv_cache_dtype`` in TOML, ``VIVACE_KV_CACHE_DTYPE`` in the
environment, ``--kv-cache-dtype`` on the command line).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

from vivace.errors import ConfigError

DEFAULT_CONFIG_FILE = "vivace.toml"


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass
class Config:
    """Everything vivace can be told. Defaults are the embedded CPU setup."""

    home: Path = field(default_factory=lambda: Path("~/.cache/vivace").expanduser())
    backend: str = field(default="vllm", metadata=_choices("vllm", "openai", "fake"))
    model: str = "smollm2-135m"
    served_model_name: str | None = None

    # vLLM engine
    dtype: str = field(default="auto", metadata=_choices("auto", "bfloat16", "float16", "float32"))
    max_model_len: int | None = None
    quantization: str | None = None
    kv_cache_dtype: str = field(
        default="auto", metadata=_choices("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
    )
    enable_prefix_caching: bool = True
    max_num_seqs: int = 64
    kv_cache_space_gib: float = 1.0
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = True
    seed: int = 0

    # OpenAI-compatible servers
    base_urls: list[str] = field(default_factory=list)
    api_key_env: str = "VIVACE_API_KEY"
    request_timeout_s: float = 120.0
    connect_retries: int = 3

    # Process-wide limits and generation defaults
    max_in_flight: int = 32
    max_tokens: int = 512
    temperature: float = 0.0
    repetition_penalty: float = 1.15

    # Orchestration
    mode: str = field(default="auto", metadata=_choices("auto", "sot", "normal"))
    sot_max_points: int = 8

    # Retrieval and compression
    chroma_path: Path | None = None  # default: $VIVACE_HOME/chroma
    chroma_url: str | None = None  # a Chroma server instead of the local store
    embedder: str | None = None  # default: the bundled all-MiniLM-L6-v2
    retrieval_k: int = 4
    chunk_tokens: int = 200
    chunk_overlap: int = 40
    compression: str = field(default="auto", metadata=_choices("off", "auto", "always"))
    compression_margin_s: float = 0.05
    compression_ratio: float = 2.0  # target original/compressed when compressing

    @property
    def chroma_dir(self) -> Path:
        return self.chroma_path or self.home / "chroma"

    @property
    def runs_dir(self) -> Path:
        """Where every run's trace is appended as JSONL."""
        return self.home / "runs"

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = get_type_hints(Config)


def _coerce(key: str, value: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type, or raise one clear line."""
    hint = _HINTS[key]
    optional = get_origin(hint) is not None and type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint) if optional else hint
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("", "none"))):
        return None
    try:
        if base is bool:
            if isinstance(value, bool):
                out: Any = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                out = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                out = False
            else:
                raise ValueError
        elif base is int:
            if isinstance(value, bool):
                raise ValueError
            out = int(value)
        elif base is float:
            out = float(value)
        elif base is Path:
            out = Path(str(value)).expanduser()
        elif get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            out = [str(v).strip() for v in items if str(v).strip()]
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {getattr(base, '__name__', base)}") from None
    choices = _FIELDS[key].metadata.get("choices")
    if choices and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(choices)}")
    if isinstance(out, (int, float)) and not isinstance(out, bool) and out < 0:
        raise ConfigError(f"{key}: {out!r} must not be negative")
    return out


def _apply(values: dict[str, Any], layer: Mapping[str, Any], origin: str) -> None:
    for key, value in layer.items():
        if key not in _FIELDS:
            raise ConfigError(f"{origin}: unknown key {key!r}")
        values[key] = _coerce(key, value)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config from its three layers; ``None`` overrides are ignored."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    file = Path(path) if path else Path(DEFAULT_CONFIG_FILE)
    if path and not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML ({exc})") from None
        _apply(values, data, str(file))
    env_layer = {
        key: environ[f"VIVACE_{key.upper()}"]
        for key in _FIELDS
        if f"VIVACE_{key.upper()}" in environ
    }
    _apply(values, env_layer, "environment")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    return Config(**values)
