"""execution.device/dtype and the frozen prefix in kd_topk, fedsoda and split_lora (tiny models).

With adapters only in the top layers (``lora.layers``) each algorithm builds its prefixes and
trains, distils and evaluates from them; the rounds equal those of the prefix cache switched
off to float tolerance (only summation orders differ), and a checkpoint taken between rounds
resumes identically. ``dtype: bfloat16`` runs every code path under autocast.
"""

import math

import pytest
import torch

from fl.core.actions import ClientResult
from fl.core.algorithm import AlgorithmContext, Runtime, get_algorithm
from fl.lm.models import lora_state
from fl.core.runner import drive, run_plain

KD = dict(
    model={"kind": "tiny", "n_layers": 3}, client_keep_layers=[0, 2],
    lora={"rank": 4, "alpha": 8, "layers": {"top": 1}},
    data={"max_per_class": 30, "n_test": 6, "max_len": 96, "n_public": 6},
    partition={"kind": "iid"}, local_steps=2, batch_size=2, lr=1e-2, public_batch_size=2, server_steps=2,
    k="adaptive", k_min=2, k_max=512, eval_clients=True,
    # server: projected after the final norm (above L = 2); client: the states entering L = 1
    projection={"rank": 3, "server_layer": -1, "client_layer": 1},
)
KD_BELOW = {  # server L = 1, projected after layer 2 (between L and the top); client L = 1,
    # projected at the embeddings (below L: its distillation runs the whole model)
    **KD, "client_keep_layers": [0, 1, 2], "lora": {"rank": 4, "alpha": 8, "layers": {"top": 2}},
    "projection": {"rank": 3, "server_layer": 2, "client_layer": 0},
}
SODA = dict(
    model={"kind": "tiny", "n_layers": 4},
    lora={"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers": {"top": 1}},
    data={"max_per_class": 40, "n_test": 8, "max_len": 96, "n_public": 16},
    partition={"kind": "iid"}, local_steps=2, batch_size=4, lr=1e-2,
    sgp_keep=3, sgp_calibration=8, oda_initial_steps=0, oda_every=1, oda_steps=2, oda_batch_size=4,
    oda_lr=1e-2, probe_batch_size=4,
)
SPLIT = dict(  # the client side must hold adapters: layers 1, 2 of 3, cut after 2 (L = 1)
    model={"kind": "tiny", "n_layers": 3, "hidden": 32, "intermediate": 64},
    lora={"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers": {"top": 2}},
    data={"max_per_class": 12, "n_test": 6, "max_len": 80}, partition={"kind": "iid"},
    local_steps=2, batch_size=2, lr=1e-2, cut_layer=2,
    activation_dtype="fp32", upload_dtype="fp32", download_dtype="fp32",
)
CASES = {"kd_topk": KD, "kd_topk_below": KD_BELOW, "fedsoda": SODA, "split_lora": SPLIT}
PREFIXES = {"kd_topk": ("server_prefix", "client_prefix"), "fedsoda": ("prefix", "full_prefix"),
            "split_lora": ("prefix",)}


def _algorithm(name, runtime=Runtime(), n_clients=2, **over):
    cls = get_algorithm(name.removesuffix("_below"))
    options = {**CASES[name], **over}
    return cls(cls.Config(**options), AlgorithmContext(n_clients=n_clients, seed=0, rounds=2, runtime=runtime))


def _prefixes(algo):
    return [getattr(algo, a) for a in PREFIXES[algo.name]]


def _close(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), k
        else:
            assert y == pytest.approx(x, rel=rel, abs=1e-6), k


def _same(a: dict, b: dict) -> bool:
    """Equal rows, NaN included."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def _round(algo, rnd: int, clients=(0, 1)) -> dict:
    results = []
    for c in clients:
        update, _ = drive(algo.client_round(rnd, c))
        results.append(ClientResult(c, update, algo.n_samples(c), base_round=rnd))
    metrics, _ = drive(algo.server_round(rnd, results, []))
    return {**metrics, **algo.evaluate(rnd)}


def _trainable(algo) -> dict:
    out = {}
    for attr in ("model", "server_model", "client_model", "sub", "full"):
        if hasattr(algo, attr):
            out.update({f"{attr}/{k}": v for k, v in lora_state(getattr(algo, attr)).items()})
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_prefix_gives_the_rounds_of_the_whole_model(name):
    """Client updates (their losses), the server's distillation / alignment / divergence,
    bits and the evaluation of every model equal those without the prefix cache; fedsoda's
    ODA runs between two evaluations from the same cache, which it leaves valid."""
    cached = _algorithm(name)
    plain = _algorithm(name, Runtime(prefix_cache=False))
    assert all(p is not None for p in _prefixes(cached))
    assert all(p is None for p in _prefixes(plain))
    budget = Runtime().prefix_cache_mb << 20
    assert sum(p.max_bytes for p in _prefixes(cached)) == budget  # two caches share it
    rows = [run_plain(a, rounds=1, evaluate_initial=True) for a in (cached, plain)]
    for got, ref in zip(*rows):
        _close(got, ref, rel=1e-4)
    assert all(p.hits > 0 for p in _prefixes(cached))  # the cached states were used again
    if name == "fedsoda":
        assert rows[0][1]["oda"] == 1.0


@pytest.mark.parametrize("name", ["kd_topk", "fedsoda", "split_lora"])
def test_a_checkpoint_with_prefixes_resumes_identically(name):
    """The prefixes are rebuilt, not written (_REBUILT_ATTRS); the resumed round recomputes
    each cached state alone, so it gives the same bits as the uninterrupted one."""
    over = {"oda_every": 2} if name == "fedsoda" else {}  # ODA in the resumed round only
    a = _algorithm(name, **over)
    _round(a, 0)
    state = a.state_dict()
    b = _algorithm(name, **over)
    b.load_state_dict(state)
    assert all(p is not None and p.nbytes == 0 for p in _prefixes(b))  # a fresh, empty cache
    assert _same(_round(b, 1), _round(a, 1))
    ta, tb = _trainable(a), _trainable(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.filterwarnings("ignore:execution.dtype")
@pytest.mark.parametrize("prefix_cache", [True, False])
@pytest.mark.parametrize("name", ["kd_topk", "fedsoda", "split_lora"])
def test_bfloat16_autocast_runs_a_round_and_an_evaluation(name, prefix_cache):
    algo = _algorithm(name, Runtime(device="cpu", dtype="bfloat16", prefix_cache=prefix_cache))
    assert algo.device == torch.device("cpu")
    (row,) = run_plain(algo, rounds=1)
    for key in ("train_loss", "accuracy", "loss"):
        assert math.isfinite(row[key]), key
    assert all(t.dtype == torch.float32 for t in _trainable(algo).values())  # autocast casts, never stores


def test_fedsoda_lora_layers_name_sub_model_layers():
    """lora.layers counts the sub-model's layers; the full model's adapters sit in the
    original layers they stand for, so every sub adapter has its counterpart."""
    algo = _algorithm("fedsoda", model={"kind": "tiny", "n_layers": 6}, sgp_keep=4,
                      lora={**SODA["lora"], "layers": [1, 3]})
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in algo.full_init_state}
    assert layers == {algo.kept[1], algo.kept[3]} and algo.kept[3] == 5  # not layer 3: mapped
    assert sorted(algo.name_map.values()) == sorted(algo.full_init_state)
    assert algo.prefix.layer == 1 and algo.full_prefix.layer == algo.kept[1]


def test_split_client_forward_from_hidden_states_needs_its_layer():
    algo = _algorithm("split_lora", n_clients=1)
    batch, hidden = algo.prefix.train_states([0, 1])
    whole = algo.split.client_forward(batch)
    assert torch.allclose(algo.split.client_forward(batch, None, hidden, 1), whole, atol=1e-5)
    with pytest.raises(ValueError, match=r"start must be in \[0, 1\].*Got start=1 without them"):
        algo.split.client_forward(batch, None, None, 1)
    with pytest.raises(ValueError, match=r"Got start=2 with them"):
        algo.split.client_forward(batch, None, hidden, 2)


@pytest.mark.parametrize("layer", [-1, 2])
def test_kd_public_outputs_run_the_shared_head_once(layer):
    """kd_topk's public logits and projections at the answer positions: from the prompts'
    shared head run once (keys/values shared by every row) equal to every row running its
    whole sequence, and to the whole model — at the final norm and between L and the top."""
    from fl.lm.data import collate
    from fl.lm.models import full_precision_norms
    from fl.lm.prefix import FrozenPrefix

    algo = _algorithm("kd_topk_below")
    model = algo.server_model.double()
    shared = FrozenPrefix(model, algo.task, algo.server_prefix.layer)
    whole = FrozenPrefix(model, algo.task, algo.server_prefix.layer, share_head=False)
    assert shared.head_len > 0 and whole.head_len == 0
    public = algo.public_indices(0)
    sel = algo.selection(collate(algo.task, public))
    with full_precision_norms(), torch.no_grad():
        ref = algo.public_outputs(model, public, sel, layer, prefix=None)
        for pf in (shared, whole):
            got = algo.public_outputs(model, public, sel, layer, prefix=pf)
            assert torch.allclose(got[0], ref[0], atol=1e-9)
            assert torch.allclose(got[1].double(), ref[1].double(), atol=1e-9)
