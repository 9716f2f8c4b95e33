"""Wall time of fedwave's client update against a plain PEFT training loop.

fedwave's side is exactly what the simulator runs when a client's upload completes:
``FedAvgLoRA``'s ``Send.work`` (decode the received adapter, copy it into the shared model,
``local_steps`` AdamW steps, read the adapter back, encode it for the uplink). The plain side
is the loop one would write by hand with peft on the same model and the same batches:

- ``plain (HF loss)``: ``model(input_ids, attention_mask, labels=...).loss`` — logits at
  every position, the usual recipe;
- ``plain (same loss)``: the same steps with fedwave's answer-only loss, which isolates the
  framework's own overhead.

Runs alternate (fedwave, plain, plain, fedwave, ...) so that both sides see the same machine
load; minima, medians and the ratio are printed. Usage::

    python bench/train_overhead.py                   # tiny 2-layer model (seconds)
    python bench/train_overhead.py --model smollm2   # SmolLM2-135M, all 30 layers (minutes)

Set GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000 (as the
Makefile does) for representative tiny-model figures; both sides run under the same setting.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fl.core.algorithm import AlgorithmContext  # noqa: E402
from fl.lm.data import collate  # noqa: E402
from fl.algorithms.fedavg_lora.algorithm import FedAvgLoRA, FedAvgLoRAConfig  # noqa: E402
from fl.lm.models import lora_state, set_lora_state  # noqa: E402
from fl.core.seeding import int_seed  # noqa: E402
from fl.lm.train import answer_loss, causal_lm, draw_batches  # noqa: E402


def fedwave_update(algo: FedAvgLoRA, rnd: int, client: int) -> tuple[float, dict]:
    """Seconds of the Send.work of one client round (Receive/Compute are bookkeeping)."""
    gen = algo.client_round(rnd, client)
    payload = next(gen).payload
    gen.send(payload)  # -> Compute
    send = gen.send(None)  # -> Send
    plan = send.sizer(math.inf)
    t0 = time.perf_counter()
    sent = send.work(plan)
    seconds = time.perf_counter() - t0
    gen.close()
    return seconds, sent.payload.decode()


def plain_update(algo: FedAvgLoRA, rnd: int, client: int, hf_loss: bool) -> tuple[float, dict]:
    """Seconds of a hand-written peft loop over the same batches, from the same adapter."""
    cfg = algo.config
    gen = torch.Generator().manual_seed(int_seed(algo.train_root, "train", client, rnd))
    plan = draw_batches(algo.client_idx[client], cfg.batch_size, cfg.local_steps, gen)
    set_lora_state(algo.model, algo.download_payload().decode())
    model, lm = algo.model, causal_lm(algo.model)
    t0 = time.perf_counter()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for idx in plan:
        batch = collate(algo.task, idx)
        if hf_loss:
            loss = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        else:
            loss = answer_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    seconds = time.perf_counter() - t0
    return seconds, lora_state(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (default) or a model name, e.g. smollm2")
    ap.add_argument("--steps", type=int, default=5, help="local steps per client update")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=None, help="updates per side (default 10 tiny, 3 otherwise)")
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()
    repeats = args.repeats or (10 if args.model == "tiny" else 3)
    model = {"kind": "tiny"} if args.model == "tiny" else args.model
    cfg = FedAvgLoRAConfig(
        model=model, lora={"rank": args.rank}, local_steps=args.steps, batch_size=args.batch_size,
        partition={"kind": "iid"}, data={"n_test": 12}, upload_dtype="fp32", download_dtype="fp32",
    )
    t0 = time.perf_counter()
    algo = FedAvgLoRA(cfg, AlgorithmContext(n_clients=4, seed=0))
    print(f"model {args.model}: {algo.info()['n_params']:,} parameters, LoRA rank {args.rank} on q,v "
          f"({algo.info()['n_trainable']:,} trainable); set-up {time.perf_counter() - t0:.1f} s")
    print(f"{args.steps} steps × batch {args.batch_size}; {repeats} updates per side; torch threads "
          f"{torch.get_num_threads()}; GLIBC_TUNABLES={'set' if os.environ.get('GLIBC_TUNABLES') else 'unset'}")

    # warm-up (allocator, lazy imports), and a check that both loops compute the same update
    _, ours = fedwave_update(algo, 0, 0)
    _, theirs = plain_update(algo, 0, 0, hf_loss=False)
    same = all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)
    plain_update(algo, 0, 0, hf_loss=True)

    times: dict[str, list[float]] = {"fedwave Send.work": [], "plain (same loss)": [], "plain (HF loss)": []}
    for r in range(repeats):
        client = r % 4
        times["fedwave Send.work"].append(fedwave_update(algo, r, client)[0])
        times["plain (same loss)"].append(plain_update(algo, r, client, hf_loss=False)[0])
        times["plain (HF loss)"].append(plain_update(algo, r, client, hf_loss=True)[0])

    # Minima are the figure to trust on a shared machine (a burst of other work only ever adds
    # time); the median of per-repeat ratios pairs runs made moments apart.
    ours_t = times["fedwave Send.work"]
    print(f"{'':22s}{'min s':>9s}{'median s':>10s}{'min s/step':>12s}{'fedwave/this (min)':>20s}")
    for name, ts in times.items():
        print(f"{name:22s}{min(ts):9.3f}{statistics.median(ts):10.3f}{min(ts) / args.steps:12.3f}"
              f"{min(ours_t) / min(ts):20.2f}")
    plain_t = times["plain (same loss)"]
    paired = statistics.median(a / b for a, b in zip(ours_t, plain_t))
    print(f"overhead ratio fedwave / plain peft (same loss): {min(ours_t) / min(plain_t):.2f}x by minima, "
          f"{paired:.2f}x median of paired runs; same adapters as the plain loop: {same}")

if __name__ == "__main__":
    main()
