"""fedwave compare keeps the fl.options each algorithm accepts and drops (and names) the rest."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from sim.cli import app, options_for

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"  # fedavg_lora options
runner = CliRunner()


def _options(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["fl"]["options"]


def test_options_for_keeps_what_the_target_config_accepts():
    opts = _options(QUICKSTART)
    kept, dropped = options_for("kd_topk", opts)
    assert {"model", "lora", "data", "partition", "local_steps", "batch_size", "lr"} <= set(kept)
    assert kept["lr"] == opts["lr"] and kept["lora"] == opts["lora"]
    assert dropped == ["download_dtype", "upload_dtype"]  # kd_topk sends logits, not adapters
    kept, dropped = options_for("split_lora", opts)
    assert dropped == [] and kept == opts
    kept, dropped = options_for("surrogate", {**opts, "header_bits": 64})
    assert kept == {"header_bits": 64}
    assert dropped == sorted(opts)


def test_compare_keeps_shared_options_and_says_what_it_dropped(tmp_path):
    r = runner.invoke(app, ["compare", str(QUICKSTART), "--algorithms", "surrogate",
                            "--set", "fl.options.header_bits=64", "--set", "fl.rounds=2",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert ("surrogate: dropped fl.options it does not accept: batch_size, data, "
            "download_dtype, local_steps, lora, lr, model, partition, upload_dtype") in \
        r.output.replace("\n", " ")
    resolved = yaml.safe_load((tmp_path / "quickstart-surrogate" /
                               "scenario.resolved.yaml").read_text())
    assert resolved["fl"]["algorithm"] == "surrogate"
    assert resolved["fl"]["options"]["header_bits"] == 64  # kept, not reset to the default
