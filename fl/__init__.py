"""fedwave's learning side: models, data, federated algorithms, payloads (no radio here).

``fl.core``: the contract with the simulator (actions, the algorithm plug-in point and its
registry, configs, payloads, aggregation, seeding, state files); ``fl.lm``: the language-
model infrastructure the real learners share (models, data, training, partitioning, FLOPs);
``fl.algorithms.<name>``: one folder per algorithm (a torch-free ``config.py``, the
algorithm, its private helpers), registered once in its ``__init__.py``. Light, torch-free
modules: ``fl.core.actions``, ``fl.core.algorithm``, ``fl.core.config``, ``fl.lm.specs``,
``fl.lm.partition``, ``fl.core.seeding`` and every ``fl.algorithms.<name>.config``; modules
that need torch are imported only when used; importing this package imports none of them.

Importing this package (or ``sim``) puts the Hugging Face libraries in offline mode
(:mod:`fl.lm.offline`): fedwave never downloads, whatever ``HF_HUB_OFFLINE`` says.
"""

# fedwave never downloads: offline mode before anything can import transformers (fl.lm.offline).
from fl.lm.offline import force_offline as _force_offline

_force_offline()
