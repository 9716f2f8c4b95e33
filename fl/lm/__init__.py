"""Language-model infrastructure shared by the real learners (torch, transformers, peft).

``specs`` (model, LoRA and data configs, and :class:`~fl.lm.specs.LMConfig`, the options
every language-model learner shares; torch-free), ``partition`` (splitting the training
pool among clients; torch-free), ``models``, ``data``, ``train``, ``flops``, ``prefix``,
``multilora``, ``device``, ``offline`` (Hugging Face offline mode), ``algorithm`` (the
base class of the LM learners) and ``lora_update`` (a client's LoRA round as it travels).
Importing this package imports none of them.
"""
