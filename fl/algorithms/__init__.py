"""One folder per FL algorithm; each ``<name>/config.py`` holds its torch-free config.

Importing this package (or any ``config`` module) imports neither torch nor the algorithms
themselves: :mod:`fl.algorithm` registers each algorithm as (config class, lazy
``"module:Class"`` reference), so a scenario validates without torch.
"""
