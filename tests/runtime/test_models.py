import json
from pathlib import Path

import pytest

from vivace.errors import ModelError
from vivace.runtime import models


def test_prepared_model_is_complete(model_dir: Path) -> None:
    assert models.missing_parts(model_dir) == []
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert "quantization_config" not in config


def test_prepare_is_idempotent(model_dir: Path, vivace_home: Path) -> None:
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert models.prepare(models.EMBEDDED, vivace_home) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before
    leftovers = [p.name for p in models.models_dir(vivace_home).iterdir() if p.name.startswith(".SmolLM2") and p.is_dir()]
    assert leftovers == []  # no temporary folders left behind


def test_missing_parts_are_named(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert models.missing_parts(tmp_path) == ["weights", "tokenizer", "chat template"]
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        models.resolve(str(tmp_path), tmp_path)


def test_resolve(tmp_path: Path, model_dir: Path, vivace_home: Path) -> None:
    assert models.resolve("smollm2-135m", vivace_home) == str(model_dir)
    assert models.resolve(str(model_dir), vivace_home) == str(model_dir)
    assert models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct", vivace_home) == "HuggingFaceTB/SmolLM2-360M-Instruct"
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        models.resolve("no-such-model", vivace_home)


def test_list_models(model_dir: Path, vivace_home: Path) -> None:
    rows = models.list_models(vivace_home)
    embedded = next(r for r in rows if r["name"] == "smollm2-135m")
    assert embedded["status"] == "prepared" and embedded["path"] == str(model_dir)
