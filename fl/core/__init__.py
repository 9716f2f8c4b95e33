"""The algorithm contract, torch-free where the simulator touches it.

``actions`` (what a client round yields to the host), ``algorithm`` (the plug-in point and
its registry), ``config`` (the base of every algorithm's options), ``registry`` (generic
plug-in registries), ``seeding`` (named random streams), ``runner`` (a plain host without
a network), ``statefile`` (checkpoints that cannot run code), ``metrics`` (paired accuracy
statistics), ``yamlio`` (safe YAML); ``payload`` and ``aggregation`` (what travels and how
it is averaged) need torch and are imported only when used.
"""
