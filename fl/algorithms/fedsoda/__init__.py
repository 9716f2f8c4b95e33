"""The fedsoda algorithm: its torch-free config (``config``); the algorithm lives in ``fl.fedsoda``."""
