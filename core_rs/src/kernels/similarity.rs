//! Row-row similarity of a sparse matrix with each row's top-k neighbours kept.
//!
//! Row `i` is compared with every row sharing a column with it by walking the transpose
//! (Gustavson's row-by-row sparse product) into a per-thread accumulator, so the cost is the
//! number of co-occurrences, and only `k` entries per row are ever stored.

use super::accum::Accumulator;
use super::csr::{Csr, CsrRef};
use super::pool;
use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};
use rayon::prelude::*;

/// A row whose co-occurrence count reaches n / DENSE_ROW_FRACTION is accumulated densely:
/// tracking touched entries costs a mispredicted branch each, a linear scan far less.
const DENSE_ROW_FRACTION: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weighting {
    None,
    /// `w * ln(N / df)`.
    TfIdf,
    /// Okapi BM25: `w (k1 + 1) / (k1 ((1 - b) + b len / avg_len) + w) * (ln N - ln(1 + df))`.
    Bm25 {
        k1: f32,
        b: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Measure {
    /// `dot / (|a| |b| + shrink)`.
    Cosine {
        shrink: f32,
    },
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimilarityParams {
    pub k: usize,
    pub weighting: Weighting,
    pub measure: Measure,
    pub include_self: bool,
    /// Popularity exponent on the neighbour side: the score of candidate row `j` is
    /// multiplied by `n_j^-pop_beta`, `n_j` being row `j`'s non-zero entries in the input
    /// (before weighting: an item's users), and each row's top k are chosen after that.
    /// 0 leaves every score as it was, bit for bit; > 0 lowers popular candidates, < 0
    /// raises them.
    pub pop_beta: f32,
}

impl SimilarityParams {
    fn validate(&self) -> Result<()> {
        if let Measure::Cosine { shrink } = self.measure {
            if !shrink.is_finite() || shrink < 0.0 {
                return Err(CoreError::arg(format!(
                    "shrink must be finite and >= 0, got {shrink}"
                )));
            }
        }
        if !self.pop_beta.is_finite() {
            return Err(CoreError::arg(format!(
                "pop_beta must be finite, got {}",
                self.pop_beta
            )));
        }
        if let Weighting::Bm25 { k1, b } = self.weighting {
            if !k1.is_finite() || k1 < 0.0 {
                return Err(CoreError::arg(format!(
                    "bm25_k1 must be finite and >= 0, got {k1}"
                )));
            }
            if !(0.0..=1.0).contains(&b) {
                return Err(CoreError::arg(format!("bm25_b must be in [0, 1], got {b}")));
            }
        }
        Ok(())
    }
}

/// Similarity between the rows of `x`.
pub fn similarity_topk(
    x: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
) -> Result<Csr> {
    similarity_topk_rows(x, params, num_threads, None)
}

/// `similarity_topk` for the rows `lo..hi` only (`None`: every row): a (hi - lo) x n matrix
/// whose rows are exactly those rows of the full result. Each row's neighbours depend only on
/// the whole matrix, never on which other rows are computed, so row blocks computed apart
/// (e.g. on a cluster) concatenate to the full result bit for bit.
pub fn similarity_topk_rows(
    x: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
    rows: Option<(usize, usize)>,
) -> Result<Csr> {
    params.validate()?;
    pool::resolve_threads(num_threads)?;
    let (lo, hi) = check_rows(rows, x.n_rows())?;
    prepare_and_compute(
        x.to_owned_canonical(),
        params,
        num_threads,
        Rows::Range(lo, hi),
    )
}

/// `similarity_topk` for the rows where `only` is true (`only.len()` = the number of rows): an
/// n x n matrix whose selected rows are exactly those of the full result and whose other rows
/// are empty. For a caller that reads the neighbours of a few rows (the trainer's tuning
/// trials score a sample of users) at the cost of those rows.
pub fn similarity_topk_only(
    x: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
    only: &[bool],
) -> Result<Csr> {
    params.validate()?;
    pool::resolve_threads(num_threads)?;
    if only.len() != x.n_rows() {
        return Err(CoreError::arg(format!(
            "only selects among {} rows, the matrix has {}",
            only.len(),
            x.n_rows()
        )));
    }
    prepare_and_compute(
        x.to_owned_canonical(),
        params,
        num_threads,
        Rows::Only(only),
    )
}

/// Similarity between the columns of `xt` (the rows of its transpose), without the caller
/// having to transpose: item-item similarity straight from a users x items matrix.
pub fn similarity_topk_of_columns(
    xt: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
) -> Result<Csr> {
    similarity_topk_of_columns_rows(xt, params, num_threads, None)
}

/// `similarity_topk_of_columns` for the columns `lo..hi` only (see `similarity_topk_rows`).
pub fn similarity_topk_of_columns_rows(
    xt: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
    rows: Option<(usize, usize)>,
) -> Result<Csr> {
    params.validate()?;
    pool::resolve_threads(num_threads)?;
    let (lo, hi) = check_rows(rows, xt.n_cols())?;
    let x = xt.to_owned_canonical().transpose();
    prepare_and_compute(x, params, num_threads, Rows::Range(lo, hi))
}

/// The popularity factors of `x`'s rows (from its entry counts, before weighting), then the
/// weighting, then `compute`: what every entry point runs on its canonical matrix.
fn prepare_and_compute(
    x: Csr,
    params: &SimilarityParams,
    num_threads: Option<usize>,
    sel: Rows<'_>,
) -> Result<Csr> {
    let scale = pop_scale(&x, params.pop_beta);
    let x = weighted(x, params.weighting);
    compute(&x, params, scale.as_deref(), num_threads, sel)
}

fn check_rows(rows: Option<(usize, usize)>, n: usize) -> Result<(usize, usize)> {
    let (lo, hi) = rows.unwrap_or((0, n));
    if lo > hi || hi > n {
        return Err(CoreError::arg(format!(
            "rows {lo}..{hi} out of range for {n} rows"
        )));
    }
    Ok((lo, hi))
}

/// Each row's factor `n^-beta` (`n`: its non-zero entries; 1 for an empty row, which is
/// nobody's candidate), or None for beta 0 (no factor at all, so scores stay bit for bit).
fn pop_scale(x: &Csr, beta: f32) -> Option<Vec<f32>> {
    if beta == 0.0 {
        return None;
    }
    Some(
        (0..x.n_rows)
            .map(|r| {
                let n = x.row(r).1.iter().filter(|&&v| v != 0.0).count().max(1);
                (n as f64).powf(-(beta as f64)) as f32
            })
            .collect(),
    )
}

fn weighted(mut x: Csr, weighting: Weighting) -> Csr {
    if weighting == Weighting::None || x.n_rows == 0 {
        return x;
    }
    let n = x.n_rows as f64;
    let mut df = vec![0u32; x.n_cols];
    for (&c, &v) in x.indices.iter().zip(&x.data) {
        if v != 0.0 {
            df[c as usize] += 1;
        }
    }
    match weighting {
        Weighting::None => {}
        Weighting::TfIdf => {
            let idf: Vec<f64> = df
                .iter()
                .map(|&d| if d > 0 { (n / d as f64).ln() } else { 0.0 })
                .collect();
            for (c, v) in x.indices.iter().zip(x.data.iter_mut()) {
                *v = (*v as f64 * idf[*c as usize]) as f32;
            }
        }
        Weighting::Bm25 { k1, b } => {
            let (k1, b) = (k1 as f64, b as f64);
            let idf: Vec<f64> = df.iter().map(|&d| n.ln() - (1.0 + d as f64).ln()).collect();
            let lens: Vec<f64> = (0..x.n_rows)
                .map(|r| x.row(r).1.iter().map(|&v| v as f64).sum())
                .collect();
            let avg = lens.iter().sum::<f64>() / n;
            for (r, len) in lens.iter().enumerate() {
                let norm = if avg != 0.0 {
                    (1.0 - b) + b * len / avg
                } else {
                    1.0
                };
                let (a, z) = (x.indptr[r] as usize, x.indptr[r + 1] as usize);
                for t in a..z {
                    let w = x.data[t] as f64;
                    let denom = k1 * norm + w;
                    let tf = if denom != 0.0 {
                        w * (k1 + 1.0) / denom
                    } else {
                        0.0
                    };
                    x.data[t] = (tf * idf[x.indices[t] as usize]) as f32;
                }
            }
        }
    }
    x
}

/// The transpose with each (index, value) pair stored together: walking a row costs one
/// cache miss at its start instead of two, and the next rows are prefetched.
struct Packed {
    ptr: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl Packed {
    fn new(m: &Csr) -> Self {
        Packed {
            ptr: m.indptr.iter().map(|&p| p as usize).collect(),
            entries: m
                .indices
                .iter()
                .map(|&j| j as u32)
                .zip(m.data.iter().copied())
                .collect(),
        }
    }

    #[inline(always)]
    fn row(&self, r: usize) -> &[(u32, f32)] {
        &self.entries[self.ptr[r]..self.ptr[r + 1]]
    }

    /// Hints the cache to fetch what `accumulate` will read `ahead` rows from now.
    #[inline(always)]
    fn prefetch(&self, cols: &[i32], t: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            if let Some(&c) = cols.get(t + PREFETCH_PTR) {
                // SAFETY: prefetch is a hint that never faults; the address is in bounds anyway.
                unsafe {
                    _mm_prefetch(self.ptr.as_ptr().add(c as usize) as *const i8, _MM_HINT_T0)
                };
            }
            if let Some(&c) = cols.get(t + PREFETCH_ROW) {
                let start = self.ptr[c as usize];
                // SAFETY: as above; `start` <= entries.len().
                unsafe { _mm_prefetch(self.entries.as_ptr().add(start) as *const i8, _MM_HINT_T0) };
            }
        }
        let _ = (cols, t);
    }
}

const BLOCK: usize = 16;

/// Largest value of a block, written so that it compiles to vector max instructions.
#[inline(always)]
fn block_max(block: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = block.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let mut m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for &v in rest {
        m = if v > m { v } else { m };
    }
    m
}

/// Per block of BLOCK rows, the smallest non-zero norm (rows with norm 0 have no dot products).
fn block_min_norms(norms: &[f32]) -> Vec<f32> {
    norms
        .chunks(BLOCK)
        .map(|b| {
            b.iter()
                .copied()
                .filter(|&v| v > 0.0)
                .fold(f32::INFINITY, f32::min)
        })
        .collect()
}

thread_local! {
    /// Kept all zero between rows (each mode cleans up what it wrote).
    static SIM_ACC: std::cell::RefCell<Accumulator> = std::cell::RefCell::new(Accumulator::default());
}

const PREFETCH_PTR: usize = 8;
const PREFETCH_ROW: usize = 3;

/// Which rows' neighbours `compute` returns.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Rows `lo..hi`, as a (hi - lo) x n matrix.
    Range(usize, usize),
    /// The rows marked true, in an n x n matrix (the others empty).
    Only(&'a [bool]),
}

impl Rows<'_> {
    fn wants(&self, r: usize) -> bool {
        match *self {
            Rows::Range(lo, hi) => (lo..hi).contains(&r),
            Rows::Only(m) => m[r],
        }
    }

    /// Rows of the result, for an input of `n` rows.
    fn out_rows(&self, n: usize) -> usize {
        match *self {
            Rows::Range(lo, hi) => hi - lo,
            Rows::Only(_) => n,
        }
    }

    /// Index of input row `r` among the result's rows.
    fn out_index(&self, r: usize) -> usize {
        match *self {
            Rows::Range(lo, _) => r - lo,
            Rows::Only(_) => r,
        }
    }

    fn none(&self) -> bool {
        match *self {
            Rows::Range(lo, hi) => lo == hi,
            Rows::Only(m) => !m.contains(&true),
        }
    }
}

fn compute(
    x: &Csr,
    params: &SimilarityParams,
    scale: Option<&[f32]>,
    num_threads: Option<usize>,
    sel: Rows<'_>,
) -> Result<Csr> {
    let n = x.n_rows;
    if params.k == 0 || n == 0 || sel.none() {
        return Ok(Csr::empty(sel.out_rows(n), n));
    }
    let norms: Vec<f32> = (0..n)
        .map(|r| {
            x.row(r)
                .1
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect();
    // Work in an index space ordered by norm (largest first): the heavy rows' accumulator
    // entries sit together (cache locality), and each block of the scan holds rows of similar
    // norm, so its bound is tight. Entries carry the original index, so ranking and ties are
    // those of the original order.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| {
        norms[b as usize]
            .total_cmp(&norms[a as usize])
            .then(a.cmp(&b))
    });
    let xp = permute_rows(x, &order);
    let norms_p: Vec<f32> = order.iter().map(|&o| norms[o as usize]).collect();
    let k = params.k.min(n);
    let xpt = &Packed::new(&xp.transpose());
    let block_min_norm = &block_min_norms(&norms_p);
    // the popularity factors in the permuted order, and each block's smallest and largest
    let scale_p: Option<Vec<f32>> = scale.map(|s| order.iter().map(|&o| s[o as usize]).collect());
    let block_scale: Option<Vec<(f32, f32)>> = scale_p.as_ref().map(|s| {
        s.chunks(BLOCK)
            .map(|b| {
                b.iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    })
            })
            .collect()
    });
    let view = RowSpace {
        x: &xp,
        xt: xpt,
        norms: &norms_p,
        block_min_norm,
        scale: scale_p.as_deref(),
        block_scale: block_scale.as_deref(),
        orig: &order,
    };
    // the wanted rows in the permuted order (all of them for the full range)
    let wanted: Vec<usize> = (0..n).filter(|&i| sel.wants(order[i] as usize)).collect();
    let rows_p = pool::install(num_threads, || {
        wanted
            .par_iter()
            .map(|&i| SIM_ACC.with_borrow_mut(|s| row_topk_dispatch(i, &view, k, params, s)))
            .collect::<Vec<_>>()
    })?;
    let mut rows = vec![Vec::new(); sel.out_rows(n)];
    for (&i, row) in wanted.iter().zip(rows_p) {
        rows[sel.out_index(order[i] as usize)] = row;
    }
    Ok(Csr::from_rows(n, rows))
}

/// The permuted matrix and what the row kernel needs alongside it.
struct RowSpace<'a> {
    x: &'a Csr,
    xt: &'a Packed,
    norms: &'a [f32],
    block_min_norm: &'a [f32],
    /// Each permuted row's popularity factor as a candidate (None: pop_beta 0).
    scale: Option<&'a [f32]>,
    /// Per block of BLOCK rows, the smallest and largest of those factors.
    block_scale: Option<&'a [(f32, f32)]>,
    /// Original index of each permuted row.
    orig: &'a [u32],
}

fn permute_rows(x: &Csr, order: &[u32]) -> Csr {
    let mut indptr = Vec::with_capacity(x.n_rows + 1);
    let mut indices = Vec::with_capacity(x.nnz());
    let mut data = Vec::with_capacity(x.nnz());
    indptr.push(0);
    for &o in order {
        let (ix, vx) = x.row(o as usize);
        indices.extend_from_slice(ix);
        data.extend_from_slice(vx);
        indptr.push(indices.len() as i64);
    }
    Csr {
        n_rows: x.n_rows,
        n_cols: x.n_cols,
        indptr,
        indices,
        data,
    }
}

/// Runs `row_topk` compiled for AVX2 when the CPU has it (the scan's max and division
/// vectorise 8 wide), else the baseline build.
#[allow(clippy::too_many_arguments)]
fn row_topk_dispatch(
    i: usize,
    v: &RowSpace<'_>,
    k: usize,
    params: &SimilarityParams,
    s: &mut Accumulator,
) -> Vec<(u32, f32)> {
    #[cfg(target_arch = "x86_64")]
    if super::dense::has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2(
            i: usize,
            v: &RowSpace<'_>,
            k: usize,
            params: &SimilarityParams,
            s: &mut Accumulator,
        ) -> Vec<(u32, f32)> {
            row_topk(i, v, k, params, s)
        }
        // SAFETY: AVX2 support was detected at run time.
        return unsafe { avx2(i, v, k, params, s) };
    }
    row_topk(i, v, k, params, s)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_topk(
    i: usize,
    v: &RowSpace<'_>,
    k: usize,
    params: &SimilarityParams,
    s: &mut Accumulator,
) -> Vec<(u32, f32)> {
    let RowSpace {
        x,
        xt,
        norms,
        block_min_norm,
        scale,
        block_scale,
        orig,
    } = *v;
    let n = x.n_rows;
    let (cols, vals) = x.row(i);
    let work: usize = cols.iter().map(|&c| xt.row(c as usize).len()).sum();
    let mut top = TopK::new(k);
    let offer = |top: &mut TopK, j: u32, d: f32| {
        if d == 0.0 || (j as usize == i && !params.include_self) {
            return;
        }
        let score = match params.measure {
            Measure::Dot => d,
            Measure::Cosine { shrink } => d / (norms[i] * norms[j as usize] + shrink),
        };
        let score = match scale {
            Some(s) => score * s[j as usize],
            None => score,
        };
        let e = Entry::new(orig[j as usize], score);
        if top.accepts(&e) {
            top.push(e);
        }
    };
    if work >= n / DENSE_ROW_FRACTION {
        // Dense mode: branch-free accumulation into an all-zero accumulator, then a scan that
        // bounds each block of 16 by its largest dot product and smallest norm and computes
        // exact scores only in blocks that can beat the current k-th score. The scan zeroes
        // what it read, so the accumulator is all zero again for the next row.
        s.begin(n);
        let acc = &mut s.acc[..n];
        for (t, (&c, &w)) in cols.iter().zip(vals).enumerate() {
            xt.prefetch(cols, t);
            for &(j, v) in xt.row(c as usize) {
                // SAFETY: `xt` is the transpose of `x`, so its indices are rows of `x` (< n).
                unsafe { *acc.get_unchecked_mut(j as usize) += w * v };
            }
        }
        if !params.include_self {
            acc[i] = 0.0;
        }
        let mut bar = f32::NEG_INFINITY;
        for (b, block) in acc.chunks_mut(BLOCK).enumerate() {
            let max_dot = block_max(block);
            let bound = match params.measure {
                Measure::Dot => max_dot,
                Measure::Cosine { shrink } if max_dot > 0.0 => {
                    max_dot / (norms[i] * block_min_norm[b] + shrink).max(f32::MIN_POSITIVE)
                }
                Measure::Cosine { .. } => 0.0,
            };
            // a positive bound times the block's largest factor, a negative one its smallest
            let bound = match block_scale {
                Some(bs) if bound > 0.0 => bound * bs[b].1,
                Some(bs) => bound * bs[b].0,
                None => bound,
            };
            if bound >= bar {
                for (o, d) in block.iter().enumerate() {
                    offer(&mut top, (b * BLOCK + o) as u32, *d);
                }
                bar = top.worst().map_or(f32::NEG_INFINITY, |w| w.score);
            }
            block.fill(0.0);
        }
    } else {
        s.begin(n);
        for (t, (&c, &w)) in cols.iter().zip(vals).enumerate() {
            xt.prefetch(cols, t);
            // SAFETY: `xt` is the transpose of `x`, so its indices are rows of `x` (< n).
            unsafe { s.scatter_pairs(xt.row(c as usize), w) };
        }
        for &j in &s.touched {
            offer(&mut top, j, s.acc[j as usize]);
            s.acc[j as usize] = 0.0;
        }
    }
    let mut row: Vec<(u32, f32)> = top
        .into_sorted()
        .into_iter()
        .map(|e| (e.idx, e.score))
        .collect();
    row.sort_unstable_by_key(|p| p.0);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense_sim(rows: &[Vec<f32>], cosine: bool, shrink: f32) -> Vec<Vec<f32>> {
        let norm = |r: &Vec<f32>| r.iter().map(|v| v * v).sum::<f32>().sqrt();
        rows.iter()
            .map(|a| {
                rows.iter()
                    .map(|b| {
                        let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                        if cosine {
                            d / (norm(a) * norm(b) + shrink)
                        } else {
                            d
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn to_csr(rows: &[Vec<f32>]) -> Csr {
        let mut built: Vec<Vec<(u32, f32)>> = Vec::new();
        for r in rows {
            built.push(
                r.iter()
                    .enumerate()
                    .filter(|p| *p.1 != 0.0)
                    .map(|(c, &v)| (c as u32, v))
                    .collect(),
            );
        }
        Csr::from_rows(rows[0].len(), built)
    }

    fn params(k: usize, measure: Measure) -> SimilarityParams {
        SimilarityParams {
            k,
            weighting: Weighting::None,
            measure,
            include_self: false,
            pop_beta: 0.0,
        }
    }

    #[test]
    fn cosine_with_shrink_matches_dense() {
        let rows = vec![
            vec![1.0, 0.0, 2.0, 0.0],
            vec![0.0, 1.0, 1.0, 0.0],
            vec![3.0, 0.0, 0.0, 1.0],
            vec![0.0, 0.0, 0.0, 0.0],
            vec![1.0, 1.0, 1.0, 1.0],
        ];
        let x = to_csr(&rows);
        let got = similarity_topk(
            x.view(),
            &params(10, Measure::Cosine { shrink: 0.5 }),
            Some(2),
        )
        .unwrap();
        let want = dense_sim(&rows, true, 0.5);
        for (i, want_i) in want.iter().enumerate() {
            let (ix, vx) = got.row(i);
            let expect: Vec<usize> = (0..rows.len())
                .filter(|&j| j != i && want_i[j] != 0.0)
                .collect();
            assert_eq!(
                ix.iter().map(|&j| j as usize).collect::<Vec<_>>(),
                expect,
                "row {i}"
            );
            for (&j, &v) in ix.iter().zip(vx) {
                assert!((v - want_i[j as usize]).abs() < 1e-6);
            }
        }
        assert_eq!(got.row(3).0.len(), 0);
    }

    #[test]
    fn keeps_top_k_with_index_ties() {
        // Row 0 co-occurs equally with rows 1, 2, 3 (dot 1 each) and more with 4.
        let rows = vec![
            vec![1.0, 1.0, 1.0, 1.0],
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 1.0, 1.0],
        ];
        let got = similarity_topk(to_csr(&rows).view(), &params(2, Measure::Dot), None).unwrap();
        assert_eq!(got.row(0).0, &[1, 4]);
        assert_eq!(got.row(0).1, &[1.0, 3.0]);
        let with_self = SimilarityParams {
            include_self: true,
            ..params(1, Measure::Dot)
        };
        let got = similarity_topk(to_csr(&rows).view(), &with_self, None).unwrap();
        assert_eq!(got.row(0).0, &[0]);
    }

    #[test]
    fn pop_beta_scales_candidates_before_the_top_k() {
        // Row 0 shares one user with row 1 (2 users), two with row 2 (5 users).
        let rows = vec![
            vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ];
        let x = to_csr(&rows);
        let plain = similarity_topk(x.view(), &params(1, Measure::Dot), None).unwrap();
        assert_eq!(plain.row(0), (&[2][..], &[2.0f32][..]));
        let zero = SimilarityParams {
            pop_beta: 0.0,
            ..params(1, Measure::Dot)
        };
        assert_eq!(similarity_topk(x.view(), &zero, None).unwrap(), plain);
        // beta 1: 1 / 2 for row 1 beats 2 / 5 for row 2, so row 1 is the one neighbour kept
        let p = SimilarityParams {
            pop_beta: 1.0,
            ..params(1, Measure::Dot)
        };
        let got = similarity_topk(x.view(), &p, None).unwrap();
        assert_eq!(got.row(0), (&[1][..], &[0.5f32][..]));
        let all = similarity_topk(x.view(), &SimilarityParams { k: 3, ..p }, None).unwrap();
        assert_eq!(all.row(0), (&[1, 2][..], &[0.5f32, 0.4][..]));
        // beta -1 raises the popular row; cosine is scaled the same way
        let c = SimilarityParams {
            pop_beta: -1.0,
            ..params(3, Measure::Cosine { shrink: 0.0 })
        };
        let got = similarity_topk(x.view(), &c, None).unwrap();
        let cos = |d: f32, a: f32, b: f32| d / (a.sqrt() * b.sqrt());
        assert_eq!(got.row(0).0, &[1, 2]);
        assert!((got.row(0).1[0] - cos(1.0, 3.0, 2.0) * 2.0).abs() < 1e-6);
        assert!((got.row(0).1[1] - cos(2.0, 3.0, 5.0) * 5.0).abs() < 1e-6);
        let bad = SimilarityParams {
            pop_beta: f32::NAN,
            ..params(1, Measure::Dot)
        };
        assert!(similarity_topk(x.view(), &bad, None).is_err());
    }

    #[test]
    fn columns_variant_equals_transposed_rows() {
        let rows = vec![
            vec![1.0, 0.0, 2.0],
            vec![0.0, 1.0, 1.0],
            vec![3.0, 1.0, 0.0],
            vec![1.0, 1.0, 1.0],
        ];
        let x = to_csr(&rows);
        for w in [
            Weighting::None,
            Weighting::TfIdf,
            Weighting::Bm25 { k1: 1.2, b: 0.75 },
        ] {
            let p = SimilarityParams {
                weighting: w,
                ..params(5, Measure::Cosine { shrink: 0.0 })
            };
            let a = similarity_topk(x.transpose().view(), &p, None).unwrap();
            let b = similarity_topk_of_columns(x.view(), &p, Some(1)).unwrap();
            assert_eq!(a, b);
        }
    }

    /// 23 rows over 7 columns with repeated patterns (ties among neighbours).
    fn patterned_23x7() -> Csr {
        let rows: Vec<Vec<f32>> = (0..23)
            .map(|r| (0..7).map(|c| ((r * 5 + c * 3) % 4) as f32).collect())
            .collect();
        to_csr(&rows)
    }

    #[test]
    fn row_blocks_concatenate_to_the_full_result() {
        let x = patterned_23x7();
        // the popularity factors come from the whole matrix, whichever rows are computed
        for pop_beta in [0.0, 0.7] {
            let p = SimilarityParams {
                weighting: Weighting::Bm25 { k1: 1.2, b: 0.75 },
                pop_beta,
                ..params(4, Measure::Cosine { shrink: 1.0 })
            };
            let full = similarity_topk(x.view(), &p, Some(2)).unwrap();
            let cols = similarity_topk_of_columns(x.transpose().view(), &p, None).unwrap();
            for (lo, hi) in [(0, 5), (5, 5), (5, 17), (17, 23)] {
                for got in [
                    similarity_topk_rows(x.view(), &p, Some(1), Some((lo, hi))).unwrap(),
                    similarity_topk_of_columns_rows(x.transpose().view(), &p, None, Some((lo, hi)))
                        .unwrap(),
                ] {
                    assert_eq!((got.n_rows, got.n_cols), (hi - lo, 23));
                    for r in lo..hi {
                        assert_eq!(got.row(r - lo), full.row(r), "row {r}");
                        assert_eq!(got.row(r - lo), cols.row(r), "row {r}");
                    }
                }
            }
        }
        let p = SimilarityParams {
            weighting: Weighting::Bm25 { k1: 1.2, b: 0.75 },
            ..params(4, Measure::Cosine { shrink: 1.0 })
        };
        assert!(similarity_topk_rows(x.view(), &p, None, Some((3, 24))).is_err());
        assert!(similarity_topk_rows(x.view(), &p, None, Some((4, 3))).is_err());
    }

    #[test]
    fn selected_rows_equal_the_full_result() {
        let x = patterned_23x7();
        // the popularity factors come from the whole matrix, whichever rows are computed
        for pop_beta in [0.0, 0.7] {
            let p = SimilarityParams {
                weighting: Weighting::Bm25 { k1: 1.2, b: 0.75 },
                pop_beta,
                ..params(4, Measure::Cosine { shrink: 1.0 })
            };
            let full = similarity_topk(x.view(), &p, Some(2)).unwrap();
            for pick in [vec![0usize, 3, 22], vec![], (0..23).collect()] {
                let mut only = vec![false; 23];
                pick.iter().for_each(|&r| only[r] = true);
                let got = similarity_topk_only(x.view(), &p, Some(2), &only).unwrap();
                assert_eq!((got.n_rows, got.n_cols), (23, 23));
                for (r, &picked) in only.iter().enumerate() {
                    if picked {
                        assert_eq!(got.row(r), full.row(r), "beta {pop_beta} row {r}");
                    } else {
                        assert_eq!(got.row(r).0.len(), 0, "row {r}");
                    }
                }
            }
        }
        let p = params(4, Measure::Cosine { shrink: 1.0 });
        assert!(similarity_topk_only(x.view(), &p, None, &[true; 22]).is_err());
    }

    #[test]
    fn tfidf_and_bm25_weights() {
        // 2 rows, column 0 in both (df 2), column 1 only in row 0 (df 1).
        let x = to_csr(&[vec![1.0, 2.0], vec![1.0, 0.0]]);
        let t = weighted(x.clone(), Weighting::TfIdf);
        assert_eq!(t.data[0], 0.0);
        assert!((t.data[1] - 2.0 * 2f32.ln()).abs() < 1e-6);
        let b = weighted(x, Weighting::Bm25 { k1: 1.0, b: 1.0 });
        // lens 3 and 1, avg 2; row 0 norm 1.5; idf(col 1) = ln 2 - ln 2 = 0, idf(col 0) = ln 2 - ln 3
        let idf0 = 2f64.ln() - 3f64.ln();
        assert!((b.data[0] as f64 - 1.0 * 2.0 / (1.5 + 1.0) * idf0).abs() < 1e-6);
        assert_eq!(b.data[1], 0.0);
    }

    #[test]
    fn edge_cases() {
        let x = to_csr(&[vec![1.0, 0.0], vec![1.0, 1.0]]);
        let got = similarity_topk(x.view(), &params(0, Measure::Dot), None).unwrap();
        assert_eq!(got.nnz(), 0);
        assert_eq!(got.n_rows, 2);
        let empty = Csr::empty(0, 3);
        assert_eq!(
            similarity_topk(empty.view(), &params(3, Measure::Dot), None)
                .unwrap()
                .n_rows,
            0
        );
        let bad = SimilarityParams {
            measure: Measure::Cosine { shrink: -1.0 },
            ..params(1, Measure::Dot)
        };
        assert!(similarity_topk(x.view(), &bad, None).is_err());
        assert!(similarity_topk(x.view(), &params(1, Measure::Dot), Some(0)).is_err());
    }
}
