"""The surrogate algorithm: its torch-free config (``config``); the algorithm lives in ``fl.surrogate``."""
