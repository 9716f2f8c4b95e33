"""Named random streams for fl/, derived from one root seed (torch-free).

A consumer asks for a stream by a stable path of names and integers, e.g.
``("partition",)`` or ``("train", client, rnd)``. The stream's seed comes from the root seed
and a hash of the path, never from the order in which streams are requested, so adding a
consumer does not shift the numbers the others draw (same scheme as ``sim.rng``, repeated
here because fl/ must not import sim/).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["seed_sequence", "numpy_stream", "int_seed"]

PathPart = str | int


def _key(part: PathPart) -> int:
    if isinstance(part, bool) or not isinstance(part, (str, int)):
        raise TypeError(f"A stream path part must be a str or an int. Got {part!r} instead.")
    if isinstance(part, int):
        if part < 0:
            raise ValueError(f"A stream path integer must be >= 0. Got {part} instead.")
        return part
    # blake2b: stable across processes (unlike hash(), which depends on PYTHONHASHSEED)
    return int.from_bytes(hashlib.blake2b(part.encode("utf-8"), digest_size=8).digest(), "little")


def seed_sequence(root: int, *path: PathPart) -> np.random.SeedSequence:
    """The ``SeedSequence`` of stream ``path`` under root seed ``root``."""
    if int(root) != root or root < 0:
        raise ValueError(f"The root seed must be a non-negative integer. Got {root!r} instead.")
    return np.random.SeedSequence(int(root), spawn_key=tuple(_key(p) for p in path))


def numpy_stream(root: int, *path: PathPart) -> np.random.Generator:
    """A fresh ``numpy.random.Generator`` for stream ``path``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(root, *path)))


def int_seed(root: int, *path: PathPart) -> int:
    """A 63-bit integer seed for stream ``path`` (to seed a ``torch.Generator``)."""
    return int(seed_sequence(root, *path).generate_state(1, np.uint64)[0] >> np.uint64(1))
