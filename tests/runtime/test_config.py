from pathlib import Path

import pytest

from vivace.config import Config, load_config
from vivace.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "vivace.toml"
    file.write_text('max_tokens = 100\nkv_cache_dtype = "fp8"\nbase_urls = ["http://a:1"]\n')
    env = {"VIVACE_MAX_TOKENS": "200", "VIVACE_ENABLE_PREFIX_CACHING": "false"}
    cfg = load_config(file, {"max_tokens": 300, "model": None}, environ=env)
    assert cfg.max_tokens == 300  # CLI beats env beats file
    assert cfg.kv_cache_dtype == "fp8"  # file value survives
    assert cfg.enable_prefix_caching is False  # env parsed as bool
    assert cfg.base_urls == ["http://a:1"]
    assert cfg.model == Config().model  # None flags do not override


def test_env_lists_and_paths() -> None:
    cfg = load_config(environ={"VIVACE_BASE_URLS": "http://a, http://b", "VIVACE_HOME": "~/x"})
    assert cfg.base_urls == ["http://a", "http://b"]
    assert cfg.home == Path("~/x").expanduser()


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"kv_cache_dtype": "fp9"}, "kv_cache_dtype: 'fp9' is not one of auto, fp8, fp8_e4m3, fp8_e5m2"),
        ({"max_tokens": "many"}, "max_tokens: 'many' is not a valid int"),
        ({"backend": "tgi"}, "backend: 'tgi' is not one of vllm, openai, fake"),
        ({"max_in_flight": -1}, "max_in_flight: -1 must be at least 1"),
        ({"no_such_key": 1}, "unknown key 'no_such_key'"),
    ],
)
def test_invalid_values_name_the_key(layer: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=layer, environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_tokens = = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml", environ={})
