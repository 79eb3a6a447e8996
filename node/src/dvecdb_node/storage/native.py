"""Filtered k-NN inside hnswlib's graph walk or by a scan: the compiled part (``node/native``).

hnswlib's binding takes a filter only as a Python callable, called (with the GIL) for each
candidate the walk considers; on a busy node every call waits for the event loop thread to
let go of the GIL, so one filtered search took milliseconds of waiting. ``_filtered_knn`` walks
the same index with a byte mask instead and releases the GIL throughout.

It reads the index through the binding's memory layout (see ``filtered_knn.cpp``), so it is
used only when the installed hnswlib is the version whose headers it was compiled from and a
probe of a fresh index reads back what the binding itself reports. Otherwise :data:`REASON`
says why and callers use the callable filter.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

import hnswlib
import numpy as np

from dvecdb_node.storage.records import Float32Matrix

log = logging.getLogger(__name__)

# The hnswlib release whose headers node/native/hnswlib holds.
HNSWLIB_VERSION = "0.8.0"

KnnResult = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
# What this module calls: a build from an older source lacks some (`make dev` rebuilds it).
FUNCTIONS = ("probe", "filtered_knn", "internal_ids", "scan_knn", "update_items")


def _load() -> tuple[Any, str | None]:
    try:
        from dvecdb_node.storage import _filtered_knn as module  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"the compiled filter is not built ({exc})"
    missing = [name for name in FUNCTIONS if not hasattr(module, name)]
    if missing:
        return None, f"the compiled filter is older than its source (no {', '.join(missing)})"
    try:
        installed = importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:
        installed = "unknown"
    if installed != HNSWLIB_VERSION:
        return None, f"hnswlib {installed} installed, the filter was built for {HNSWLIB_VERSION}"
    index = hnswlib.Index(space="l2", dim=3)
    index.init_index(max_elements=7, M=4, ef_construction=8)
    index.add_items(np.eye(3, dtype=np.float32), np.arange(3))
    index.set_ef(5)
    expected = ("l2", 3, 7, 3, 5, False, True)
    probed = module.probe(index)
    if probed != expected:
        return None, f"the filter reads hnswlib's index as {probed}, expected {expected}"
    return module, None


_MODULE, REASON = _load()
AVAILABLE = _MODULE is not None
if REASON is not None:
    log.warning("filtered searches call back into Python: %s", REASON)


def filtered_knn(
    index: Any, queries: Float32Matrix, k: int, mask: np.ndarray[Any, Any]
) -> KnnResult:
    """Top-``k`` labels and distances per query row among labels whose ``mask`` byte is set.

    At the index's ef (``max(ef, k)``, as hnswlib searches). Raises ``RuntimeError`` when a
    row finds fewer than ``k`` allowed labels, as hnswlib's ``knn_query`` does.
    """
    if _MODULE is None:
        raise RuntimeError(f"no compiled filter: {REASON}")
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    labels = np.empty((len(rows), k), dtype=np.uint64)
    distances = np.empty((len(rows), k), dtype=np.float32)
    fewest = _MODULE.filtered_knn(index, rows, k, mask, labels, distances)
    if fewest < k:
        raise RuntimeError(f"found {fewest} of {k} allowed neighbours")
    return labels, distances


def internal_ids(index: Any, labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """hnswlib's internal ids of ``labels`` (int64), for :func:`scan_knn`; valid until the
    next write to the index. Raises ``RuntimeError`` if the index lacks one of them."""
    if _MODULE is None:
        raise RuntimeError(f"no compiled filter: {REASON}")
    wanted = np.ascontiguousarray(labels, dtype=np.int64)
    out = np.empty(len(wanted), dtype=np.int64)
    missing = _MODULE.internal_ids(index, wanted, out)
    if missing:
        raise RuntimeError(f"{missing} of {len(wanted)} labels are not in the index")
    return out


def scan_knn(
    index: Any, queries: Float32Matrix, k: int, internal: np.ndarray[Any, Any]
) -> KnnResult:
    """Exact top-``k`` labels and distances per query row among the elements ``internal``
    names, by hnswlib's distance function over the vectors the index holds.

    ``k`` must not exceed the live elements among them (rows are padded otherwise).
    """
    if _MODULE is None:
        raise RuntimeError(f"no compiled filter: {REASON}")
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    labels = np.empty((len(rows), k), dtype=np.uint64)
    distances = np.empty((len(rows), k), dtype=np.float32)
    fewest = _MODULE.scan_knn(index, rows, k, internal, labels, distances)
    if fewest < k:
        raise RuntimeError(f"found {fewest} of {k} allowed neighbours")
    return labels, distances


def update_items(
    index: Any, vectors: Float32Matrix, labels: np.ndarray[Any, Any], near_probability: float
) -> int:
    """Replace the vectors of ``labels`` the index holds (live or deleted; a deleted one is
    un-deleted), re-linking neighbours only for elements moved beyond their neighbourhood
    (see ``update_items`` in filtered_knn.cpp); returns how many were. Raises ``KeyError`` for
    a label the index lacks."""
    if _MODULE is None:
        raise RuntimeError(f"no compiled filter: {REASON}")
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    wanted = np.ascontiguousarray(labels, dtype=np.int64)
    return int(_MODULE.update_items(index, rows, wanted, near_probability))
