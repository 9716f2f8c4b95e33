"""Named random streams from one root seed.

Every consumer of randomness asks for a stream by a stable name (``"fading"``,
``"selection"``, ``"mobility/vehicles"``). The stream's seed is derived from the root seed
and a hash of the name — not from the order in which streams are requested — so adding a new
consumer never shifts the numbers any other consumer draws.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["RngStreams", "stream_key"]


def stream_key(name: str) -> int:
    """A stable 64-bit integer for ``name`` (blake2b; independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


class RngStreams:
    """Root seed -> one ``numpy.random.Generator`` per stable name.

    ``get(name)`` returns the same generator object each time it is called with the same
    name (one stream per consumer); ``seed_sequence(name)`` gives the underlying
    ``SeedSequence`` for consumers that seed other libraries (e.g. torch) from it.
    """

    def __init__(self, seed: int) -> None:
        if int(seed) != seed or seed < 0:
            raise ValueError(f"The root seed must be a non-negative integer. Got {seed!r} instead.")
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """The ``SeedSequence`` of stream ``name``: root entropy, spawn key = hash(name)."""
        return np.random.SeedSequence(self.seed, spawn_key=(stream_key(name),))

    def get(self, name: str) -> np.random.Generator:
        """The generator of stream ``name`` (created on first use)."""
        gen = self._streams.get(name)
        if gen is None:
            gen = np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
            self._streams[name] = gen
        return gen

    def names(self) -> list[str]:
        """Names of the streams used so far, sorted."""
        return sorted(self._streams)
