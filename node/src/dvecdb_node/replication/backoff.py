"""Reconnect delays: exponential with full jitter, reset after a connection that worked."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.05, cap: float = 2.0, rng: random.Random | None = None):
        self.first = first
        self.cap = cap
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.first * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
