"""``fedsoda``: similarity group pruning, distillation alignment and QLoRA.

``config`` (the options, torch-free) and ``algorithm`` (the learner, imported when first
built); registered here, the only place that names it.
"""

from fl.algorithms.fedsoda.config import FedSODAConfig
from fl.core.algorithm import ALGORITHMS

ALGORITHMS.register("fedsoda", FedSODAConfig, "fl.algorithms.fedsoda.algorithm:FedSODA")
