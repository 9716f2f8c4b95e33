"""Client-update tokens per second: fedwave's fast path against a plain PEFT loop.

On the embedded SmolLM2-135M (or ``--model tiny``) with LoRA (rank 8, q and v) on the top
``--top`` decoder layers, C clients each take ``--steps`` AdamW steps of ``--batch-size``
fortune prompts from the same starting adapter, on the same batches, measured side by side
in one run:

(a) ``plain PEFT``: the loop one writes by hand with peft — clients one after another,
    ``model(input_ids, attention_mask, labels=...).loss`` (logits at every position);
(b) fedwave with its features switched on one at a time: the frozen prefix computed once
    (:mod:`fl.lm.prefix`; cold = the cache filled during the steps, warm = filled before), first
    with every row running its whole sequence through the upper layers, then with the
    prompts' shared head (chat template + question) run once per step; then clients batched
    (:mod:`fl.lm.multilora`) 4 and 8 at a time.

Then evaluation prompts per second: :func:`fl.lm.train.score_labels` (the model as it was) against
:meth:`fl.lm.prefix.FrozenPrefix.score_labels`; and the memory of 1, 8 and 32 clients (one shared
frozen base + each client's adapter; optimiser states exist only while a client trains).

The ratio on the last line is that of the fastest fedwave path measured here (warm cache,
batched or not). Same adapters: the trained adapters of that path are compared with the plain
loop's. In float32 Adam turns rounding noise on near-zero gradients into visible steps, so
the check runs a float64 copy (2 clients × 2 steps, norms in float64 too:
:func:`fl.lm.models.full_precision_norms`): equal to 1e-8 is "True"; the float32 difference is
printed beside it. The last line reads::

    fedwave / plain PEFT: X.XX× tokens/s (same adapters: True|False)

Usage: ``python bench/train_throughput.py`` (SmolLM2, a few minutes on 2 cores) or
``--model tiny`` (seconds). Runs on the device ``--device`` (default: cuda when present).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fl.lm.data import collate, encode_task, load_dataset  # noqa: E402
from fl.lm.models import full_precision_norms, load_model, lora_state, set_lora_state  # noqa: E402
from fl.lm.multilora import train_clients  # noqa: E402
from fl.lm.prefix import FrozenPrefix, prefix_layer  # noqa: E402
from fl.lm.specs import DataSpec, ModelSpec, TinyLlamaSpec  # noqa: E402
from fl.lm.train import draw_batches, local_train, score_labels, upcast  # noqa: E402


def build(model_name: str, top: int, rank: int, dtype=torch.float32, device="cpu"):
    from peft import LoraConfig, get_peft_model

    spec = TinyLlamaSpec(n_layers=6, hidden=128, heads=4, kv_heads=2, intermediate=256) \
        if model_name == "tiny" else ModelSpec(name_or_path=model_name)
    base, tok = load_model(spec)
    base = base.to(device=device, dtype=dtype)
    n = base.config.num_hidden_layers
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     layers_to_transform=list(range(n - top, n)), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_peft_model(base, cfg)
        with torch.no_grad():  # a global adapter after some rounds: B non-zero
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.02)
    model.eval()
    return model, tok, n


def plain_peft(model, task, start, plans, lr):
    """Clients one after another, the usual recipe: logits at every position, the shifted
    cross-entropy of the labelled (answer) tokens (as Hugging Face's ``labels=`` loss, but
    taken in the model's dtype, so that a float64 run stays float64)."""
    lm = model.get_base_model()
    dev = next(model.parameters()).device
    out = []
    for plan in plans:
        set_lora_state(model, start)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        model.train()
        for idx in plan:
            b = collate(task, idx)
            mask = b.attention_mask.to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
            logits = lm(input_ids=b.input_ids.to(dev), attention_mask=mask, position_ids=pos).logits
            loss = F.cross_entropy(upcast(logits[:, :-1]).flatten(0, 1), b.labels[:, 1:].to(dev).flatten(),
                                   ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        out.append(lora_state(model))
    return out


def fedwave_alone(model, pf, start, plans, lr):
    """Clients one after another, each step from the cached prefix."""
    out = []
    for plan in plans:
        set_lora_state(model, start)
        local_train(model, iter(plan), len(plan), lr, torch.Generator().manual_seed(0), loss_fn=pf.answer_loss)
        out.append(lora_state(model))
    return out


def fedwave_batched(model, task, pf, start, plans, lr, group):
    out = []
    for g in range(0, len(plans), group):
        part = plans[g:g + group]
        out += [s for s, _ in train_clients(model, task, [start] * len(part), part, lr, prefix=pf)]
    return out


def tokens(task, plans) -> int:
    return sum(len(task.prompts[i]) + len(task.answers[task.labels[i]]) for p in plans for b in p for i in b)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def max_rel_diff(a, b) -> float:
    """max over clients and tensors of |a - b| / max|b| (0: identical)."""
    return max(float((x[k] - y[k]).abs().max() / y[k].abs().max().clamp(min=1e-30)) for x, y in zip(a, b) for k in y)


def state_bytes(*states) -> int:
    seen, total = set(), 0
    for s in states:
        for t in s.values():
            if t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 (default), a model path, or tiny")
    ap.add_argument("--top", type=int, default=8, help="LoRA on the top N decoder layers")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--eval-prompts", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"GLIBC_TUNABLES {'set' if os.environ.get('GLIBC_TUNABLES') else 'unset'}")
    t0 = time.perf_counter()
    model, tok, n_layers = build(args.model, args.top, args.rank, device=dev)
    task = encode_task(load_dataset(DataSpec(max_per_class=200, max_chars=160, n_test=60)), tok, 112)
    L = prefix_layer(model)
    print(f"model {args.model}: {n_layers} layers, LoRA rank {args.rank} on q,v of layers {L}..{n_layers - 1}; "
          f"{len(task)} prompts; set-up {time.perf_counter() - t0:.1f} s")
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    shards = np.array_split(rng.permutation(len(task)), args.clients)
    plans = [draw_batches(s, args.batch_size, args.steps, gen) for s in shards]
    n_tok = tokens(task, plans)
    start = lora_state(model)
    print(f"{args.clients} clients × {args.steps} steps × batch {args.batch_size}: {n_tok} tokens per pass")

    plain_peft(model, task, start, plans[:1], args.lr)  # warm-up: allocator, lazy imports
    t_plain, plain = timed(lambda: plain_peft(model, task, start, plans, args.lr))
    rows = [("(a) plain PEFT, one client after another", t_plain)]
    whole = FrozenPrefix(model, task, L, share_head=False)
    fedwave_alone(model, whole, start, plans, args.lr)  # fills the cache
    t_whole, _ = timed(lambda: fedwave_alone(model, whole, start, plans, args.lr))
    rows.append(("(b) fedwave + prefix cache (warm), rows run whole", t_whole))
    pf = FrozenPrefix(model, task, L)
    t_cold, _ = timed(lambda: fedwave_alone(model, pf, start, plans, args.lr))
    rows.append(("(b) fedwave + prefix cache + shared head (cold)", t_cold))
    t_warm, alone = timed(lambda: fedwave_alone(model, pf, start, plans, args.lr))
    rows.append(("(b) fedwave + prefix cache + shared head (warm)", t_warm))
    adapters = {rows[-1][0]: alone}
    for group in (4, 8):
        if group <= args.clients:
            t_b, got = timed(lambda g=group: fedwave_batched(model, task, pf, start, plans, args.lr, g))
            rows.append((f"(b) fedwave + prefix + head + {group} clients batched", t_b))
            adapters[rows[-1][0]] = got
    fastest = min(rows[1:], key=lambda r: r[1])  # the fedwave path to use on this machine
    best = adapters.get(fastest[0], alone)
    print(f"{'':58s}{'s':>8s}{'tokens/s':>10s}{'× plain':>9s}")
    for name, t in rows:
        print(f"{name:58s}{t:8.2f}{n_tok / t:10.0f}{t_plain / t:9.2f}")
    print(f"prefix cache: {pf.nbytes / 2**20:.1f} MiB for {len(pf._train)} examples (bound "
          f"{pf.max_bytes / 2**30:.1f} GiB; {whole.nbytes / 2**20:.1f} MiB keeping the shared head "
          f"of {pf.head_len} tokens per example)")

    # evaluation: prompts per second, the model as it is, before (plain) and after (cached)
    test = list(range(args.eval_prompts))
    set_lora_state(model, start)
    score_labels(model, task, test[:4], 16)
    t_e0, ref = timed(lambda: score_labels(model, task, test, 16))
    pfw = FrozenPrefix(model, task, L, share_head=False)
    pfw.score_labels(test, 16)
    t_ew, _ = timed(lambda: pfw.score_labels(test, 16))
    pfe = FrozenPrefix(model, task, L)
    t_e1, _ = timed(lambda: pfe.score_labels(test, 16))
    t_e2, got = timed(lambda: pfe.score_labels(test, 16))
    print(f"evaluation ({len(test)} prompts, {len(task.answers)} labels): plain {len(test) / t_e0:.1f} prompts/s; "
          f"prefix cache warm, rows whole {len(test) / t_ew:.1f}; + shared head cold {len(test) / t_e1:.1f}, "
          f"warm {len(test) / t_e2:.1f}; max |score difference| {float((got - ref).abs().max()):.2e}")
    print(f"evaluation: {t_e0 / t_e2:.2f}× faster per prompt than plain (warm cache; {t_e0 / t_e1:.2f}× cold)")

    # memory: one shared frozen base + one adapter per client
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    one = state_bytes(start)
    for n in (1, 8, 32):
        states = [OrderedDict((k, v.clone()) for k, v in start.items()) for _ in range(n)]
        print(f"{n:3d} clients: base {base_bytes / 2**20:.1f} MiB (shared) + {n} × {one / 2**10:.0f} KiB "
              f"adapters = {(base_bytes + state_bytes(*states)) / 2**20:.1f} MiB")

    # same adapters: float64, 2 clients × 2 steps, plain PEFT vs the fastest fedwave path
    model64, _, _ = build(args.model, args.top, args.rank, dtype=torch.float64, device=dev)
    start64 = lora_state(model64)
    small = [p[:2] for p in plans[:2]]
    with full_precision_norms():
        ref64 = plain_peft(model64, task, start64, small, args.lr)
        got64 = fedwave_batched(model64, task, FrozenPrefix(model64, task, L), start64, small, args.lr, 2)
    d64 = max_rel_diff(got64, ref64)
    same = d64 < 1e-8
    print(f"same adapters: float64 max relative difference {d64:.1e} (2 clients × 2 steps); float32 "
          f"{max_rel_diff(best, plain):.1e} after {args.steps} steps (Adam amplifies rounding)")
    print(f"fastest fedwave path here: {fastest[0][4:]}")
    print(f"fedwave / plain PEFT: {t_plain / fastest[1]:.2f}× tokens/s (same adapters: {same})")


if __name__ == "__main__":
    main()
