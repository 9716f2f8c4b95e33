"""The fedavg_lora algorithm: its torch-free config (``config``); the algorithm lives in ``fl.fedavg_lora``."""
