"""``fedavg_lora``: FedAvg over LoRA adapters (FedLLM with parameter sharing).

``config`` (the options, torch-free) and ``algorithm`` (the learner, imported when first
built); registered here, the only place that names it.
"""

from fl.algorithms.fedavg_lora.config import FedAvgLoRAConfig
from fl.core.algorithm import ALGORITHMS

ALGORITHMS.register("fedavg_lora", FedAvgLoRAConfig, "fl.algorithms.fedavg_lora.algorithm:FedAvgLoRA")
