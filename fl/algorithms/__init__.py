"""One folder per FL algorithm, each of the same shape (as PEFT's ``tuners/<method>/``).

``<name>/__init__.py`` registers the algorithm in :data:`fl.core.algorithm.ALGORITHMS` — the
only place that names it: the name YAML uses, its config class, and a lazy
``"module:Class"`` reference to the algorithm. ``<name>/config.py`` holds the torch-free
config (the language-model learners' extend :class:`fl.lm.specs.LMConfig`);
``<name>/algorithm.py`` the algorithm; other modules are its private helpers.

Importing this package, a folder's ``__init__`` or any ``config`` module imports neither torch
nor the algorithms themselves, so a scenario validates without torch. Importing
:mod:`fl.core.algorithm` imports every folder here, so that each registers itself.
"""
