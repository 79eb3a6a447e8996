"""A real-text embedding set made offline: LSA vectors of Python standard-library source lines.

No neural embedding model can be downloaded here, so the real-data set uses the classic
latent semantic analysis pipeline on text every machine already has: each distinct source line
of the interpreter's standard library (by its identifier words) is a document, weighted by
TF-IDF and projected onto its top singular vectors with a randomized SVD (Halko et al.), then
normalised for cosine search. Unlike the Gaussian set, its neighbourhoods have the skewed,
anisotropic structure of real embeddings (frequent words dominate a few directions), which is
what makes HNSW recall harder. The corpus depends only on the Python version, so the set is
the same on every machine with the same interpreter.
"""

from __future__ import annotations

import json
import math
import os
import re
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dvecbench.datasets import F32, Dataset, exact_knn, normalise

WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
MIN_WORDS = 4
MIN_DF = 5
VOCAB = 20_000


def _lines(root: Path) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "dist-packages" in path.parts:
            continue  # what is installed differs between machines; the standard library not
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        yield from text.splitlines()


def documents(root: Path) -> list[tuple[str, ...]]:
    """Distinct word sequences (lower-cased identifier parts) of lines with enough words."""
    seen: set[tuple[str, ...]] = set()
    docs: list[tuple[str, ...]] = []
    for line in _lines(root):
        words = tuple(w.lower() for w in WORD.findall(line) if len(w) > 1)
        if len(words) >= MIN_WORDS and words not in seen:
            seen.add(words)
            docs.append(words)
    return docs


def _sparse_tfidf(
    docs: list[tuple[str, ...]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
    """(row starts, column per entry, weight per entry, vocabulary size), rows L2-normalised.

    Documents with fewer than `MIN_WORDS` distinct vocabulary words, or the same set of
    vocabulary words as an earlier one, are dropped so no two rows are identical.
    """
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    vocab_words = [w for w, n in df.most_common(VOCAB) if n >= MIN_DF]
    vocab = {w: i for i, w in enumerate(vocab_words)}
    idf = np.array([math.log(len(docs) / df[w]) for w in vocab_words], dtype=np.float32)
    starts: list[int] = [0]
    cols: list[int] = []
    vals: list[float] = []
    seen: set[frozenset[int]] = set()
    for d in docs:
        tf = Counter(vocab[w] for w in d if w in vocab)
        key = frozenset(tf)
        if len(tf) < MIN_WORDS or key in seen:
            continue
        seen.add(key)
        weights = [(1.0 + math.log(n)) * float(idf[c]) for c, n in tf.items()]
        norm = math.sqrt(sum(w * w for w in weights))
        cols.extend(tf.keys())
        vals.extend(w / norm for w in weights)
        starts.append(len(cols))
    return (
        np.asarray(starts, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(vals, dtype=np.float32),
        len(vocab_words),
    )


class _Sparse:
    """Just enough of a sparse matrix for a randomized SVD: X @ M and X.T @ M.

    Entries are kept twice, sorted by row and by column, so both products are segment sums
    (`np.add.reduceat`) over contiguous runs, in chunks to bound memory.
    """

    CHUNK = 1 << 18

    def __init__(
        self,
        starts: npt.NDArray[np.int64],
        cols: npt.NDArray[np.int64],
        vals: npt.NDArray[np.float32],
        n_cols: int,
    ) -> None:
        self.n_rows, self.n_cols = len(starts) - 1, n_cols
        rows = np.repeat(np.arange(self.n_rows), np.diff(starts))
        self.by_row = (rows, cols, vals)
        order = np.argsort(cols, kind="stable")
        self.by_col = (cols[order], rows[order], vals[order])

    def _segment_sum(
        self,
        entries: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]],
        m: F32,
        n_out: int,
    ) -> F32:
        keys, other, vals = entries
        out = np.zeros((n_out, m.shape[1]), dtype=np.float32)
        for lo in range(0, len(keys), self.CHUNK):
            k, o, v = (
                keys[lo : lo + self.CHUNK],
                other[lo : lo + self.CHUNK],
                vals[lo : lo + self.CHUNK],
            )
            heads = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
            out[k[heads]] += np.add.reduceat(v[:, None] * m[o], heads, axis=0)
        return out

    def matmul(self, m: F32) -> F32:
        return self._segment_sum(self.by_row, m, self.n_rows)

    def rmatmul(self, m: F32) -> F32:
        return self._segment_sum(self.by_col, m, self.n_cols)


def _orth(y: F32) -> F32:
    """Orthonormal columns spanning `y` (Cholesky QR, twice for accuracy).

    Two Gram products of a tall matrix cost far less than a Householder QR with the generic
    BLAS kernels some machines fall back to, and the sketch here is well conditioned.
    """
    q = y.astype(np.float64)
    for _ in range(2):
        gram = q.T @ q
        gram[np.diag_indices_from(gram)] += 1e-10 * np.trace(gram)
        chol = np.linalg.cholesky(gram)
        q = np.linalg.solve(chol, q.T).T
    out: F32 = q.astype(np.float32)
    return out


def lsa(x: _Sparse, dim: int, *, seed: int = 11, power: int = 1) -> F32:
    """Rows of X projected on its top `dim` singular directions (randomized SVD)."""
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((x.n_cols, dim + 10), dtype=np.float32)
    q = _orth(x.matmul(omega))
    for _ in range(power):
        q = _orth(x.matmul(_orth(x.rmatmul(q))))
    b = x.rmatmul(q).T  # (dim+10) x n_cols = Q.T @ X
    u_small, s, _ = np.linalg.svd(b, full_matrices=False)
    out: F32 = ((q @ u_small[:, :dim]) * s[:dim]).astype(np.float32)
    return out


def make_text(*, n: int, n_queries: int, dim: int = 128, k: int = 10) -> Dataset:
    """`n` base and `n_queries` held-out LSA vectors (cosine); raises if the corpus is short.

    The SVD is fitted on a fixed random sample of 1.2 times the lines needed rather than the whole
    library, to keep it to seconds.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = documents(root)
    keep = np.random.default_rng(3).permutation(len(docs))[: int((n + n_queries) * 1.2)]
    starts, cols, vals, n_vocab = _sparse_tfidf([docs[i] for i in sorted(keep)])
    x = _Sparse(starts, cols, vals, n_vocab)
    if x.n_rows < n + n_queries:
        raise ValueError(f"only {x.n_rows} distinct lines in {root}, need {n + n_queries}")
    vectors = normalise(lsa(x, dim))
    order = np.random.default_rng(5).permutation(x.n_rows)[: n + n_queries]
    base = np.ascontiguousarray(vectors[order[:n]])
    queries = np.ascontiguousarray(vectors[order[n:]])
    return Dataset(
        name=f"text-lsa-{n // 1000}k-{dim}d",
        description=(
            f"{n:,} vectors, {dim}-d, LSA (TF-IDF + randomized SVD) of distinct Python "
            f"{sysconfig.get_python_version()} standard-library source lines, {n_queries:,} "
            "held-out lines as queries, metric cosine"
        ),
        metric="cosine",
        base=base,
        queries=queries,
        ground_truth=exact_knn(base, queries, k=k, metric="cosine"),
    )


CACHE_VERSION = 1


def cached_text(*, n: int, n_queries: int, dim: int = 128, k: int = 10) -> Dataset:
    """`make_text`, kept in the user's cache folder: building it takes a minute or two."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dvecbench"
    key = f"text-v{CACHE_VERSION}-py{sysconfig.get_python_version()}-{n}-{n_queries}-{dim}-{k}"
    path = root / f"{key}.npz"
    if path.exists():
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return Dataset(
                name=meta["name"],
                description=meta["description"],
                metric="cosine",
                base=data["base"],
                queries=data["queries"],
                ground_truth=data["ground_truth"],
            )
    ds = make_text(n=n, n_queries=n_queries, dim=dim, k=k)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    meta = json.dumps({"name": ds.name, "description": ds.description})
    np.savez(tmp, base=ds.base, queries=ds.queries, ground_truth=ds.ground_truth, meta=meta)
    os.replace(tmp, path)
    return ds
