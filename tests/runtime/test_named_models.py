"""Named models: the ``[models.NAME]`` tables, the runtime's ModelSet, and the engine arguments of GPU entries.

FakeBackend stands in for the models where only routing, opening and closing
are under test; the GPU entries are checked by the arguments vivace would hand
vLLM (no GPU here), through the same code that starts the CPU engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from vivace.assembly import runtime_for
from vivace.config import Config, load_config
from vivace.errors import ConfigError, InputError, ModelError
from vivace.runtime import engine_options
from vivace.runtime.call import Call
from vivace.runtime.fake import FakeBackend
from vivace.runtime.model_set import ModelSet
from vivace.runtime.models import resolve

TABLES = """
model = "smollm2-135m"
dtype = "bfloat16"
max_tokens = 100
[models.fp32]
dtype = "float32"
[models.int8]
model = "smollm2-135m-w8a8"
[models.large]
model = "Qwen/Qwen2.5-7B-Instruct-AWQ"
quantization = "awq"
kv_cache_dtype = "fp8"
gpu_memory_utilization = 0.9
max_model_len = 16384
[models.api]
backend = "openai"
base_urls = ["http://127.0.0.1:8001"]
served_model_name = "small"
"""


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "vivace.toml"
    file.write_text(text)
    return file


def test_tables_override_the_top_level_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TABLES), {"kv_cache_space_gib": 2}, environ={})
    assert config.model_names == ["default", "fp32", "int8", "large", "api"]
    assert config.for_model("default") is config and config.for_model(None) is config
    fp32 = config.for_model("fp32")
    assert (fp32.model, fp32.dtype, fp32.max_tokens, fp32.kv_cache_space_gib) == ("smollm2-135m", "float32", 100, 2.0)
    api = config.for_model("api")
    assert (api.backend, api.base_urls, api.served_model_name, api.dtype) == (
        "openai", ["http://127.0.0.1:8001"], "small", "bfloat16")
    assert config.models["large"]["gpu_memory_utilization"] == 0.9  # coerced like the top-level key
    with pytest.raises(ConfigError, match="unknown model 'nope'; models: default, fp32"):
        config.for_model("nope")


@pytest.mark.parametrize("table, message", [
    ("[models.fast]\ntemperature = 0.5", "models.fast: unknown key 'temperature'; known: backend"),
    ("[models.default]\ndtype = 'float32'", "models.default: the default model is set by the top-level keys"),
    ("[models.x]\ndtype = 'int3'", "models.x.dtype: 'int3' is not one of auto, bfloat16, float16, float32"),
    ("[models.x]\nmax_num_seqs = 0", "models.x.max_num_seqs: 0 must be at least 1"),
    ("[models.x]\nbase_urls = ['ftp://a']", "models.x.base_urls: 'ftp://a' is not a valid URL"),
    ("[models.x]\nbackend = 'openai'", "models.x: backend 'openai' needs base_urls"),
    ("models = 3", "models: 3 is not a table"),
    ("[models]\nx = 'fp32'", "models.x: 'fp32' is not a table"),
    ('[models."a b"]\ndtype = "float32"', "models.a b: a model name is letters, digits"),
])
def test_bad_tables_are_one_line(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, table), environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_models_come_from_the_file_only() -> None:
    with pytest.raises(ConfigError, match=r"models: 'x' is not a table.*\(from VIVACE_MODELS\)"):
        load_config(environ={"VIVACE_MODELS": "x"})


def test_gpu_entry_engine_arguments(tmp_path: Path) -> None:
    """A large model on a GPU, from its table: the arguments vLLM gets are the table's, the rest inherited."""
    from vivace.runtime.vllm_options import engine_args

    config = load_config(write(tmp_path, TABLES), {"home": str(tmp_path)}, environ={})
    args = engine_args(engine_options(config.for_model("large")))
    assert args["model"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"  # a hub id is passed on as is
    assert (args["quantization"], args["kv_cache_dtype"], args["gpu_memory_utilization"]) == ("awq", "fp8", 0.9)
    assert (args["max_model_len"], args["dtype"], args["served_model_name"]) == (16384, "bfloat16",
                                                                                 "Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert args["enable_prefix_caching"] is True and args["max_num_seqs"] == 64  # inherited top-level defaults
    fp32 = engine_args(engine_options(config.for_model("fp32").replace(model=str(_folder(tmp_path)))))
    assert (fp32["dtype"], fp32["quantization"], "gpu_memory_utilization" in fp32) == ("float32", None, False)


def _folder(tmp_path: Path) -> Path:
    """A minimal model folder resolve() accepts (config, weights, tokenizer, chat template)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        (folder / name).write_text("{}")
    return folder


def test_the_w8a8_name_says_how_to_write_its_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"smollm2-135m-w8a8: its checkpoint .*SmolLM2-135M-Instruct-w8a8 is not "
                                         r"written yet; `vivace bench quant --configs w8a8-int8` writes it"):
        resolve("smollm2-135m-w8a8", tmp_path)
    assert resolve("smollm2-135m-w8a8", tmp_path, prepare_missing=False).endswith("models/SmolLM2-135M-Instruct-w8a8")


def test_a_named_model_opens_once_on_first_use_and_closes_with_the_runtime() -> None:
    async def scenario() -> tuple[list[str], dict[str, Any], FakeBackend, FakeBackend]:
        started: list[str] = []
        made: dict[str, FakeBackend] = {}

        async def opener(name: str) -> FakeBackend:
            started.append(name)
            await asyncio.sleep(0.01)  # a start that takes a while: concurrent first calls must wait for it
            made[name] = FakeBackend(model=f"served-{name}")
            return made[name]

        default = FakeBackend(model="main")
        models = ModelSet(default, ["default", "small"], opener)
        got = await asyncio.gather(*(models.get("small") for _ in range(5)), models.get(None))
        assert all(g is made["small"] for g in got[:5]) and got[5] is default
        with pytest.raises(InputError, match="unknown model 'big'; models: default, small"):
            await models.get("big")
        described = models.describe("small")
        await models.aclose()
        return started, described, made["small"], default

    started, described, small, default = asyncio.run(scenario())
    assert started == ["small"]
    assert described == {"name": "small", "backend": "fake", "model": "served-small"}
    assert small.closed and default.closed


def test_the_call_path_sends_each_call_to_its_model_behind_one_limiter() -> None:
    config = Config(backend="fake", max_in_flight=1, models={"small": {"backend": "fake"}})
    main, small = FakeBackend(model="main", latency_s=0.01), FakeBackend(model="tiny", latency_s=0.01)
    runtime = runtime_for(config, main, models={"small": small}, save_runs=False)

    async def calls() -> list[Any]:
        ask = [Call([{"role": "user", "content": f"q{i}"}], model=m) for i, m in enumerate([None, "small", "default", "small"])]
        return list(await asyncio.gather(*(runtime.call(c) for c in ask)))

    results = asyncio.run(calls())
    traces = [t for _, t in results]
    assert [t.model for t in traces] == ["default", "small", "default", "small"]
    assert [t.served_by for t in traces] == ["fake:main", "fake:tiny", "fake:main", "fake:tiny"]
    assert len(main.requests) == 2 and len(small.requests) == 2
    assert runtime.limiter.peak == 1  # one process-wide cap across both models
    assert sum(t.queue_s > 0 for t in traces) >= 2  # the limiter's wait is each call's queue time
    asyncio.run(runtime.aclose())
    assert main.closed and small.closed


def test_models_list_shows_the_named_models(tmp_path: Path) -> None:
    from vivace.commands.models import configured_row

    config = load_config(write(tmp_path, TABLES), environ={})
    rows = {name: configured_row(config, name) for name in config.model_names}
    assert rows["default"] == {"name": "default", "backend": "vllm", "model": "smollm2-135m",
                               "settings": "the top-level keys"}
    assert rows["fp32"]["settings"] == "dtype=float32" and rows["int8"]["model"] == "smollm2-135m-w8a8"
    assert (rows["api"]["backend"], rows["api"]["model"]) == ("openai", "http://127.0.0.1:8001")
    assert rows["large"]["settings"] == "quantization=awq, kv_cache_dtype=fp8, gpu_memory_utilization=0.9, max_model_len=16384"


@pytest.mark.parametrize("default_name, on_cpu, warned", [("vllm", True, True), ("vllm", False, False),
                                                          ("fake", True, False)])
def test_a_second_cpu_engine_warns_that_both_share_the_cores(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture, default_name: str,
                                                              on_cpu: bool, warned: bool) -> None:
    import vivace.runtime.model_set as model_set

    class Engine(FakeBackend):
        name = "vllm"

    default = Engine() if default_name == "vllm" else FakeBackend()
    monkeypatch.setattr(model_set, "_on_cpu", lambda: on_cpu)

    async def opener(name: str) -> FakeBackend:
        return Engine()

    models = ModelSet(default, ["default", "int8"], opener)
    with caplog.at_level("WARNING", logger="vivace.runtime.model_set"):
        asyncio.run(models.get("int8"))
    said = [r.getMessage() for r in caplog.records if r.name == "vivace.runtime.model_set"]
    assert bool(said) is warned
    if warned:
        assert "int8 is a second vLLM engine" in said[0] and "as default" in said[0]
