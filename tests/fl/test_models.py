import os
import time

import pytest
import torch

from fl.lm.models import (
    ModelLoadError, add_lora, bytes_resident, cache_root, count_parameters, count_trainable, embedded_gguf_path,
    keep_layers, load_model, load_tokenizer, lora_state, set_lora_state, tiny_llama,
)
from fl.lm.specs import LoraSpec, ModelSpec, TinyLlamaSpec


def test_tiny_llama_shares_smollm2_tokenizer(tokenizer):
    model, tok = tiny_llama(n_layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128)
    assert tok is tokenizer
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert model.config.num_hidden_layers == 2
    assert tok.chat_template  # prompts use the same chat template as SmolLM2
    assert not any(p.requires_grad for p in model.parameters())


def test_tiny_llama_is_seeded():
    a, _ = tiny_llama(seed=3)
    b, _ = tiny_llama(seed=3)
    c, _ = tiny_llama(seed=4)
    wa, wb, wc = (m.model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_exact_counts():
    model, _ = tiny_llama(n_layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128)
    V, H, I, kv = 49152, 64, 128, 2 * 16
    per_layer = H * H + H * kv + H * kv + H * H + 3 * H * I + 2 * H  # q k v o, gate up down, 2 norms
    n = V * H + 2 * per_layer + H  # embedding tied with the head: counted once; final norm
    assert count_parameters(model) == n
    # fp32 weights + the rotary buffers (inv_freq and original_inv_freq, head_dim/2 each)
    assert bytes_resident(model) == 4 * n + 2 * 8 * 4
    assert bytes_resident(model.to(torch.bfloat16)) == 2 * n + 2 * 8 * 2  # .to() casts the float buffers too
    lora = add_lora(tiny_llama()[0], LoraSpec(rank=4, target_modules=("q_proj", "v_proj")))
    assert count_trainable(lora) == 2 * (4 * (H + H) + 4 * (H + kv))
    assert count_parameters(lora) == n + count_trainable(lora)


def test_keep_layers_rebuilds_the_stack():
    model, tok = tiny_llama(n_layers=4)
    original = list(model.model.layers)
    keep_layers(model, [0, 2, 3])
    assert list(model.model.layers) == [original[0], original[2], original[3]]
    assert model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    ids = torch.tensor([[1, 5, 9, 13]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, attention_mask=torch.ones_like(ids))  # KV cache by layer_idx
    assert out.shape == (1, 7)


@pytest.mark.parametrize("bad", [[], [1, 1], [2, 1], [0, 4], [-1, 0]])
def test_keep_layers_errors(bad):
    model, _ = tiny_llama(n_layers=4)
    with pytest.raises(ValueError, match=r"strictly increasing indices in \[0, 3\]"):
        keep_layers(model, bad)


def test_keep_layers_spec_errors_name_the_key():
    with pytest.raises(ValueError, match="keep_layers"):
        ModelSpec(keep_layers=[3, 1])


def test_lora_state_round_trip(tiny_lora):
    state = lora_state(tiny_lora)
    assert all(".lora_" in name for name in state)
    changed = {k: v + 1.0 for k, v in state.items()}
    set_lora_state(tiny_lora, changed)
    assert all(torch.equal(lora_state(tiny_lora)[k], changed[k]) for k in state)
    with pytest.raises(KeyError, match="does not match"):
        set_lora_state(tiny_lora, {"x": torch.zeros(1)})
    name = next(iter(state))
    with pytest.raises(ValueError, match="shape"):
        set_lora_state(tiny_lora, {**state, name: torch.zeros(1)})


def test_lora_targets_must_exist():
    with pytest.raises(ValueError, match=r"target_modules \['qkv'\] name no linear layer"):
        add_lora(tiny_llama()[0], LoraSpec(target_modules=("qkv",)))


def test_lora_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = lora_state(add_lora(tiny_llama()[0], LoraSpec(), seed=7))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = lora_state(add_lora(tiny_llama()[0], LoraSpec(), seed=7))
    c = lora_state(add_lora(tiny_llama()[0], LoraSpec(), seed=8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_missing_model_says_how_to_provide_it():
    with pytest.raises(ModelLoadError, match=r"(?s)not available offline.*hf download.*'smollm2'"):
        load_model(ModelSpec(name_or_path="no-such-org/no-such-model-fedwave"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec(name_or_path="/nonexistent/model.gguf"))


def test_local_model_directory_with_layer_subset_and_dtype(tmp_path):
    model, tok = tiny_llama(n_layers=3, seed=5)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tok2 = load_model(ModelSpec(name_or_path=str(tmp_path / "m")))
    ids = torch.tensor([[1, 200, 300, 400]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert tok2("hello world")["input_ids"] == tok("hello world")["input_ids"]
    sub, _ = load_model(ModelSpec(name_or_path=str(tmp_path / "m"), keep_layers=[0, 2], dtype="bfloat16"))
    assert sub.config.num_hidden_layers == 2 and sub.dtype == torch.bfloat16
    assert torch.equal(sub.model.layers[1].mlp.up_proj.weight, model.model.layers[2].mlp.up_proj.weight.bfloat16())


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDWAVE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("FEDWAVE_CACHE")
    assert cache_root() == __import__("pathlib").Path.home() / ".cache" / "fedwave" / "models"


def test_gguf_cache_key_follows_file_changes(tmp_path):
    from fl.lm.models import _gguf_cache_dir

    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    first = _gguf_cache_dir(f, tmp_path)
    assert _gguf_cache_dir(f, tmp_path) == first
    os.utime(f, ns=(1, 10**18))
    assert _gguf_cache_dir(f, tmp_path) != first


def test_tiny_spec_validation():
    with pytest.raises(ValueError, match=r"hidden \(60\) must be a multiple of heads \(8\)"):
        TinyLlamaSpec(hidden=60, heads=8)


@pytest.mark.slow
def test_gguf_loads_and_cached_copy_gives_identical_logits(tmp_path):
    """Dequantise the embedded GGUF into an empty cache, then load the cached safetensors."""
    assert embedded_gguf_path().is_file()
    t0 = time.perf_counter()
    fresh, tok_fresh = load_model(ModelSpec(name_or_path=str(embedded_gguf_path())), cache_dir=tmp_path)
    t1 = time.perf_counter()
    cached, tok_cached = load_model(ModelSpec(name_or_path="smollm2"), cache_dir=tmp_path)
    t2 = time.perf_counter()
    print(f"GGUF load + convert {t1 - t0:.1f} s, cached load {t2 - t1:.1f} s")
    assert len(list(tmp_path.iterdir())) == 1  # the path and the name share one cache entry
    assert fresh.config.num_hidden_layers == 30 and fresh.config.hidden_size == 576
    assert fresh.config.vocab_size == 49152
    text = "The quick brown fox jumps over the lazy dog."
    assert tok_fresh(text)["input_ids"] == tok_cached(text)["input_ids"]
    ids = torch.tensor([tok_fresh(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, cached(ids).logits)


@pytest.mark.slow
def test_smollm2_answers_the_france_question():
    model, tok = load_model(ModelSpec())
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
