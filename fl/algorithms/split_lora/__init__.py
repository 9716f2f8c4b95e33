"""``split_lora``: split federated learning with LoRA (Split-FedLLM).

``config`` (the options, torch-free) and ``algorithm`` (the learner, imported when first
built); registered here, the only place that names it.
"""

from fl.algorithms.split_lora.config import SplitLoRAConfig
from fl.core.algorithm import ALGORITHMS

ALGORITHMS.register("split_lora", SplitLoRAConfig, "fl.algorithms.split_lora.algorithm:SplitLoRA")
