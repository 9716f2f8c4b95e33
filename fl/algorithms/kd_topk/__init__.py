"""``kd_topk``: federated distillation with communication-aware top-k logits.

``config`` (the options, torch-free) and ``algorithm`` (the learner, imported when first
built); registered here, the only place that names it.
"""

from fl.algorithms.kd_topk.config import KDTopKConfig
from fl.core.algorithm import ALGORITHMS

ALGORITHMS.register("kd_topk", KDTopKConfig, "fl.algorithms.kd_topk.algorithm:KDTopK")
