"""Latency summaries shared by the in-process, Python-client and wrk measurements."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p99: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {"p50_ms": self.p50, "p99_ms": self.p99, "mean_ms": self.mean}


def latency_summary(samples_ms: Sequence[float]) -> Latency:
    """p50, p99 and mean of the samples (which must not be empty)."""
    if not samples_ms:
        raise ValueError("no latency samples")
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p99 = np.percentile(arr, [50, 99])
    return Latency(p50=float(p50), p99=float(p99), mean=float(arr.mean()))
