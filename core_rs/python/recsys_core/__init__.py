"""recsys-engine's Rust core: sparse similarity with top-k pruning and top-K scoring.

The contract (ranking order, eligibility, errors) is documented in docs/core.md. This module
converts numpy/scipy inputs to the exact dtypes the native layer takes and wraps its outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recsys_core._native import (
    IVF_MIN_ITEMS,
    CoreError,
    InvalidArgumentError,
    InvalidMatrixError,
    NonFiniteError,
)
from recsys_core._native import CompressedScorer as _CompressedScorer
from recsys_core._native import DenseScorer as _DenseScorer
from recsys_core._native import SparseScorer as _SparseScorer
from recsys_core._native import als_gram as _als_gram
from recsys_core._native import als_half_step as _als_half_step
from recsys_core._native import als_solve_row as _als_solve_row
from recsys_core._native import blend_topk as _blend_topk
from recsys_core._native import select_topk as _select_topk
from recsys_core._native import similarity_topk as _similarity_topk
from recsys_core._native import stream_read as _stream_read
from recsys_core._native import top_magnitude_rows as _top_magnitude_rows

__all__ = [
    "IVF_MIN_ITEMS",
    "BatchRecommendations",
    "CompressedScorer",
    "CoreError",
    "DenseScorer",
    "Explanations",
    "InvalidArgumentError",
    "InvalidMatrixError",
    "NonFiniteError",
    "Recommendations",
    "SparseScorer",
    "als_gram",
    "als_half_step",
    "als_solve_row",
    "blend_topk",
    "half_exact",
    "select_topk",
    "similarity_topk",
    "stream_read",
    "top_magnitude_rows",
]

_I32_MAX = np.iinfo(np.int32).max


class Explanations(NamedTuple):
    """Contributions behind each recommended item: item ``r`` owns
    ``sources[indptr[r]:indptr[r + 1]]`` and the matching ``contributions``."""

    indptr: np.ndarray
    sources: np.ndarray
    contributions: np.ndarray

    def for_item(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[r], self.indptr[r + 1]
        return self.sources[a:b], self.contributions[a:b]


class Recommendations(NamedTuple):
    items: np.ndarray
    scores: np.ndarray
    explanations: Explanations | None = None


class BatchRecommendations(NamedTuple):
    """Ragged per-user results: user ``u`` owns ``items[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    explain_indptr: np.ndarray | None = None
    explain_sources: np.ndarray | None = None
    explain_contributions: np.ndarray | None = None

    def __len__(self) -> int:  # number of users, not of fields
        return len(self.indptr) - 1

    def user(self, u: int) -> Recommendations:
        a, b = int(self.indptr[u]), int(self.indptr[u + 1])
        ex = None
        if self.explain_indptr is not None:
            p = self.explain_indptr[a : b + 1]
            ex = Explanations(
                p - p[0],
                self.explain_sources[p[0] : p[-1]],
                self.explain_contributions[p[0] : p[-1]],
            )
        return Recommendations(self.items[a:b], self.scores[a:b], ex)

    def __getitem__(self, u):  # b[u] is user u's Recommendations; fields stay reachable by name
        if isinstance(u, (int, np.integer)):
            return self.user(int(u))
        return tuple.__getitem__(self, u)

    def __iter__(self):
        return (self.user(u) for u in range(len(self)))


def _index_array(x, name: str) -> np.ndarray:
    """Converts an index list to C-contiguous int32, rejecting lossy conversions."""
    a = np.asarray(x)
    if a.dtype == np.int32 and a.ndim == 1 and a.flags.c_contiguous:
        return a
    if a.ndim != 1:
        if a.size == 0:
            return np.zeros(0, dtype=np.int32)
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int32)
    kind = a.dtype.kind
    if kind in "iu":
        lo, hi = a.min(), a.max()
        if lo < -_I32_MAX - 1 or hi > _I32_MAX:
            raise InvalidArgumentError(f"{name} has values outside the int32 range")
        return np.ascontiguousarray(a, dtype=np.int32)
    if kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InvalidArgumentError(f"{name} must hold integer indices, got non-integer floats")
        if a.min() < -_I32_MAX - 1 or a.max() > _I32_MAX:
            raise InvalidArgumentError(f"{name} has values outside the int32 range")
        return np.ascontiguousarray(a, dtype=np.int32)
    raise InvalidArgumentError(f"{name} must hold integer indices, got dtype {a.dtype}")


def _opt_index(x, name: str) -> np.ndarray | None:
    return None if x is None else _index_array(x, name)


def _float_array(x, name: str, ndim: int) -> np.ndarray:
    """Converts weights or factors to C-contiguous float32, rejecting non-real dtypes."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise InvalidArgumentError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            b = a.astype(np.float32)
        overflow = np.isinf(b) & np.isfinite(a)
        if overflow.any():
            pos = int(np.flatnonzero(overflow.ravel())[0])
            raise InvalidArgumentError(f"{name}[{pos}] = {a.ravel()[pos]} overflows float32")
        a = b
    return np.ascontiguousarray(a)


def _csr_arrays(m, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(indptr int64, indices int32, data float32, n_rows, n_cols) of any scipy sparse matrix."""
    if not sp.issparse(m):
        raise InvalidArgumentError(f"{name} must be a scipy.sparse matrix, got {type(m).__name__}")
    if m.ndim != 2:
        raise InvalidArgumentError(f"{name} must be two-dimensional")
    if m.format != "csr":
        m = m.tocsr()
    n_rows, n_cols = m.shape
    if m.data.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"{name} must hold real weights, got dtype {m.data.dtype}")
    indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
    indices = _index_array(m.indices, f"{name}.indices")
    data = _float_array(m.data, f"{name}.data", 1)
    return indptr, indices, data, n_rows, n_cols


_I32 = np.dtype(np.int32)
_F32 = np.dtype(np.float32)
_MAX_COUNT = 2**62


def _exact(a, dtype: np.dtype) -> bool:
    """Already what the native layer takes: a 1-D C-contiguous array of exactly ``dtype``.
    The single-user calls skip all conversion for such input; what runs here runs with the
    GIL held, so it bounds how well concurrent callers scale."""
    return type(a) is np.ndarray and a.dtype == dtype and a.ndim == 1 and a.flags.c_contiguous


def _small(v) -> bool:
    return type(v) is int and v < _MAX_COUNT


def _count(v, name: str) -> int:
    """An integer count; any count beyond 2**62 means "all" and is clamped there."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {v!r}")
    return min(int(v), 2**62)


def similarity_topk(
    X,
    k: int,
    *,
    shrink: float = 0.0,
    weighting: str = "none",
    bm25_k1: float = 1.2,
    bm25_b: float = 0.75,
    measure: str = "cosine",
    include_self: bool = False,
    num_threads: int | None = None,
    rows: tuple[int, int] | None = None,
    only_rows=None,
    pop_beta: float = 0.0,
) -> sp.csr_matrix:
    """Similarity between the rows of ``X``, keeping each row's top ``k`` neighbours.

    For item-item similarity pass the item-user matrix (``user_items.T``: a CSC view is used
    without a scipy conversion). Returns an ``n_rows x n_rows`` float32 CSR matrix with sorted
    indices. See docs/core.md for the weighting formulas and ranking order.

    ``rows=(lo, hi)``: only those rows' neighbours, a ``(hi - lo) x n_rows`` matrix equal to
    rows ``lo:hi`` of the full result (row blocks computed apart concatenate to it).

    ``only_rows`` (row indices): only those rows' neighbours, at their cost; the result is
    ``n_rows x n_rows``, those rows equal to the full result's and the others empty. Not with
    ``rows``.

    ``pop_beta``: the score of candidate row ``j`` is multiplied by ``n_j ** -pop_beta``
    (``n_j``: row ``j``'s non-zero entries in ``X``, before weighting: an item's users) before
    each row's top ``k`` are chosen; 0 (the default) changes nothing.
    """
    k = _count(k, "k")
    of_columns = sp.issparse(X) and X.format == "csc"
    only = None
    if only_rows is not None:
        if rows is not None:
            raise InvalidArgumentError("only_rows and rows cannot be given together")
        if of_columns:
            X, of_columns = X.tocsr(), False
        picks = _index_array(only_rows, "only_rows")
        if picks.size and (picks.min() < 0 or picks.max() >= X.shape[0]):
            raise InvalidArgumentError(f"only_rows must be row indices below {X.shape[0]}")
        only = np.zeros(X.shape[0], dtype=bool)
        only[picks] = True
    src = X.T if of_columns else X  # CSC of X is CSR of X.T
    indptr, indices, data, n_rows, n_cols = _csr_arrays(src, "X")
    out = _similarity_topk(
        indptr,
        indices,
        data,
        n_rows,
        n_cols,
        k,
        float(shrink),
        weighting,
        float(bm25_k1),
        float(bm25_b),
        measure,
        bool(include_self),
        of_columns,
        num_threads,
        None if rows is None else (_count(rows[0], "rows"), _count(rows[1], "rows")),
        only,
        float(pop_beta),
    )
    n = X.shape[0]
    lo, hi = (0, n) if rows is None else rows
    return sp.csr_matrix((out[2], out[1], out[0]), shape=(hi - lo, n))


class SparseScorer:
    """Top-K scoring of a weighted history against a neighbour matrix held in Rust."""

    def __init__(self, neighbours) -> None:
        indptr, indices, data, n_rows, n_cols = _csr_arrays(neighbours, "neighbours")
        self._native = _SparseScorer(indptr, indices, data, n_rows, n_cols)

    @property
    def n_sources(self) -> int:
        return self._native.n_sources

    @property
    def n_items(self) -> int:
        return self._native.n_items

    @property
    def neighbours(self) -> sp.csr_matrix:
        indptr, indices, data = self._native.matrix()
        return sp.csr_matrix((data, indices, indptr), shape=(self.n_sources, self.n_items))

    def evidence(self, rows, weights, cols, top: int) -> dict[str, np.ndarray]:
        """Per item of ``cols``: the ``top`` history ``rows`` adding most to its score
        (``sources``, -1 where fewer add anything; ``contributions`` = weight x value;
        ``similarities`` = the stored values; each len(cols) x top), and ``scores``, the
        whole weighted history's score of each item."""
        r = np.ascontiguousarray(rows, dtype=_I32)
        c = np.ascontiguousarray(cols, dtype=_I32)
        w = np.ascontiguousarray(weights, dtype=_F32)
        src, con, sim, scores = self._native.evidence(r, w, c, int(top))
        shape = (len(c), int(top))
        return {
            "sources": src.reshape(shape),
            "contributions": con.reshape(shape),
            "similarities": sim.reshape(shape),
            "scores": scores,
        }

    def recommend(
        self,
        history_items,
        history_weights=None,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        exclude_history: bool = True,
        explain: int = 0,
    ) -> Recommendations:
        if (
            exclude is None
            and allow is None
            and deny is None
            and _small(k)
            and _small(explain)
            and _exact(history_items, _I32)
            and (history_weights is None or _exact(history_weights, _F32))
        ):
            r = self._native.recommend(
                history_items, history_weights, k, None, None, None, bool(exclude_history), explain
            )
            if r[2] is None:
                return Recommendations(r[0], r[1], None)
            return Recommendations(r[0], r[1], Explanations(r[2], r[3], r[4]))
        items = _index_array(history_items, "history_items")
        weights = (
            None if history_weights is None else _float_array(history_weights, "history_weights", 1)
        )
        r = self._native.recommend(
            items,
            weights,
            _count(k, "k"),
            _opt_index(exclude, "exclude"),
            _opt_index(allow, "allow"),
            _opt_index(deny, "deny"),
            bool(exclude_history),
            _count(explain, "explain"),
        )
        ex = None if r[2] is None else Explanations(r[2], r[3], r[4])
        return Recommendations(r[0], r[1], ex)

    def recommend_batch(
        self,
        history,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        exclude_history: bool = True,
        explain: int = 0,
        num_threads: int | None = None,
    ) -> BatchRecommendations:
        indptr, indices, data, n_users, n_cols = _csr_arrays(history, "history")
        if n_cols != self.n_sources:
            raise InvalidArgumentError(
                f"history has {n_cols} columns but the model has {self.n_sources} sources"
            )
        ex_p, ex_i = _exclude_arrays(exclude, n_users, self.n_items)
        r = self._native.recommend_batch(
            indptr,
            indices,
            data,
            n_users,
            ex_p,
            ex_i,
            _opt_index(allow, "allow"),
            _opt_index(deny, "deny"),
            _count(k, "k"),
            bool(exclude_history),
            _count(explain, "explain"),
            num_threads,
        )
        return BatchRecommendations(*r)


def _exclude_arrays(exclude, n_users: int, n_items: int):
    """Only the structure of ``exclude`` matters, so its values may have any dtype."""
    if exclude is None:
        return None, None
    if not sp.issparse(exclude):
        raise InvalidArgumentError(
            f"exclude must be a scipy.sparse matrix, got {type(exclude).__name__}"
        )
    m = exclude.tocsr() if exclude.format != "csr" else exclude
    n_rows, n_cols = m.shape
    indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
    indices = _index_array(m.indices, "exclude.indices")
    if (n_rows, n_cols) != (n_users, n_items):
        raise InvalidArgumentError(
            f"exclude is {n_rows}x{n_cols} but must be {n_users}x{n_items} (users x items)"
        )
    return indptr, indices


class DenseScorer:
    """Top-K scoring of user vectors against an item-factor matrix held in Rust. A matrix whose
    every value is exactly representable in half precision (see `half_exact`) is stored as
    f16: half the memory to stream per scan, bit-identical scores."""

    def __init__(self, item_factors) -> None:
        self._native = _DenseScorer(_float_array(item_factors, "item_factors", 2))

    @property
    def n_items(self) -> int:
        return self._native.n_items

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def half_precision(self) -> bool:
        """Whether the factors are held as f16 (exactly: only when that loses nothing)."""
        return self._native.half_precision

    def recommend(
        self,
        user_vector,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        deny_mask=None,
        num_threads: int | None = None,
    ) -> Recommendations:
        if (
            exclude is None
            and allow is None
            and deny is None
            and deny_mask is None
            and _small(k)
            and _exact(user_vector, _F32)
        ):
            r = self._native.recommend(user_vector, k, None, None, None, num_threads)
            return Recommendations(r[0], r[1], None)
        u = _float_array(user_vector, "user_vector", 1)
        r = self._native.recommend(
            u,
            _count(k, "k"),
            _opt_index(exclude, "exclude"),
            _opt_index(allow, "allow"),
            _mask_as_deny(deny, deny_mask, self.n_items),
            num_threads,
        )
        return Recommendations(r[0], r[1], None)

    def recommend_batch(
        self,
        user_vectors,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        deny_mask=None,
        num_threads: int | None = None,
    ) -> BatchRecommendations:
        u = _float_array(user_vectors, "user_vectors", 2)
        ex_p, ex_i = _exclude_arrays(exclude, u.shape[0], self.n_items)
        r = self._native.recommend_batch(
            u,
            _count(k, "k"),
            ex_p,
            ex_i,
            _opt_index(allow, "allow"),
            _mask_as_deny(deny, deny_mask, self.n_items),
            num_threads,
        )
        return BatchRecommendations(r[0], r[1], r[2])


def _deny_mask(mask, n_items: int) -> np.ndarray | None:
    """A bool deny mask as the uint8 view the native layer reads (no copy when contiguous)."""
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise InvalidArgumentError(f"deny_mask must be a numpy bool array, got {got}")
    if mask.shape != (n_items,):
        raise InvalidArgumentError(
            f"deny_mask must have shape ({n_items},), one entry per item, got {mask.shape}"
        )
    if not mask.flags.c_contiguous:
        mask = np.ascontiguousarray(mask)
    return mask.view(np.uint8)


def _mask_as_deny(deny, deny_mask, n_items: int) -> np.ndarray | None:
    """The exact scorer takes the mask as denied ids (one pass over the mask per call)."""
    d = _opt_index(deny, "deny")
    m = _deny_mask(deny_mask, n_items)
    if m is None:
        return d
    ids = np.flatnonzero(m).astype(np.int32)
    return ids if d is None else np.concatenate([d, ids])


def _seed(v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise InvalidArgumentError(f"seed must be an integer, got {v!r}")
    if not 0 <= int(v) < 2**64:
        raise InvalidArgumentError(f"seed must be in [0, 2**64), got {v}")
    return int(v)


class CompressedScorer:
    """4-bit PQ fast-scan codes of an item-factor matrix (+ IVF lists from IVF_MIN_ITEMS
    items), with exact rerank.

    Every item's code is scored against the user vector, the filters are applied inside the
    scan, the best ``rerank`` eligible candidates are rescored with the exact f32 factors and
    the best ``k`` of those are returned: exactly ``min(k, #eligible)`` items, with exact
    scores. When few items are eligible (a short allow list, a deny mask that removes nearly
    everything) the eligible items are scored exactly instead. The scorer keeps a reference
    to the float32 factor matrix it was given; do not modify that array afterwards.
    See docs/core.md ("Compressed scoring")."""

    def __init__(self, native) -> None:
        self._native = native

    @classmethod
    def build(
        cls,
        item_factors,
        *,
        seed: int = 0,
        ivf_lists: int | None = None,
        num_threads: int | None = None,
    ) -> CompressedScorer:
        """Trains the codebooks (seeded, on a sample) and encodes every item; ``ivf_lists``
        None adds IVF lists automatically from ``IVF_MIN_ITEMS`` items, 0 never, n > 0 builds
        n lists. The same factors and seed give the same bytes."""
        f = _float_array(item_factors, "item_factors", 2)
        lists = None if ivf_lists is None else _count(ivf_lists, "ivf_lists")
        return cls(_CompressedScorer.build(f, _seed(seed), lists, num_threads))

    def to_bytes(self) -> bytes:
        """The codes and lists with a format version, the shape, the factors' fingerprint
        and a checksum; `from_bytes` checks all of them."""
        return self._native.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes, item_factors) -> CompressedScorer:
        """Loads `to_bytes` output for the factors it was built from; raises
        InvalidArgumentError naming what is wrong (bad version, checksum mismatch, wrong
        shape, built from other factors)."""
        if isinstance(blob, (bytearray, memoryview)):
            blob = bytes(blob)
        if not isinstance(blob, bytes):
            raise InvalidArgumentError(f"blob must be bytes, got {type(blob).__name__}")
        f = _float_array(item_factors, "item_factors", 2)
        return cls(_CompressedScorer.from_bytes(blob, f))

    @property
    def n_items(self) -> int:
        return self._native.n_items

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def ivf_lists(self) -> int:
        """Number of IVF lists (0: the flat layout, every code scanned)."""
        return self._native.ivf_lists

    @property
    def index_bytes(self) -> int:
        """Bytes of the codes, codebooks and lists (the factors are not counted)."""
        return self._native.index_bytes

    def recommend(
        self,
        user_vector,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        deny_mask=None,
        rerank: int | None = None,
        num_threads: int | None = None,
    ) -> Recommendations:
        """Top ``k`` for one user. ``exclude``/``allow``/``deny``: item ids as for
        `DenseScorer`; ``deny_mask``: a bool array of ``n_items`` (True = not available),
        read in place; ``rerank``: candidates rescored exactly (default 128, at least k)."""
        if (
            exclude is None
            and allow is None
            and deny is None
            and deny_mask is None
            and rerank is None
            and _small(k)
            and _exact(user_vector, _F32)
        ):
            r = self._native.recommend(user_vector, k, None, None, None, None, None, num_threads)
            return Recommendations(r[0], r[1], None)
        r = self._native.recommend(
            _float_array(user_vector, "user_vector", 1),
            _count(k, "k"),
            _opt_index(exclude, "exclude"),
            _opt_index(allow, "allow"),
            _opt_index(deny, "deny"),
            _deny_mask(deny_mask, self.n_items),
            None if rerank is None else _count(rerank, "rerank"),
            num_threads,
        )
        return Recommendations(r[0], r[1], None)

    def recommend_batch(
        self,
        user_vectors,
        k: int = 10,
        *,
        exclude=None,
        allow=None,
        deny=None,
        deny_mask=None,
        rerank: int | None = None,
        num_threads: int | None = None,
    ) -> BatchRecommendations:
        """`recommend` for each row of ``user_vectors``; ``exclude`` is a users x items
        sparse matrix as in `DenseScorer.recommend_batch`."""
        u = _float_array(user_vectors, "user_vectors", 2)
        ex_p, ex_i = _exclude_arrays(exclude, u.shape[0], self.n_items)
        r = self._native.recommend_batch(
            u,
            _count(k, "k"),
            ex_p,
            ex_i,
            _opt_index(allow, "allow"),
            _opt_index(deny, "deny"),
            _deny_mask(deny_mask, self.n_items),
            None if rerank is None else _count(rerank, "rerank"),
            num_threads,
        )
        return BatchRecommendations(r[0], r[1], r[2])


def stream_read(a, num_threads: int | None = None) -> float:
    """Sums a C-contiguous float32 array with the dense scorer's access pattern and threads;
    its time is the memory-bandwidth bound of ``DenseScorer.recommend``."""
    a = np.asarray(a)
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise InvalidArgumentError("stream_read needs a C-contiguous float32 array")
    row_len = a.shape[-1] if a.ndim >= 2 else 1
    return _stream_read(a, row_len, num_threads)


def select_topk(
    scores,
    k: int = 10,
    *,
    exclude=None,
    allow=None,
    deny=None,
    num_threads: int | None = None,
) -> BatchRecommendations:
    """Top-K of each row of a precomputed ``n_users x n_items`` score matrix, with the
    scorers' filters (``exclude`` a users x items sparse matrix) and ranking order."""
    s = _float_array(scores, "scores", 2)
    ex_p, ex_i = _exclude_arrays(exclude, s.shape[0], s.shape[1])
    r = _select_topk(
        s,
        _count(k, "k"),
        ex_p,
        ex_i,
        _opt_index(allow, "allow"),
        _opt_index(deny, "deny"),
        num_threads,
    )
    return BatchRecommendations(r[0], r[1], r[2])


def top_magnitude_rows(b, k: int, *, num_threads: int | None = None) -> sp.csr_matrix:
    """The ``k`` entries of each row of the dense ``b`` largest in magnitude (equal
    magnitudes to the lower column), zeros dropped, as CSR with sorted columns."""
    d = _float_array(b, "b", 2)
    indptr, indices, data = _top_magnitude_rows(d, _count(k, "k"), num_threads)
    out = sp.csr_matrix((data, indices, indptr), shape=d.shape)
    out.has_sorted_indices = True
    return out


def als_half_step(
    user_items,
    x: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float,
    reg: float,
    cg_steps: int = 3,
    num_threads: int | None = None,
    reg_exponent: float = 0.0,
    gram: np.ndarray | None = None,
) -> None:
    """One weighted-ALS half-step (conjugate gradient): updates ``x`` (rows x f, float32,
    C-contiguous) in place so each row fits ``user_items`` (rows x cols) given ``y``.

    Row ``u`` is regularised by ``reg * max(n_u, 1) ** reg_exponent``, ``n_u`` its stored
    entries (frequency-scaled regularisation; ``reg_exponent`` in [0, 1], 0 = one ``reg``
    for every row, the same results as before the parameter existed).

    ``gram``: ``als_gram(y, reg)``, computed once when the rows are updated in blocks (each
    block's call then skips the cols x f² product; the results are the same)."""
    indptr, indices, data, n_rows, n_cols = _csr_arrays(user_items, "user_items")
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous):
        raise InvalidArgumentError(
            "x must be a C-contiguous float32 array (it is updated in place)"
        )
    if x.ndim != 2 or x.shape[0] != n_rows:
        raise InvalidArgumentError(f"x must have shape ({n_rows}, f), got {x.shape}")
    y = _float_array(y, "y", 2)
    if y.shape[0] != n_cols:
        raise InvalidArgumentError(f"y must have shape ({n_cols}, f), got {y.shape}")
    _als_half_step(
        indptr,
        indices,
        data,
        n_rows,
        n_cols,
        x,
        y,
        float(alpha),
        float(reg),
        _count(cg_steps, "cg_steps"),
        num_threads,
        reg_exponent=float(reg_exponent),
        gram=None if gram is None else _float_array(gram, "gram", 2),
    )


def als_gram(y: np.ndarray, reg: float) -> np.ndarray:
    """``YᵀY + reg I`` (f x f float32) exactly as ``als_half_step`` builds it."""
    y = _float_array(y, "y", 2)
    f = y.shape[1]
    return _als_gram(y, float(reg)).reshape(f, f)


class Blend(NamedTuple):
    """``items`` and blended ``scores`` (best first); ``part_scores[p, r]`` is part ``p``'s
    normalised score at item ``r`` (parts in the order given)."""

    items: np.ndarray
    scores: np.ndarray
    part_scores: np.ndarray


def blend_topk(
    parts,
    n_items: int,
    k: int = 10,
    *,
    exclude=None,
    allow=None,
    deny=None,
) -> Blend:
    """Top-``k`` of ``sum_p weight_p * scores_p / max|scores_p|`` for one user, where each part
    is ``(SparseScorer, history_items, history_weights, weight)``, ``(DenseScorer, user_vector,
    weight)`` or ``(scores, weight)`` with ``scores`` a float32 vector over the items. Every
    item is a candidate (score 0 where no part reaches it); filters as in the scorers."""
    sparse, dense, fixed, order = [], [], [], []
    for n, part in enumerate(parts):
        if type(part[0]) is SparseScorer or isinstance(part[0], SparseScorer):
            s, items, weights, w = part
            if not _exact(items, _I32):
                items = _index_array(items, f"parts[{n}].history_items")
            if weights is None:
                weights = np.ones(len(items), np.float32)
            elif not _exact(weights, _F32):
                weights = _float_array(weights, f"parts[{n}].history_weights", 1)
            order.append(("s", len(sparse)))
            sparse.append((s._native, items, weights, float(w)))
        elif type(part[0]) is DenseScorer or isinstance(part[0], DenseScorer):
            d, vec, w = part
            if not _exact(vec, _F32):
                vec = _float_array(vec, f"parts[{n}].user_vector", 1)
            order.append(("d", len(dense)))
            dense.append((d._native, vec, float(w)))
        else:
            scores, w = part
            if not _exact(scores, _F32):
                scores = _float_array(scores, f"parts[{n}].scores", 1)
            order.append(("f", len(fixed)))
            fixed.append((scores, float(w)))
    if exclude is not None and not _exact(exclude, _I32):
        exclude = _index_array(exclude, "exclude")
    items, scores, flat = _blend_topk(
        sparse,
        dense,
        fixed,
        n_items if _small(n_items) else _count(n_items, "n_items"),
        k if _small(k) else _count(k, "k"),
        exclude,
        None if allow is None else _index_array(allow, "allow"),
        None if deny is None else _index_array(deny, "deny"),
    )
    by_kind = flat.reshape(len(parts), len(items)) if len(parts) else flat.reshape(0, 0)
    base = {"s": 0, "d": len(sparse), "f": len(sparse) + len(dense)}
    rows = [base[kind] + i for kind, i in order]
    return Blend(items, scores, by_kind[rows] if rows else by_kind)


def half_exact(a) -> np.ndarray:
    """``a`` as float32 rounded to the nearest half-precision values: a factor matrix a
    `DenseScorer` then holds in f16 (half the bytes per scan) with no further rounding. Values
    beyond half precision's range are kept as they are (the matrix then stays f32)."""
    a = np.asarray(a, np.float32)
    with np.errstate(over="ignore"):
        h = a.astype(np.float16).astype(np.float32)
    return np.where(np.isfinite(h) | ~np.isfinite(a), h, a)


def als_solve_row(
    indices,
    data,
    y: np.ndarray,
    yty: np.ndarray,
    *,
    alpha: float,
    reg: float,
    reg_exponent: float = 0.0,
    max_steps: int = 50,
) -> np.ndarray:
    """Fold-in: the factor row (float32, length f) of one history, the items ``indices`` with
    their (already transformed) weights ``data``, against the fixed ``y`` (items x f). It
    solves the weighted-ALS user half-step's normal equations
    ``(YᵀY + reg_u I + Σ alpha w_i y_i y_iᵀ) x = Σ (1 + alpha w_i) y_i`` with
    ``reg_u = reg * max(n, 1) ** reg_exponent`` by conjugate gradient from 0, until the
    residual is 1e-5 of the right-hand side or after ``max_steps`` steps. ``yty`` is ``YᵀY``
    (f x f, without reg): computed once per model, it is what a half-step rebuilds."""
    y = _float_array(y, "y", 2)
    yty = _float_array(yty, "yty", 2)
    return _als_solve_row(
        np.ascontiguousarray(indices, np.int32),
        np.ascontiguousarray(data, np.float32),
        y,
        yty,
        float(alpha),
        float(reg),
        float(reg_exponent),
        _count(max_steps, "max_steps"),
    )
