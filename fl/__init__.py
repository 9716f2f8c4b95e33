"""fedwave's learning side: models, data, federated algorithms, payloads (no radio here).

Light, torch-free modules: ``fl.actions`` (the sim <-> fl contract), ``fl.algorithm`` (the
plug-in point and registry), ``fl.specs`` (configs), ``fl.partition``, ``fl.seeding``.
Modules that need torch (``fl.models``, ``fl.data`` batches, ``fl.train``, ``fl.flops``,
``fl.payload``, ``fl.aggregation``, ``fl.fedavg_lora``) are imported only when used;
importing this package imports none of them.
"""
