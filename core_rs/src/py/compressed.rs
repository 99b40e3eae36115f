//! `CompressedScorer`: PQ4 fast-scan codes with exact rerank (`kernels::compressed`). The f32
//! factors stay in the numpy array the caller passed (one reference held here), so the scorer
//! adds only its codes to memory.

use super::InvalidArgumentError;
use super::{batch_to_py, count, exclude_view, opt_slice, recs_to_py, slice, threads, user_rows};
use crate::kernels::compressed::{self, CompressedModel, Query};
use crate::kernels::filters::SharedFilters;
use numpy::{PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

#[pyclass(module = "recsys_core._native", frozen)]
pub struct CompressedScorer {
    model: CompressedModel,
    factors: Py<PyArray2<f32>>,
}

fn factor_view<'a>(f: &'a PyReadonlyArray2<'_, f32>) -> PyResult<&'a [f32]> {
    f.as_slice()
        .map_err(|_| InvalidArgumentError::new_err("item_factors must be C-contiguous"))
}

fn readonly<'py>(f: &Bound<'py, PyArray2<f32>>) -> PyResult<PyReadonlyArray2<'py, f32>> {
    f.try_readonly()
        .map_err(|_| InvalidArgumentError::new_err("item_factors is being written to"))
}

impl CompressedScorer {
    fn query<'a>(
        k: i64,
        rerank: Option<i64>,
        deny_mask: Option<&'a [u8]>,
        num_threads: Option<i64>,
    ) -> PyResult<Query<'a>> {
        Ok(Query {
            k: count("k", k)?,
            rerank: match rerank {
                Some(r) => count("rerank", r)?,
                None => compressed::DEFAULT_RERANK,
            },
            deny_mask,
            num_threads: threads(num_threads)?,
        })
    }
}

#[pymethods]
impl CompressedScorer {
    #[staticmethod]
    #[pyo3(signature = (item_factors, seed, ivf_lists=None, num_threads=None))]
    fn build(
        py: Python<'_>,
        item_factors: Bound<'_, PyArray2<f32>>,
        seed: u64,
        ivf_lists: Option<i64>,
        num_threads: Option<i64>,
    ) -> PyResult<Self> {
        let (n, d) = (item_factors.shape()[0], item_factors.shape()[1]);
        let ro = readonly(&item_factors)?;
        let f = factor_view(&ro)?;
        let lists = ivf_lists.map(|l| count("ivf_lists", l)).transpose()?;
        let nt = threads(num_threads)?;
        let model = py.detach(|| CompressedModel::build(f, n, d, seed, lists, nt))?;
        drop(ro);
        Ok(CompressedScorer {
            model,
            factors: item_factors.unbind(),
        })
    }

    #[staticmethod]
    fn from_bytes(
        py: Python<'_>,
        blob: &[u8],
        item_factors: Bound<'_, PyArray2<f32>>,
    ) -> PyResult<Self> {
        let (n, d) = (item_factors.shape()[0], item_factors.shape()[1]);
        let ro = readonly(&item_factors)?;
        let f = factor_view(&ro)?;
        let model = py.detach(|| CompressedModel::from_bytes(blob, f, n, d))?;
        drop(ro);
        Ok(CompressedScorer {
            model,
            factors: item_factors.unbind(),
        })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.model.to_bytes());
        PyBytes::new(py, &b)
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
    fn ivf_lists(&self) -> usize {
        self.model.ivf_lists()
    }

    #[getter]
    fn index_bytes(&self) -> usize {
        self.model.index_bytes()
    }

    #[getter]
    fn item_factors<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        self.factors.bind(py).clone()
    }

    #[pyo3(signature = (user_vector, k, exclude, allow, deny, deny_mask, rerank, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        user_vector: PyReadonlyArray1<'py, f32>,
        k: i64,
        exclude: Option<PyReadonlyArray1<'py, i32>>,
        allow: Option<PyReadonlyArray1<'py, i32>>,
        deny: Option<PyReadonlyArray1<'py, i32>>,
        deny_mask: Option<PyReadonlyArray1<'py, u8>>,
        rerank: Option<i64>,
        num_threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let u = slice("user_vector", &user_vector)?;
        let exclude = opt_slice("exclude", &exclude)?.unwrap_or(&[]);
        let allow = opt_slice("allow", &allow)?;
        let deny = opt_slice("deny", &deny)?.unwrap_or(&[]);
        let mask = opt_slice("deny_mask", &deny_mask)?;
        let q = Self::query(k, rerank, mask, num_threads)?;
        let ro = readonly(self.factors.bind(py))?;
        let f = factor_view(&ro)?;
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend(f, u, exclude, &shared, &q)
        })?;
        recs_to_py(py, r, false)
    }

    #[pyo3(signature = (user_vectors, k, exclude_indptr, exclude_indices, allow, deny, deny_mask, rerank, num_threads=None))]
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
        deny_mask: Option<PyReadonlyArray1<'py, u8>>,
        rerank: Option<i64>,
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
        let mask = opt_slice("deny_mask", &deny_mask)?;
        let q = Self::query(k, rerank, mask, num_threads)?;
        let ro = readonly(self.factors.bind(py))?;
        let f = factor_view(&ro)?;
        let model = &self.model;
        let r = py.detach(|| {
            let shared = SharedFilters::new(model.n_items(), deny, allow)?;
            model.recommend_batch(f, u, n_users, ex, &shared, &q)
        })?;
        batch_to_py(py, r, false)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CompressedScorer>()?;
    m.add("IVF_MIN_ITEMS", compressed::IVF_MIN_ITEMS)?;
    m.add("COMPRESSED_DEFAULT_RERANK", compressed::DEFAULT_RERANK)?;
    Ok(())
}
