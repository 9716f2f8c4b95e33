"""Shared fixtures for fl/ tests: the SmolLM2 tokenizer (converted once, then cached on disk
and per process), tiny models, a small encoded fortune task, and a small FedAvgLoRA config."""

import ctypes
import ctypes.util
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _keep_freed_memory():
    """The run-time equivalent of GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=...: glibc otherwise returns big buffers to the OS after every
    step and tiny-model steps get ~10x slower from page faults (docs/benchmarks.md)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_keep_freed_memory()


@pytest.fixture(scope="session")
def tokenizer():
    from fl.lm.models import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.fixture(scope="session")
def fortunes():
    from fl.lm.data import load_fortunes

    return load_fortunes(max_per_class=40)


@pytest.fixture(scope="session")
def task(fortunes, tokenizer):
    from fl.lm.data import encode_task

    return encode_task(fortunes, tokenizer, max_len=96)


@pytest.fixture
def tiny_lora(tokenizer):
    """A 2-layer random Llama with LoRA on q, v (rank 4); a fresh one per test."""
    from fl.lm.models import add_lora, tiny_llama
    from fl.lm.specs import LoraSpec

    model, _ = tiny_llama(seed=0)
    return add_lora(model, LoraSpec(rank=4, alpha=8), seed=0)


def _small_options(**over):
    options = dict(
        model={"kind": "tiny"},
        lora={"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        data={"max_per_class": 40, "n_test": 12, "max_len": 96},
        partition={"kind": "iid"},
        local_steps=2,
        batch_size=4,
        lr=1e-2,
    )
    options.update(over)
    return options


@pytest.fixture(scope="session")
def small_options():
    """``small_options(**overrides)``: options of a fast FedAvgLoRA (tiny model, a few dozen
    fortunes per class, 2 local steps of 4 examples)."""
    return _small_options
