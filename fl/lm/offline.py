"""fedwave never downloads: the Hugging Face libraries are put in offline mode on import.

:func:`force_offline` runs when ``fl`` or ``sim`` is imported (hence also for the ``fedwave``
CLI), before fedwave imports transformers, huggingface_hub or datasets. Without it, a model id
missing from the local cache makes huggingface_hub retry HEAD requests for ~25 s before
failing, even with ``local_files_only=True`` (transformers still probes for a peft adapter).
Torch-free and import-cheap: only ``os`` and ``sys``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["OFFLINE_ENV", "force_offline"]

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

# Module-level flags that these libraries compute from the environment once, at import time:
# a program that imported them before fedwave has them already set from its environment.
_IMPORTED_FLAGS = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),  # read by huggingface_hub.is_offline_mode(),
                                                      # which transformers >= 5 calls
    ("transformers.utils.hub", "_is_offline_mode"),   # transformers 4.x keeps its own copy
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
)


def force_offline() -> None:
    """Set the offline variables to ``1`` whatever the user set, and the flags of the
    already-imported Hugging Face modules to True. Idempotent; imports nothing."""
    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    for module, attr in _IMPORTED_FLAGS:
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            setattr(mod, attr, True)
