"""fedsoda (fl.algorithms.fedsoda.algorithm): payload and download bits, the layer map, ODA, determinism."""

import math

import pytest
import torch

from fl.core.algorithm import AlgorithmContext


def _options(**over):
    options = dict(
        model={"kind": "tiny", "n_layers": 6},
        lora={"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        data={"max_per_class": 40, "n_test": 8, "max_len": 96, "n_public": 16},
        partition={"kind": "iid"},
        local_steps=1, batch_size=4, lr=1e-2,
        sgp_keep=4, sgp_calibration=8, oda_initial_steps=0, oda_steps=2, oda_batch_size=4,
        oda_lr=1e-2, probe_batch_size=4,
    )
    options.update(over)
    return options


def _make(tokenizer, n_clients=3, seed=0, run_dir=None, **over):
    from fl.algorithms.fedsoda.algorithm import FedSODA, FedSODAConfig

    return FedSODA(FedSODAConfig(**_options(**over)), AlgorithmContext(n_clients=n_clients, seed=seed, run_dir=run_dir))


@pytest.fixture(scope="module")
def soda(tokenizer, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("soda")
    alg = _make(tokenizer, run_dir=str(run_dir))
    alg.run_dir = run_dir
    return alg


def test_sub_model_is_pruned_quantised_and_mapped(soda):
    from fl.algorithms.fedsoda.nf4 import NF4Linear

    assert len(soda.kept) == 4 and soda.kept[0] == 0 and soda.kept[-1] == 5
    assert (soda.run_dir / "sgp_map.json").is_file() and (soda.run_dir / "sgp_similarity.png").is_file()
    layers = soda.sub.get_base_model().model.layers
    assert len(layers) == 4
    assert sum(isinstance(m, NF4Linear) for m in soda.sub.modules()) == 7 * 4
    assert not any(isinstance(m, torch.nn.Linear) and ".layers." in n and ".lora_" not in n
                   for n, m in soda.sub.named_modules())
    for i, k in enumerate(soda.kept):  # sub layer i's adapters are the full model's layer kept[i]
        name = f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.default.weight"
        assert soda.name_map[name] == name.replace(f"layers.{i}.", f"layers.{k}.")
    full = soda.full_state()
    for n, o in soda.name_map.items():
        assert torch.equal(full[o], soda.global_state[n])
    untouched = set(full) - set(soda.name_map.values())
    assert untouched and all(torch.equal(full[n], soda.full_init_state[n]) for n in untouched)
    assert all(float(full[n].abs().sum()) == 0 for n in untouched if "lora_B" in n)  # no effect


def test_adapter_payload_bits(soda):
    # tiny Llama: hidden 64, 4 heads / 2 kv heads of 16 -> q: 64->64, v: 64->32; rank 4; 4 layers; fp16
    per_layer = 4 * (64 + 64) + 4 * (64 + 32)
    assert soda.upload_bits == soda.download_bits == 4 * per_layer * 16
    assert soda.download_payload().bits == 4 * per_layer * 16


def test_sub_model_download_bits_exact_and_sent_once(tokenizer):
    from fl.lm.models import bytes_resident
    from fl.algorithms.fedsoda.nf4 import NF4Linear, nf4_bytes
    from fl.core.runner import drive

    alg = _make(tokenizer, n_clients=2, model={"kind": "tiny", "n_layers": 4}, sgp_keep=3)
    linear = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]  # q k v o gate up down
    nf4 = 3 * sum(nf4_bytes(a * b) for a, b in linear)
    fp16 = 49152 * 64 + 3 * 2 * 64 + 64  # tied embedding/head, 2 norms per layer, final norm
    assert alg.submodel_payload.nf4_bytes == nf4 == sum(bytes_resident(m) for m in alg.sub.modules()
                                                        if isinstance(m, NF4Linear))
    assert alg.submodel_payload.bits == 8 * nf4 + 16 * fp16
    adapter = alg.download_bits
    update, first = drive(alg.client_round(0, 1))
    assert first.bits_down == alg.submodel_payload.bits + adapter
    assert first.bits_up == update.bits == alg.upload_bits
    _, second = drive(alg.client_round(1, 1))
    assert second.bits_down == adapter  # adapters only from the second participation on
    _, other = drive(alg.client_round(1, 0))
    assert other.bits_down == alg.submodel_payload.bits + adapter
    st = alg.storage()
    assert st["client_storage_bytes"] == nf4 + 2 * fp16 + 4 * alg.upload_bits // 16
    assert st["client_storage_bytes"] < st["full_fp16_storage_bytes"]


def test_oda_reduces_the_divergence(soda):
    start = soda.global_state
    try:
        before = soda.divergence()
        assert 0 < before < math.inf
        loss, flops = soda.align(8, ("test_oda",))
        after = soda.divergence()
        assert math.isfinite(loss) and flops > 0
        assert after < before  # a no-op or mis-directed alignment leaves it equal or raises it
    finally:
        soda.global_state = start


def test_alignment_loss_is_zero_for_an_identical_sub_model(tokenizer):
    """With every layer kept and no quantisation error it has nothing to align: L = CE only."""
    from fl.lm.data import collate

    alg = _make(tokenizer, model={"kind": "tiny", "n_layers": 3}, sgp_keep=3)
    assert alg.kept == (0, 1, 2)
    _, parts = alg.alignment_loss(collate(alg.task, alg.probe_idx))
    assert parts["hidden"] < 0.1 and parts["kl"] < 1e-2  # 4-bit + fp16 error only


def test_rounds_log_divergence_and_oda(tokenizer):
    from fl.core.runner import run_plain

    alg = _make(tokenizer, n_clients=2, model={"kind": "tiny", "n_layers": 4}, sgp_keep=3, oda_every=2,
                eval_full=True)
    rows = run_plain(alg, rounds=2, clients_per_round=1)
    assert [r["oda"] for r in rows] == [0.0, 1.0]
    assert all(math.isfinite(r["divergence"]) for r in rows)
    assert math.isnan(rows[0]["divergence_after"]) and math.isfinite(rows[1]["divergence_after"])
    assert rows[1]["server_flops"] > rows[0]["server_flops"] > 0
    assert {"accuracy", "loss", "accuracy_full", "loss_full"} <= rows[1].keys()


def _same(a, b):
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_same_seed_identical_different_seed_differs(tokenizer):
    from fl.core.runner import run_plain

    kw = dict(n_clients=2, model={"kind": "tiny", "n_layers": 4}, sgp_keep=3, oda_every=1,
              oda_initial_steps=1, eval_every=5)  # no evaluation: the trace is training, ODA, bits
    algs = [_make(tokenizer, **kw) for _ in range(2)]
    start = algs[0].global_state  # after SGP, LoRA init and the initial ODA step
    runs = [run_plain(a, rounds=1, clients_per_round=2) for a in algs]
    assert all(_same(a, b) for a, b in zip(*runs))
    assert all(torch.equal(algs[0].global_state[n], algs[1].global_state[n]) for n in algs[0].global_state)
    other = _make(tokenizer, **kw, seed_offset=1)  # another training root: another LoRA init + ODA
    assert any(not torch.equal(other.global_state[n], start[n]) for n in start)


def test_config_errors():
    from fl.algorithms.fedsoda.algorithm import FedSODAConfig

    with pytest.raises(ValueError, match="exactly one of sgp_keep and sgp_threshold"):
        FedSODAConfig(sgp_threshold=0.9)
    FedSODAConfig(sgp_keep=None, sgp_threshold=0.9)
    with pytest.raises(ValueError, match=r"needs public data .* Got data.n_public=0"):
        FedSODAConfig(data={"n_public": 0})
    with pytest.raises(ValueError, match="sgp_keep"):
        FedSODAConfig(sgp_keep=1)


def test_run_jobs_batches_clients_like_their_own_updates(tokenizer):
    """execution.batch_clients: fedsoda's sub-model trains several clients as one batch; each
    upload equals the client's own local_update (float64 sub-model: to 1e-9 relative)."""
    alg = _make(tokenizer, local_steps=2, batch_size=3, upload_dtype="fp32", download_dtype="fp32",
                lora={"rank": 4, "alpha": 8, "layers": {"top": 2}})
    assert alg.prefix is not None
    alg.sub.double()
    jobs = []
    for c in range(3):
        gen = alg.client_round(0, c)
        action = next(gen)
        while not hasattr(action, "job") or action.job is None:
            action = gen.send(getattr(action, "payload", None))
        jobs.append((action.job, action.sizer(1e9)))
        gen.close()
    together = alg.run_jobs(jobs)
    for (job, plan), got in zip(jobs, together):
        alone = job(alg, plan)
        assert got.losses == pytest.approx(alone.losses, rel=1e-9)
        a, b = got.payload.decode(), alone.payload.decode()
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert diff < 1e-6, diff
