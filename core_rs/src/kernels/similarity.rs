//! Row-row similarity of a sparse matrix with each row's top-k neighbours kept.
//!
//! Row `i` is compared with every row sharing a column with it by walking the transpose
//! (Gustavson's row-by-row sparse product) into a per-thread accumulator, so the cost is the
//! number of co-occurrences, and only `k` entries per row are ever stored.

use super::accum::ACCUMULATOR;
use super::csr::{Csr, CsrRef};
use super::pool;
use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};
use rayon::prelude::*;

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
    params.validate()?;
    pool::resolve_threads(num_threads)?;
    let x = weighted(x.to_owned_canonical(), params.weighting);
    let xt = x.transpose();
    compute(&x, &xt, params, num_threads)
}

/// Similarity between the columns of `xt` (the rows of its transpose), without the caller
/// having to transpose: item-item similarity straight from a users x items matrix.
pub fn similarity_topk_of_columns(
    xt: CsrRef<'_>,
    params: &SimilarityParams,
    num_threads: Option<usize>,
) -> Result<Csr> {
    params.validate()?;
    pool::resolve_threads(num_threads)?;
    let x = weighted(xt.to_owned_canonical().transpose(), params.weighting);
    let xt = x.transpose();
    compute(&x, &xt, params, num_threads)
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
            for r in 0..x.n_rows {
                let norm = if avg != 0.0 {
                    (1.0 - b) + b * lens[r] / avg
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

fn compute(
    x: &Csr,
    xt: &Csr,
    params: &SimilarityParams,
    num_threads: Option<usize>,
) -> Result<Csr> {
    let n = x.n_rows;
    if params.k == 0 || n == 0 {
        return Ok(Csr::empty(n, n));
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
    let k = params.k.min(n);
    let rows = pool::install(num_threads, || {
        (0..n)
            .into_par_iter()
            .map(|i| ACCUMULATOR.with_borrow_mut(|s| row_topk(i, x, xt, &norms, k, params, s)))
            .collect::<Vec<_>>()
    })?;
    Ok(Csr::from_rows(n, rows))
}

fn row_topk(
    i: usize,
    x: &Csr,
    xt: &Csr,
    norms: &[f32],
    k: usize,
    params: &SimilarityParams,
    s: &mut super::accum::Accumulator,
) -> Vec<(u32, f32)> {
    s.begin(x.n_rows);
    let (cols, vals) = x.row(i);
    for (&c, &w) in cols.iter().zip(vals) {
        let (others, ow) = xt.row(c as usize);
        // SAFETY: `xt` is the transpose of `x`, so its column indices are rows of `x` (< n).
        unsafe { s.scatter(others, ow, w) };
    }
    let mut top = TopK::new(k);
    let ni = norms[i];
    for &j in &s.touched {
        let d = s.acc[j as usize];
        if d == 0.0 || (j as usize == i && !params.include_self) {
            continue;
        }
        let score = match params.measure {
            Measure::Dot => d,
            Measure::Cosine { shrink } => d / (ni * norms[j as usize] + shrink),
        };
        top.push(Entry::new(j, score));
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
        for i in 0..rows.len() {
            let (ix, vx) = got.row(i);
            let expect: Vec<usize> = (0..rows.len())
                .filter(|&j| j != i && want[i][j] != 0.0)
                .collect();
            assert_eq!(
                ix.iter().map(|&j| j as usize).collect::<Vec<_>>(),
                expect,
                "row {i}"
            );
            for (&j, &v) in ix.iter().zip(vx) {
                assert!((v - want[i][j as usize]).abs() < 1e-6);
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
