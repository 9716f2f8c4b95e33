"""Every registered algorithm has the same shape; the contract modules stay torch-free."""

import subprocess
import sys

import pytest

from fl.algorithm import Algorithm, AlgorithmConfig, algorithm_config, get_algorithm, iter_registry


@pytest.mark.parametrize("name", [name for name, _ in iter_registry()])
def test_registered_algorithms_have_the_same_shape(name):
    try:
        cls = get_algorithm(name)
    except NotImplementedError:
        pytest.skip(f"{name} is registered but not implemented yet")
    assert issubclass(cls, Algorithm) and cls.name == name
    assert cls.Config is algorithm_config(name)  # the registered (torch-free) config
    assert issubclass(cls.Config, AlgorithmConfig)
    assert cls.Config.model_config.get("extra") == "forbid"
    cls.Config()  # every option has a default


def test_light_fl_modules_do_not_import_torch():
    code = ("import sys, fl, fl.actions, fl.algorithm, fl.specs, fl.partition, fl.seeding; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_algorithm_configs_are_torch_free():
    """Every algorithm's config (fl/algorithms/<name>/config.py) builds without torch, so a
    scenario validates without it."""
    code = ("import sys, fl.algorithm as a; [a.algorithm_config(n)() for n in a.algorithm_names()]; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_seed_streams_are_stable_and_distinct():
    from fl.seeding import int_seed, numpy_stream

    assert int_seed(0, "train", 1, 2) == int_seed(0, "train", 1, 2)
    assert len({int_seed(0, "train", 1, 2), int_seed(0, "train", 2, 1), int_seed(1, "train", 1, 2),
                int_seed(0, "lora_init")}) == 4
    assert numpy_stream(3, "partition").integers(1 << 30) == numpy_stream(3, "partition").integers(1 << 30)
    with pytest.raises(ValueError, match="root seed must be a non-negative integer. Got -1"):
        int_seed(-1, "x")
