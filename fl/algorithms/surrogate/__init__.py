"""``surrogate``: a stand-in learner whose accuracy is a modelled curve.

``config`` (the options, torch-free) and ``algorithm`` (the learner, imported when first
built); registered here, the only place that names it.
"""

from fl.algorithms.surrogate.config import SurrogateConfig
from fl.core.algorithm import ALGORITHMS

ALGORITHMS.register("surrogate", SurrogateConfig, "fl.algorithms.surrogate.algorithm:SurrogateAlgorithm")
