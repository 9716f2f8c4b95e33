"""Run fedwave's real learners on whatever device is present, and say which it was.

One short real scenario (the quickstart: SmolLM2, FedAvg-LoRA on the top 8 layers, 2 rounds)
with ``execution.device: auto`` (a GPU when present), then the training-throughput benchmark
(``bench/train_throughput.py``) on the same device. Meant to be run as-is on a machine with
a GPU (after the README's one-line CUDA torch install) as well as on a CPU::

    python bench/device_check.py            # about 5 minutes on a 2-core CPU, far less on a GPU
    python bench/device_check.py --dtype bfloat16
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import torch

    from fl.lm.device import resolve_device
    from sim.runner import run_scenario

    dev = resolve_device("auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    print(f"device: {dev} ({name}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"dtype {args.dtype}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, summary = run_scenario(ROOT / "scenarios" / "quickstart.yaml",
                                  [f"fl.rounds={args.rounds}", "execution.device=auto",
                                   f"execution.dtype={args.dtype}"],
                                  out=Path(tmp) / "run", plots=False)
        wall = time.perf_counter() - t0
    ini, fin = summary["initial"], summary["final"]
    print(f"quickstart, {args.rounds} rounds on {dev}: {wall:.1f} s wall; accuracy "
          f"{ini['accuracy']:.3f} -> {fin['accuracy']:.3f}, loss {ini['loss']:.3f} -> {fin['loss']:.3f}",
          flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--device", str(dev)],
                   check=True)


if __name__ == "__main__":
    main()
