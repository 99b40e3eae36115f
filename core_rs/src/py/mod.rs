//! The PyO3 layer: argument conversion, GIL release and error mapping only. The public Python
//! API (`recsys_core/__init__.py`) converts dtypes and shapes before calling in here, so this
//! layer takes exact dtypes and contiguous arrays.

use crate::error::CoreError as KernelError;
use crate::kernels::als::{self, AlsParams};
use crate::kernels::blend;
use crate::kernels::csr::{Csr, CsrRef};
use crate::kernels::dense::{self, DenseModel};
use crate::kernels::filters::SharedFilters;
use crate::kernels::similarity::{self, Measure, SimilarityParams, Weighting};
use crate::kernels::sparse::{BatchRecs, Recs, SparseModel};
use numpy::{
    PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

mod compressed;

pyo3::create_exception!(
    recsys_core,
    CoreError,
    PyValueError,
    "Base class of every error raised by recsys_core (a ValueError)."
);
pyo3::create_exception!(
    recsys_core,
    InvalidMatrixError,
    CoreError,
    "A sparse matrix's arrays do not describe a valid CSR matrix."
);
pyo3::create_exception!(
    recsys_core,
    NonFiniteError,
    CoreError,
    "A weight or vector entry is NaN or infinite."
);
pyo3::create_exception!(
    recsys_core,
    InvalidArgumentError,
    CoreError,
    "An argument is outside its domain (k, options, shapes, index lists, dtypes)."
);

impl From<KernelError> for PyErr {
    fn from(e: KernelError) -> PyErr {
        let msg = e.to_string();
        match e {
            KernelError::InvalidMatrix { .. } => InvalidMatrixError::new_err(msg),
            KernelError::NonFinite { .. } => NonFiniteError::new_err(msg),
            KernelError::InvalidArgument(_) => InvalidArgumentError::new_err(msg),
        }
    }
}

fn slice<'a, T: numpy::Element>(name: &str, a: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| InvalidArgumentError::new_err(format!("{name} must be a C-contiguous array")))
}

fn opt_slice<'a, T: numpy::Element>(
    name: &str,
    a: &'a Option<PyReadonlyArray1<'_, T>>,
) -> PyResult<Option<&'a [T]>> {
    a.as_ref().map(|a| slice(name, a)).transpose()
}

fn count(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v)
        .map_err(|_| InvalidArgumentError::new_err(format!("{name} must be >= 0, got {v}")))
}

fn threads(v: Option<i64>) -> PyResult<Option<usize>> {
    v.map(|n| count("num_threads", n)).transpose()
}

fn as_i32(v: &[u32]) -> Vec<i32> {
    v.iter().map(|&x| x as i32).collect()
}

fn recs_to_py<'py>(py: Python<'py>, r: Recs, explain: bool) -> PyResult<Bound<'py, PyTuple>> {
    let items = PyArray1::from_vec(py, as_i32(&r.items)).into_bound_py_any(py)?;
    let scores = PyArray1::from_vec(py, r.scores).into_bound_py_any(py)?;
    let (a, b, c) = if explain {
        (
            PyArray1::from_vec(py, r.explain_indptr).into_bound_py_any(py)?,
            PyArray1::from_vec(py, as_i32(&r.explain_sources)).into_bound_py_any(py)?,
            PyArray1::from_vec(py, r.explain_values).into_bound_py_any(py)?,
        )
    } else {
        (
            py.None().into_bound(py),
            py.None().into_bound(py),
            py.None().into_bound(py),
        )
    };
    PyTuple::new(py, [items, scores, a, b, c])
}

fn batch_to_py<'py>(py: Python<'py>, r: BatchRecs, explain: bool) -> PyResult<Bound<'py, PyTuple>> {
    let mut out = vec![
        PyArray1::from_vec(py, r.indptr).into_bound_py_any(py)?,
        PyArray1::from_vec(py, as_i32(&r.items)).into_bound_py_any(py)?,
        PyArray1::from_vec(py, r.scores).into_bound_py_any(py)?,
    ];
    if explain {
        out.push(PyArray1::from_vec(py, r.explain_indptr).into_bound_py_any(py)?);
        out.push(PyArray1::from_vec(py, as_i32(&r.explain_sources)).into_bound_py_any(py)?);
        out.push(PyArray1::from_vec(py, r.explain_values).into_bound_py_any(py)?);
    } else {
        out.extend((0..3).map(|_| py.None().into_bound(py)));
    }
    PyTuple::new(py, out)
}

fn csr_to_py<'py>(py: Python<'py>, m: Csr) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            PyArray1::from_vec(py, m.indptr).into_bound_py_any(py)?,
            PyArray1::from_vec(py, m.indices).into_bound_py_any(py)?,
            PyArray1::from_vec(py, m.data).into_bound_py_any(py)?,
        ],
    )
}

/// A batch call's user vectors (checked against the model's factor count), as one slice.
fn user_rows<'a>(user_vectors: &'a PyReadonlyArray2<'_, f32>, dim: usize) -> PyResult<&'a [f32]> {
    let d = user_vectors.shape()[1];
    if d != dim {
        return Err(InvalidArgumentError::new_err(format!(
            "user_vectors has {d} columns; the model has {dim} factors"
        )));
    }
    user_vectors
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("user_vectors must be C-contiguous"))
}

/// A batch call's exclusions as a CSR whose values are ignored (`ones` lends it the values).
fn exclude_view<'a>(
    indptr: Option<&'a [i64]>,
    indices: Option<&'a [i32]>,
    ones: &'a mut Vec<f32>,
    n_rows: usize,
    n_cols: usize,
) -> PyResult<Option<CsrRef<'a>>> {
    match (indptr, indices) {
        (Some(p), Some(i)) => {
            ones.resize(i.len(), 1.0);
            let ones: &'a [f32] = ones;
            Ok(Some(CsrRef::new("exclude", n_rows, n_cols, p, i, ones)?))
        }
        _ => Ok(None),
    }
}

/// Borrowed CSR arrays from Python.
struct PyCsr<'py> {
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i32>,
    data: PyReadonlyArray1<'py, f32>,
}

impl PyCsr<'_> {
    fn view(&self, name: &str, n_rows: usize, n_cols: usize) -> PyResult<CsrRef<'_>> {
        Ok(CsrRef::new(
            name,
            n_rows,
            n_cols,
            slice(&format!("{name}.indptr"), &self.indptr)?,
            slice(&format!("{name}.indices"), &self.indices)?,
            slice(&format!("{name}.data"), &self.data)?,
        )?)
    }
}

#[allow(clippy::too_many_arguments)]
fn parse_params(
    k: i64,
    shrink: f32,
    weighting: &str,
    bm25_k1: f32,
    bm25_b: f32,
    measure: &str,
    include_self: bool,
    pop_beta: f32,
) -> PyResult<SimilarityParams> {
    let weighting = match weighting {
        "none" => Weighting::None,
        "tfidf" => Weighting::TfIdf,
        "bm25" => Weighting::Bm25 {
            k1: bm25_k1,
            b: bm25_b,
        },
        other => {
            return Err(InvalidArgumentError::new_err(format!(
                "weighting must be 'none', 'tfidf' or 'bm25', got {other:?}"
            )))
        }
    };
    let measure = match measure {
        "cosine" => Measure::Cosine { shrink },
        "dot" => Measure::Dot,
        other => {
            return Err(InvalidArgumentError::new_err(format!(
                "measure must be 'cosine' or 'dot', got {other:?}"
            )))
        }
    };
    Ok(SimilarityParams {
        k: count("k", k)?,
        weighting,
        measure,
        include_self,
        pop_beta,
    })
}

/// Top-k row-row similarity. With `of_columns` the arrays describe the transpose of the matrix
/// whose rows are compared (e.g. users x items for item-item similarity).
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, n_rows, n_cols, k, shrink, weighting, bm25_k1, bm25_b, measure, include_self, of_columns, num_threads=None, rows=None, only=None, pop_beta=0.0))]
#[allow(clippy::too_many_arguments)]
fn similarity_topk<'py>(
    py: Python<'py>,
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i32>,
    data: PyReadonlyArray1<'py, f32>,
    n_rows: i64,
    n_cols: i64,
    k: i64,
    shrink: f32,
    weighting: &str,
    bm25_k1: f32,
    bm25_b: f32,
    measure: &str,
    include_self: bool,
    of_columns: bool,
    num_threads: Option<i64>,
    rows: Option<(i64, i64)>,
    only: Option<PyReadonlyArray1<'py, bool>>,
    pop_beta: f32,
) -> PyResult<Bound<'py, PyTuple>> {
    let params = parse_params(
        k,
        shrink,
        weighting,
        bm25_k1,
        bm25_b,
        measure,
        include_self,
        pop_beta,
    )?;
    let rows = match rows {
        Some((lo, hi)) => Some((count("rows start", lo)?, count("rows end", hi)?)),
        None => None,
    };
    let m = PyCsr {
        indptr,
        indices,
        data,
    };
    let x = m.view("X", count("n_rows", n_rows)?, count("n_cols", n_cols)?)?;
    let nt = threads(num_threads)?;
    if let Some(only) = only {
        if of_columns || rows.is_some() {
            return Err(InvalidArgumentError::new_err(
                "only selects rows of X itself: not with of_columns or rows",
            ));
        }
        let mask = only
            .as_slice()
            .map_err(|_| InvalidArgumentError::new_err("only must be C-contiguous"))?;
        let out = py.detach(|| similarity::similarity_topk_only(x, &params, nt, mask))?;
        return csr_to_py(py, out);
    }
    let out = py.detach(|| {
        if of_columns {
            similarity::similarity_topk_of_columns_rows(x, &params, nt, rows)
        } else {
            similarity::similarity_topk_rows(x, &params, nt, rows)
        }
    })?;
    csr_to_py(py, out)
}

/// Memory-bandwidth probe: sums `a` with the dense scorer's access pattern and threads.
#[pyfunction]
#[pyo3(signature = (a, row_len, num_threads=None))]
fn stream_read(
    py: Python<'_>,
    a: PyReadonlyArrayDyn<'_, f32>,
    row_len: i64,
    num_threads: Option<i64>,
) -> PyResult<f64> {
    let s = a
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("a must be a C-contiguous array"))?;
    let (row_len, nt) = (count("row_len", row_len)?, threads(num_threads)?);
    Ok(py.detach(|| dense::stream_read(s, row_len, nt))?)
}

/// One weighted-ALS half-step: updates `x` (rows x f) in place from `y` (cols x f); row `u`
/// is regularised by `reg * max(n_u, 1)^reg_exponent`.
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, n_rows, n_cols, x, y, alpha, reg, cg_steps, num_threads=None, reg_exponent=0.0, gram=None))]
#[allow(clippy::too_many_arguments)]
fn als_half_step(
    py: Python<'_>,
    indptr: PyReadonlyArray1<'_, i64>,
    indices: PyReadonlyArray1<'_, i32>,
    data: PyReadonlyArray1<'_, f32>,
    n_rows: i64,
    n_cols: i64,
    mut x: PyReadwriteArray2<'_, f32>,
    y: PyReadonlyArray2<'_, f32>,
    alpha: f32,
    reg: f32,
    cg_steps: i64,
    num_threads: Option<i64>,
    reg_exponent: f32,
    gram: Option<PyReadonlyArray2<'_, f32>>,
) -> PyResult<()> {
    let m = PyCsr {
        indptr,
        indices,
        data,
    };
    let r = m.view(
        "user_items",
        count("n_rows", n_rows)?,
        count("n_cols", n_cols)?,
    )?;
    let f = x.shape()[1];
    if y.shape()[1] != f {
        return Err(InvalidArgumentError::new_err(format!(
            "x has {f} factors but y has {}",
            y.shape()[1]
        )));
    }
    let ys = y
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("y must be C-contiguous"))?;
    let xs = x
        .as_slice_mut()
        .map_err(|_| InvalidArgumentError::new_err("x must be C-contiguous"))?;
    let params = AlsParams {
        alpha,
        reg,
        reg_exponent,
        cg_steps: count("cg_steps", cg_steps)?,
    };
    let nt = threads(num_threads)?;
    let gs = match &gram {
        Some(g) => Some(
            g.as_slice()
                .map_err(|_| InvalidArgumentError::new_err("gram must be C-contiguous"))?,
        ),
        None => None,
    };
    Ok(py.detach(|| als::half_step_with_gram(r, xs, ys, gs, f, &params, nt))?)
}

/// `YᵀY + reg I` as a half-step builds it (f x f, flat row-major), to pass to `als_half_step(gram=...)`.
#[pyfunction]
fn als_gram<'py>(
    py: Python<'py>,
    y: PyReadonlyArray2<'_, f32>,
    reg: f32,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let f = y.shape()[1];
    let ys = y
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("y must be C-contiguous"))?;
    let g = py.detach(|| als::gram_matrix(ys, f, reg))?;
    Ok(PyArray1::from_vec(py, g))
}

/// Top-K of precomputed score rows with the scorers' filters and ranking order.
#[pyfunction]
#[pyo3(signature = (scores, k, exclude_indptr, exclude_indices, allow, deny, num_threads=None))]
#[allow(clippy::too_many_arguments)]
fn select_topk<'py>(
    py: Python<'py>,
    scores: PyReadonlyArray2<'py, f32>,
    k: i64,
    exclude_indptr: Option<PyReadonlyArray1<'py, i64>>,
    exclude_indices: Option<PyReadonlyArray1<'py, i32>>,
    allow: Option<PyReadonlyArray1<'py, i32>>,
    deny: Option<PyReadonlyArray1<'py, i32>>,
    num_threads: Option<i64>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (n_rows, n_items) = (scores.shape()[0], scores.shape()[1]);
    let s = scores
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("scores must be C-contiguous"))?;
    let mut ones = Vec::new();
    let ex = exclude_view(
        opt_slice("exclude.indptr", &exclude_indptr)?,
        opt_slice("exclude.indices", &exclude_indices)?,
        &mut ones,
        n_rows,
        n_items,
    )?;
    let allow = opt_slice("allow", &allow)?;
    let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
    let (k, nt) = (count("k", k)?, threads(num_threads)?);
    let r = py.detach(|| {
        let shared = SharedFilters::new(n_items, deny, allow)?;
        dense::select_topk(s, n_items, k, ex, &shared, nt)
    })?;
    batch_to_py(py, r, false)
}

/// Each row's `k` entries largest in magnitude, as CSR arrays (`dense::top_magnitude_rows`).
#[pyfunction]
#[pyo3(signature = (b, k, num_threads=None))]
fn top_magnitude_rows<'py>(
    py: Python<'py>,
    b: PyReadonlyArray2<'py, f32>,
    k: i64,
    num_threads: Option<i64>,
) -> PyResult<Bound<'py, PyTuple>> {
    let n_cols = b.shape()[1];
    let s = b
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("b must be C-contiguous"))?;
    let (k, nt) = (count("k", k)?, threads(num_threads)?);
    let out = py.detach(|| dense::top_magnitude_rows(s, n_cols, k, nt))?;
    csr_to_py(py, out)
}

type SparsePart<'py> = (
    Bound<'py, SparseScorer>,
    PyReadonlyArray1<'py, i32>,
    PyReadonlyArray1<'py, f32>,
    f32,
);
type DensePart<'py> = (Bound<'py, DenseScorer>, PyReadonlyArray1<'py, f32>, f32);

/// Top-K of a weighted blend of normalised parts for one user (the hybrid's request path).
/// Part scores come back in the order sparse parts, dense parts, fixed parts.
#[pyfunction]
#[pyo3(signature = (sparse, dense, fixed, n_items, k, exclude, allow, deny))]
#[allow(clippy::too_many_arguments)]
fn blend_topk<'py>(
    py: Python<'py>,
    sparse: Vec<SparsePart<'py>>,
    dense: Vec<DensePart<'py>>,
    fixed: Vec<(PyReadonlyArray1<'py, f32>, f32)>,
    n_items: i64,
    k: i64,
    exclude: Option<PyReadonlyArray1<'py, i32>>,
    allow: Option<PyReadonlyArray1<'py, i32>>,
    deny: Option<PyReadonlyArray1<'py, i32>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let n_items = count("n_items", n_items)?;
    let mut parts: Vec<(blend::Part<'_>, f32)> = Vec::new();
    for (scorer, items, weights, w) in &sparse {
        parts.push((
            blend::Part::Sparse {
                model: &scorer.get().model,
                items: slice("history_items", items)?,
                weights: slice("history_weights", weights)?,
            },
            *w,
        ));
    }
    for (scorer, user, w) in &dense {
        parts.push((
            blend::Part::Dense {
                model: &scorer.get().model,
                user: slice("user_vector", user)?,
            },
            *w,
        ));
    }
    for (scores, w) in &fixed {
        parts.push((
            blend::Part::Fixed {
                scores: slice("scores", scores)?,
            },
            *w,
        ));
    }
    let exclude = opt_slice("exclude", &exclude)?.unwrap_or(&[]);
    let allow = opt_slice("allow", &allow)?;
    let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
    let k = count("k", k)?;
    let b = py.detach(|| {
        let shared = SharedFilters::new(n_items, deny, allow)?;
        blend::blend_topk(&parts, n_items, k, exclude, &shared)
    })?;
    PyTuple::new(
        py,
        [
            PyArray1::from_vec(py, as_i32(&b.items)).into_bound_py_any(py)?,
            PyArray1::from_vec(py, b.scores).into_bound_py_any(py)?,
            PyArray1::from_vec(py, b.part_scores).into_bound_py_any(py)?,
        ],
    )
}

#[pyclass(module = "recsys_core._native", frozen)]
struct SparseScorer {
    model: SparseModel,
}

#[pymethods]
impl SparseScorer {
    #[new]
    fn new(
        py: Python<'_>,
        indptr: PyReadonlyArray1<'_, i64>,
        indices: PyReadonlyArray1<'_, i32>,
        data: PyReadonlyArray1<'_, f32>,
        n_rows: i64,
        n_cols: i64,
    ) -> PyResult<Self> {
        let m = PyCsr {
            indptr,
            indices,
            data,
        };
        let x = m.view(
            "neighbours",
            count("n_rows", n_rows)?,
            count("n_cols", n_cols)?,
        )?;
        let model = py.detach(|| SparseModel::new(x));
        Ok(SparseScorer { model })
    }

    #[getter]
    fn n_sources(&self) -> usize {
        self.model.n_sources()
    }

    #[getter]
    fn n_items(&self) -> usize {
        self.model.n_items()
    }

    #[getter]
    fn nnz(&self) -> usize {
        self.model.matrix().nnz()
    }

    /// The canonical neighbour matrix as (indptr, indices, data) copies.
    fn matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        csr_to_py(py, self.model.matrix().clone())
    }

    /// `SparseModel::evidence` as (sources, contributions, similarities, scores), flat.
    fn evidence<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray1<'py, i32>,
        weights: PyReadonlyArray1<'py, f32>,
        cols: PyReadonlyArray1<'py, i32>,
        top: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (r, w) = (slice("rows", &rows)?, slice("weights", &weights)?);
        let (c, top) = (slice("cols", &cols)?, count("top", top)?);
        let ev = self.model.evidence(r, w, c, top)?;
        PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, ev.sources).into_bound_py_any(py)?,
                PyArray1::from_vec(py, ev.contributions).into_bound_py_any(py)?,
                PyArray1::from_vec(py, ev.similarities).into_bound_py_any(py)?,
                PyArray1::from_vec(py, ev.scores).into_bound_py_any(py)?,
            ],
        )
    }

    #[pyo3(signature = (history_items, history_weights, k, exclude, allow, deny, exclude_history, explain))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        history_items: PyReadonlyArray1<'py, i32>,
        history_weights: Option<PyReadonlyArray1<'py, f32>>,
        k: i64,
        exclude: Option<PyReadonlyArray1<'py, i32>>,
        allow: Option<PyReadonlyArray1<'py, i32>>,
        deny: Option<PyReadonlyArray1<'py, i32>>,
        exclude_history: bool,
        explain: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let items = slice("history_items", &history_items)?;
        let weights = opt_slice("history_weights", &history_weights)?;
        let exclude = opt_slice("exclude", &exclude)?.unwrap_or(&[]);
        let allow = opt_slice("allow", &allow)?;
        let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
        let (k, explain) = (count("k", k)?, count("explain", explain)?);
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend(
                items,
                weights,
                k,
                exclude,
                &shared,
                exclude_history,
                explain,
            )
        })?;
        recs_to_py(py, r, explain > 0)
    }

    #[pyo3(signature = (indptr, indices, data, n_users, exclude_indptr, exclude_indices, allow, deny, k, exclude_history, explain, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend_batch<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, i32>,
        data: PyReadonlyArray1<'py, f32>,
        n_users: i64,
        exclude_indptr: Option<PyReadonlyArray1<'py, i64>>,
        exclude_indices: Option<PyReadonlyArray1<'py, i32>>,
        allow: Option<PyReadonlyArray1<'py, i32>>,
        deny: Option<PyReadonlyArray1<'py, i32>>,
        k: i64,
        exclude_history: bool,
        explain: i64,
        num_threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let n_users = count("n_users", n_users)?;
        let hist = PyCsr {
            indptr,
            indices,
            data,
        };
        let hist = hist.view("history", n_users, self.model.n_sources())?;
        let mut ones = Vec::new();
        let ex = exclude_view(
            opt_slice("exclude.indptr", &exclude_indptr)?,
            opt_slice("exclude.indices", &exclude_indices)?,
            &mut ones,
            n_users,
            self.model.n_items(),
        )?;
        let allow = opt_slice("allow", &allow)?;
        let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
        let (k, explain, nt) = (
            count("k", k)?,
            count("explain", explain)?,
            threads(num_threads)?,
        );
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend_batch(hist, k, ex, &shared, exclude_history, explain, nt)
        })?;
        batch_to_py(py, r, explain > 0)
    }
}

#[pyclass(module = "recsys_core._native", frozen)]
struct DenseScorer {
    model: DenseModel,
}

#[pymethods]
impl DenseScorer {
    #[new]
    fn new(py: Python<'_>, factors: PyReadonlyArray2<'_, f32>) -> PyResult<Self> {
        let (n, d) = (factors.shape()[0], factors.shape()[1]);
        let s = factors
            .as_slice()
            .map_err(|_| InvalidArgumentError::new_err("item_factors must be C-contiguous"))?;
        let model = py.detach(|| DenseModel::new(s.to_vec(), n, d))?;
        Ok(DenseScorer { model })
    }

    #[getter]
    fn n_items(&self) -> usize {
        self.model.n_items()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.model.dim()
    }

    #[getter]
    fn half_precision(&self) -> bool {
        self.model.is_half()
    }

    #[pyo3(signature = (user_vector, k, exclude, allow, deny, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        user_vector: PyReadonlyArray1<'py, f32>,
        k: i64,
        exclude: Option<PyReadonlyArray1<'py, i32>>,
        allow: Option<PyReadonlyArray1<'py, i32>>,
        deny: Option<PyReadonlyArray1<'py, i32>>,
        num_threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let u = slice("user_vector", &user_vector)?;
        let exclude = opt_slice("exclude", &exclude)?.unwrap_or(&[]);
        let allow = opt_slice("allow", &allow)?;
        let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
        let (k, nt) = (count("k", k)?, threads(num_threads)?);
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend(u, k, exclude, &shared, nt)
        })?;
        recs_to_py(py, r, false)
    }

    #[pyo3(signature = (user_vectors, k, exclude_indptr, exclude_indices, allow, deny, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend_batch<'py>(
        &self,
        py: Python<'py>,
        user_vectors: PyReadonlyArray2<'py, f32>,
        k: i64,
        exclude_indptr: Option<PyReadonlyArray1<'py, i64>>,
        exclude_indices: Option<PyReadonlyArray1<'py, i32>>,
        allow: Option<PyReadonlyArray1<'py, i32>>,
        deny: Option<PyReadonlyArray1<'py, i32>>,
        num_threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let n_users = user_vectors.shape()[0];
        let u = user_rows(&user_vectors, self.model.dim())?;
        let mut ones = Vec::new();
        let ex = exclude_view(
            opt_slice("exclude.indptr", &exclude_indptr)?,
            opt_slice("exclude.indices", &exclude_indices)?,
            &mut ones,
            n_users,
            self.model.n_items(),
        )?;
        let allow = opt_slice("allow", &allow)?;
        let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
        let (k, nt) = (count("k", k)?, threads(num_threads)?);
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend_batch(u, n_users, k, ex, &shared, nt)
        })?;
        batch_to_py(py, r, false)
    }
}

/// Fold-in: one history's factor row against fixed `y`, the user half-step's normal
/// equations solved by CG from 0 (`als::solve_one`); `yty` is `YᵀY` without reg.
#[pyfunction]
#[pyo3(signature = (indices, data, y, yty, alpha, reg, reg_exponent=0.0, max_steps=50))]
#[allow(clippy::too_many_arguments)]
fn als_solve_row<'py>(
    py: Python<'py>,
    indices: PyReadonlyArray1<'_, i32>,
    data: PyReadonlyArray1<'_, f32>,
    y: PyReadonlyArray2<'_, f32>,
    yty: PyReadonlyArray2<'_, f32>,
    alpha: f32,
    reg: f32,
    reg_exponent: f32,
    max_steps: i64,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let f = y.shape()[1];
    if yty.shape() != [f, f] {
        return Err(InvalidArgumentError::new_err(format!(
            "yty must have shape ({f}, {f}), got {:?}",
            yty.shape()
        )));
    }
    let (cols, vals) = (slice("indices", &indices)?, slice("data", &data)?);
    let ys = y
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("y must be C-contiguous"))?;
    let gs = yty
        .as_slice()
        .map_err(|_| InvalidArgumentError::new_err("yty must be C-contiguous"))?;
    let params = AlsParams {
        alpha,
        reg,
        reg_exponent,
        cg_steps: count("max_steps", max_steps)?,
    };
    let x = py.detach(|| als::solve_one(cols, vals, ys, gs, f, &params))?;
    Ok(PyArray1::from_vec(py, x))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("InvalidMatrixError", py.get_type::<InvalidMatrixError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add_function(wrap_pyfunction!(similarity_topk, m)?)?;
    m.add_function(wrap_pyfunction!(stream_read, m)?)?;
    m.add_function(wrap_pyfunction!(als_half_step, m)?)?;
    m.add_function(wrap_pyfunction!(select_topk, m)?)?;
    m.add_function(wrap_pyfunction!(top_magnitude_rows, m)?)?;
    m.add_function(wrap_pyfunction!(blend_topk, m)?)?;
    m.add_class::<SparseScorer>()?;
    m.add_class::<DenseScorer>()?;
    m.add_function(wrap_pyfunction!(als_solve_row, m)?)?;
    m.add_function(wrap_pyfunction!(als_gram, m)?)?;
    compressed::register(m)?;
    Ok(())
}
