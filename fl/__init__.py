"""fedwave's learning side: models, data, federated algorithms, payloads (no radio here).

Light, torch-free modules: ``fl.actions`` (the sim <-> fl contract), ``fl.algorithm`` (the
plug-in point and registry), ``fl.specs`` (configs), ``fl.partition``, ``fl.seeding``.
Modules that need torch (``fl.models``, ``fl.data`` batches, ``fl.train``, ``fl.flops``,
``fl.payload``, ``fl.aggregation``, ``fl.fedavg_lora``) are imported only when used;
importing this package imports none of them.

Importing this package (or ``sim``) puts the Hugging Face libraries in offline mode
(:mod:`fl.offline`): fedwave never downloads, whatever ``HF_HUB_OFFLINE`` says.
"""

# fedwave never downloads: offline mode before anything can import transformers (fl.offline).
from fl.offline import force_offline as _force_offline

_force_offline()
