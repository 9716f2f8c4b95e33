"""The kd_topk algorithm: its torch-free config (``config``); the algorithm lives in ``fl.kd_topk``."""
