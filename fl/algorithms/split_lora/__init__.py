"""The split_lora algorithm: its torch-free config (``config``); the algorithm lives in ``fl.split_lora``."""
