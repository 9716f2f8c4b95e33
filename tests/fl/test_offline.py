"""fedwave never downloads: importing fl or sim forces offline mode, whatever the environment,
and a Hugging Face id missing from the local cache fails at once without touching the network.

Each check runs in a fresh interpreter whose environment asks for *online* mode
(HF_HUB_OFFLINE=0, ...) and whose HF_HOME is a temporary folder; sockets are patched there to
record and refuse any name lookup or connection.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from fl.lm.models import ModelLoadError, load_model, tiny_llama
from fl.lm.specs import ModelSpec

# prepended to every subprocess: any DNS lookup or connection is recorded and refused
NO_NETWORK = """
import json, socket
attempts = []
def _refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args)[:120])
    raise OSError("network disabled by the test")
socket.getaddrinfo = _refuse
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def _run(code, hf_home, timeout=180):
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0",
               HF_DATASETS_OFFLINE="0")
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", NO_NETWORK + code], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry", ["fl", "sim.cli"])
def test_import_forces_offline_even_over_modules_imported_before(entry, tmp_path):
    """The user's program imported the Hugging Face libraries first, with online settings."""
    got = _run(f"""
import os
import datasets.config, huggingface_hub.constants, transformers.utils.hub
before = huggingface_hub.constants.HF_HUB_OFFLINE
import {entry}
print(json.dumps(dict(
    before=before,
    env={{k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}},
    hub=huggingface_hub.constants.HF_HUB_OFFLINE,
    hub_mode=huggingface_hub.is_offline_mode(),
    transformers_mode=transformers.utils.hub.is_offline_mode(),
    datasets=[datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE],
    attempts=attempts,
)))
""", tmp_path)
    assert got["before"] is False  # the test means something: they had read "0"
    assert got["env"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert got["hub"] is True and got["hub_mode"] is True and got["transformers_mode"] is True
    assert got["datasets"] == [True, True]
    assert got["attempts"] == []


def test_libraries_imported_after_fl_start_offline(tmp_path):
    got = _run("""
import sys
import fl
light = sorted(m for m in ("torch", "transformers", "huggingface_hub", "datasets") if m in sys.modules)
import datasets.config, huggingface_hub
print(json.dumps(dict(light=light, hub=huggingface_hub.is_offline_mode(),
                      datasets=datasets.config.HF_DATASETS_OFFLINE)))
""", tmp_path)
    assert got == {"light": [], "hub": True, "datasets": True}  # importing fl stays cheap


@pytest.mark.parametrize("what", ["load_model", "load_tokenizer"])
def test_unknown_hub_id_fails_at_once_without_network(what, tmp_path):
    """Online settings, an empty cache: without fedwave's guard huggingface_hub retries for ~25 s."""
    got = _run(f"""
import sim.cli  # the fedwave entry point
from fl.lm.models import ModelLoadError, load_model, load_tokenizer
from fl.lm.specs import ModelSpec
try:
    load_model(ModelSpec(name_or_path="fedwave-test/no-such-model")) if {what!r} == "load_model" \\
        else load_tokenizer("fedwave-test/no-such-model")
    error = None
except ModelLoadError as exc:
    error = str(exc)
print(json.dumps(dict(error=error, attempts=attempts)))
""", tmp_path)
    assert got["attempts"] == []
    assert got["error"] is not None
    assert "fl.options.model: 'fedwave-test/no-such-model' is not available offline" in got["error"]
    assert str(tmp_path / "hub") in got["error"]  # where it looked
    assert "`hf download fedwave-test/no-such-model`" in got["error"] and "'smollm2'" in got["error"]


def test_hub_id_in_the_local_cache_loads_offline(tmp_path):
    """A model downloaded once (laid out as huggingface_hub's cache) loads by its id."""
    model, tok = tiny_llama(n_layers=2, seed=3)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--fedwave-test--tiny-llama"
    model.save_pretrained(repo / "snapshots" / commit)
    tok.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    ids = [[1, 200, 300, 400]]
    got = _run(f"""
import torch
from fl.lm.models import load_model
from fl.lm.specs import ModelSpec
model, tok = load_model(ModelSpec(name_or_path="fedwave-test/tiny-llama"))
with torch.no_grad():
    logits = model(torch.tensor({ids})).logits
print(json.dumps(dict(logits=logits.flatten().tolist(), n_vocab=len(tok), attempts=attempts)))
""", tmp_path)
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.flatten()
    assert got["attempts"] == []
    assert got["n_vocab"] == len(tok)
    assert torch.equal(torch.tensor(got["logits"]), expected)


@pytest.mark.parametrize("name", ["./no/such/model-dir", "/no/such/model-dir", "~/no/such/model-dir"])
def test_missing_local_directory_is_named(name):
    with pytest.raises(ModelLoadError, match=rf"local model directory '{name}' does not exist"):
        load_model(ModelSpec(name_or_path=name))
