//! Top-K scoring of a weighted history against a sparse neighbour matrix:
//! `score[j] = sum_h w_h * N[h, j]`, with the top contributions kept as explanations.

use super::accum::{Accumulator, ACCUMULATOR};
use super::csr::{merge_sorted_pairs, Csr, CsrRef};
use super::filters::{check_indices, Filters, SharedFilters};
use super::pool;
use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Recommendations for one user; the `explain_*` vectors stay empty unless asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recs {
    pub items: Vec<u32>,
    pub scores: Vec<f32>,
    /// `explain_indptr[r]..explain_indptr[r + 1]` are item `r`'s contributions.
    pub explain_indptr: Vec<i64>,
    pub explain_sources: Vec<u32>,
    pub explain_values: Vec<f32>,
}

/// Ragged results for a batch: user `u` owns `items[indptr[u]..indptr[u + 1]]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchRecs {
    pub indptr: Vec<i64>,
    pub items: Vec<u32>,
    pub scores: Vec<f32>,
    pub explain_indptr: Vec<i64>,
    pub explain_sources: Vec<u32>,
    pub explain_values: Vec<f32>,
}

impl BatchRecs {
    pub(crate) fn from_users(users: Vec<Recs>, explain: bool) -> Self {
        let total: usize = users.iter().map(|r| r.items.len()).sum();
        let mut out = BatchRecs {
            indptr: Vec::with_capacity(users.len() + 1),
            items: Vec::with_capacity(total),
            scores: Vec::with_capacity(total),
            ..Default::default()
        };
        out.indptr.push(0);
        if explain {
            out.explain_indptr.push(0);
        }
        for r in users {
            out.items.extend_from_slice(&r.items);
            out.scores.extend_from_slice(&r.scores);
            out.indptr.push(out.items.len() as i64);
            if explain {
                let base = out.explain_sources.len() as i64;
                out.explain_indptr
                    .extend(r.explain_indptr[1..].iter().map(|p| p + base));
                out.explain_sources.extend_from_slice(&r.explain_sources);
                out.explain_values.extend_from_slice(&r.explain_values);
            }
        }
        out
    }
}

thread_local! {
    static HISTORY: RefCell<Vec<(i32, f32)>> = const { RefCell::new(Vec::new()) };
}

/// `SparseModel::evidence`: items x top arrays, row-major (source -1 where there are fewer).
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub sources: Vec<i32>,
    pub contributions: Vec<f32>,
    pub similarities: Vec<f32>,
    pub scores: Vec<f32>,
}

/// A neighbour matrix held for repeated scoring (validated and canonicalised once).
#[derive(Clone, Debug)]
pub struct SparseModel {
    nbrs: Csr,
}

impl SparseModel {
    pub fn new(nbrs: CsrRef<'_>) -> Self {
        let nbrs = nbrs.to_owned_canonical();
        SparseModel { nbrs }
    }

    pub fn n_sources(&self) -> usize {
        self.nbrs.n_rows
    }

    pub fn n_items(&self) -> usize {
        self.nbrs.n_cols
    }

    pub fn matrix(&self) -> &Csr {
        &self.nbrs
    }

    /// Every item's score for one weighted history (checked like `recommend`'s).
    pub fn all_scores(&self, items: &[i32], weights: &[f32]) -> Result<Vec<f32>> {
        self.check_history(items, Some(weights))?;
        let mut out = vec![0f32; self.n_items()];
        for (&h, &w) in items.iter().zip(weights) {
            let (cols, vals) = self.nbrs.row(h as usize);
            for (&j, &v) in cols.iter().zip(vals) {
                out[j as usize] += w * v;
            }
        }
        Ok(out)
    }

    /// Per item of `cols`: the `top` history rows adding most to its score (largest
    /// `weight * value` first, ties by history order; fewer when fewer add anything), and
    /// the whole history's score. What an explanation names, without scoring every item.
    pub fn evidence(
        &self,
        rows: &[i32],
        weights: &[f32],
        cols: &[i32],
        top: usize,
    ) -> Result<Evidence> {
        self.check_history(rows, Some(weights))?;
        check_indices("cols", cols, self.n_items())?;
        let k = cols.len();
        let mut ev = Evidence {
            sources: vec![-1; k * top],
            contributions: vec![0.0; k * top],
            similarities: vec![0.0; k * top],
            scores: vec![0.0; k],
        };
        let mut found: Vec<(f32, usize, f32)> = Vec::with_capacity(rows.len());
        for (j, &c) in cols.iter().enumerate() {
            found.clear();
            for (n, (&r, &w)) in rows.iter().zip(weights).enumerate() {
                if let Some(v) = self.nbrs.get(r as usize, c) {
                    let contribution = w * v;
                    ev.scores[j] += contribution;
                    if contribution != 0.0 {
                        found.push((contribution, n, v));
                    }
                }
            }
            found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (t, &(contribution, n, v)) in found.iter().take(top).enumerate() {
                ev.sources[j * top + t] = rows[n];
                ev.contributions[j * top + t] = contribution;
                ev.similarities[j * top + t] = v;
            }
        }
        Ok(ev)
    }

    /// One user's history: indices in range, weights (when given) as many and finite.
    fn check_history(&self, items: &[i32], weights: Option<&[f32]>) -> Result<()> {
        check_indices("history_items", items, self.n_sources())?;
        let Some(w) = weights else { return Ok(()) };
        if w.len() != items.len() {
            return Err(CoreError::arg(format!(
                "history_weights has length {} but history_items has length {}",
                w.len(),
                items.len()
            )));
        }
        match w.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(p) => Err(CoreError::NonFinite {
                name: "history_weights".into(),
                pos: p,
                row: 0,
                value: w[p],
            }),
        }
    }

    fn check_exclude_history(&self, exclude_history: bool) -> Result<()> {
        if exclude_history && self.n_sources() != self.n_items() {
            return Err(CoreError::arg(format!(
                "exclude_history needs history and items in one index space, but the model maps \
                 {} sources to {} items; pass exclude_history=False and the seen items in exclude",
                self.n_sources(),
                self.n_items()
            )));
        }
        Ok(())
    }

    /// Scores one user. `weights` defaults to 1 for every history entry.
    #[allow(clippy::too_many_arguments)]
    pub fn recommend(
        &self,
        items: &[i32],
        weights: Option<&[f32]>,
        k: usize,
        exclude: &[i32],
        shared: &SharedFilters,
        exclude_history: bool,
        explain: usize,
    ) -> Result<Recs> {
        self.check_history(items, weights)?;
        check_indices("exclude", exclude, self.n_items())?;
        self.check_exclude_history(exclude_history)?;
        Ok(self.recommend_checked(items, weights, k, exclude, shared, exclude_history, explain))
    }

    #[allow(clippy::too_many_arguments)]
    fn recommend_checked(
        &self,
        items: &[i32],
        weights: Option<&[f32]>,
        k: usize,
        exclude: &[i32],
        shared: &SharedFilters,
        exclude_history: bool,
        explain: usize,
    ) -> Recs {
        ACCUMULATOR.with_borrow_mut(|acc| {
            HISTORY.with_borrow_mut(|history| {
                self.score_into(
                    acc,
                    history,
                    items,
                    weights,
                    k,
                    exclude,
                    shared,
                    exclude_history,
                    explain,
                )
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn score_into(
        &self,
        s: &mut Accumulator,
        history: &mut Vec<(i32, f32)>,
        items: &[i32],
        weights: Option<&[f32]>,
        k: usize,
        exclude: &[i32],
        shared: &SharedFilters,
        exclude_history: bool,
        explain: usize,
    ) -> Recs {
        s.begin(self.n_items());
        // History as sorted unique (source, summed weight) pairs.
        history.clear();
        match weights {
            Some(w) => history.extend(items.iter().copied().zip(w.iter().copied())),
            None => history.extend(items.iter().map(|&i| (i, 1.0f32))),
        }
        if !history.windows(2).all(|p| p[0].0 < p[1].0) {
            history.sort_unstable_by_key(|p| p.0);
            let (mut ix, mut vx) = (Vec::new(), Vec::new());
            merge_sorted_pairs(history, &mut ix, &mut vx);
            history.clear();
            history.extend(ix.into_iter().zip(vx));
        }
        for &(h, wh) in history.iter() {
            let (cols, vals) = self.nbrs.row(h as usize);
            // SAFETY: the matrix was validated, so every column index is < n_items.
            unsafe { s.scatter(cols, vals, wh) };
        }

        let hist_idx: Vec<i32> = if exclude_history {
            history.iter().map(|p| p.0).collect()
        } else {
            Vec::new()
        };
        let filters: Filters<'_> = shared.for_user(exclude, &hist_idx);
        let mut top = TopK::new(k);
        for &j in s.touched.iter() {
            let e = Entry::new(j, s.acc[j as usize]);
            if top.accepts(&e) && filters.eligible(j) {
                top.push(e);
            }
        }
        if top.worst().is_none_or(|w| w.score <= 0.0) {
            filters.fill_zeros(&mut top, |j| s.is_touched(j));
        }
        let best = top.into_sorted();

        let mut out = Recs {
            items: best.iter().map(|e| e.idx).collect(),
            scores: best.iter().map(|e| e.score).collect(),
            ..Default::default()
        };
        if explain > 0 {
            out.explain_indptr.push(0);
            for e in &best {
                let mut why = TopK::new(explain);
                for &(h, wh) in history.iter() {
                    if let Some(v) = self.nbrs.get(h as usize, e.idx as i32) {
                        let c = wh * v;
                        if c != 0.0 {
                            why.push(Entry::new(h as u32, c));
                        }
                    }
                }
                for c in why.into_sorted() {
                    out.explain_sources.push(c.idx);
                    out.explain_values.push(c.score);
                }
                out.explain_indptr.push(out.explain_sources.len() as i64);
            }
        }
        out
    }

    /// Scores every row of `history` (users x sources); `exclude` is users x items.
    #[allow(clippy::too_many_arguments)]
    pub fn recommend_batch(
        &self,
        history: CsrRef<'_>,
        k: usize,
        exclude: Option<CsrRef<'_>>,
        shared: &SharedFilters,
        exclude_history: bool,
        explain: usize,
        num_threads: Option<usize>,
    ) -> Result<BatchRecs> {
        if history.n_cols() != self.n_sources() {
            return Err(CoreError::arg(format!(
                "history has {} columns but the model has {} sources",
                history.n_cols(),
                self.n_sources()
            )));
        }
        if let Some(ex) = exclude {
            if ex.n_rows() != history.n_rows() || ex.n_cols() != self.n_items() {
                return Err(CoreError::arg(format!(
                    "exclude is {}x{} but must be {}x{} (users x items)",
                    ex.n_rows(),
                    ex.n_cols(),
                    history.n_rows(),
                    self.n_items()
                )));
            }
        }
        self.check_exclude_history(exclude_history)?;
        let users = pool::install_for(num_threads, history.n_rows(), || {
            (0..history.n_rows())
                .into_par_iter()
                .with_min_len(8)
                .map(|u| {
                    let (items, weights) = history.row(u);
                    let ex = exclude.map_or(&[][..], |m| m.row(u).0);
                    self.recommend_checked(
                        items,
                        Some(weights),
                        k,
                        ex,
                        shared,
                        exclude_history,
                        explain,
                    )
                })
                .collect::<Vec<_>>()
        })?;
        Ok(BatchRecs::from_users(users, explain > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neighbours of a 4-item catalogue:
    /// 0 -> {1: 0.5, 2: 0.2}, 1 -> {0: 0.5, 3: 0.9}, 2 -> {0: 0.2}, 3 -> {1: 0.9}
    fn model() -> SparseModel {
        let p = [0i64, 2, 4, 5, 6];
        let i = [1i32, 2, 0, 3, 0, 1];
        let d = [0.5f32, 0.2, 0.5, 0.9, 0.2, 0.9];
        SparseModel::new(CsrRef::new("n", 4, 4, &p, &i, &d).unwrap())
    }

    fn none(n: usize) -> SharedFilters {
        SharedFilters::new(n, &[], None).unwrap()
    }

    #[test]
    fn evidence_ranks_history_rows_by_contribution() {
        let m = model();
        // item 0 from rows 1 (0.5 * 2) and 2 (0.2 * 1); item 3 from row 1 only; item 2: none
        let ev = m
            .evidence(&[2, 1, 3], &[1.0, 2.0, 1.0], &[0, 3, 2], 2)
            .unwrap();
        assert_eq!(ev.sources, vec![1, 2, 1, -1, -1, -1]);
        assert_eq!(ev.contributions, vec![1.0, 0.2, 1.8, 0.0, 0.0, 0.0]);
        assert_eq!(ev.similarities, vec![0.5, 0.2, 0.9, 0.0, 0.0, 0.0]);
        assert_eq!(ev.scores, vec![1.2, 1.8, 0.0]);
        assert!(m.evidence(&[0], &[1.0, 2.0], &[1], 1).is_err());
        assert!(m.evidence(&[0], &[1.0], &[9], 1).is_err());
    }

    #[test]
    fn scores_and_excludes_history() {
        let m = model();
        let r = m
            .recommend(&[0, 1], None, 10, &[], &none(4), true, 0)
            .unwrap();
        // scores: item 2 = 0.2 (from 0), item 3 = 0.9 (from 1)
        assert_eq!(r.items, vec![3, 2]);
        assert_eq!(r.scores, vec![0.9, 0.2]);
    }

    #[test]
    fn zero_scores_fill_up_to_k_in_index_order() {
        let m = model();
        let r = m.recommend(&[2], None, 3, &[], &none(4), true, 0).unwrap();
        assert_eq!(r.items, vec![0, 1, 3]);
        assert_eq!(r.scores, vec![0.2, 0.0, 0.0]);
        let r = m.recommend(&[2], None, 0, &[], &none(4), true, 0).unwrap();
        assert!(r.items.is_empty());
    }

    #[test]
    fn duplicate_history_is_summed_and_weighted() {
        let m = model();
        let r = m
            .recommend(
                &[1, 0, 1],
                Some(&[1.0, 2.0, 1.0]),
                2,
                &[],
                &none(4),
                false,
                0,
            )
            .unwrap();
        // item 0: 2*0.5 (h=1 twice -> w=2); item 1: 2*0.5 (h=0, w=2); item 3: 2*0.9 = 1.8
        assert_eq!(r.items, vec![3, 0]);
        assert_eq!(r.scores, vec![1.8, 1.0]);
    }

    #[test]
    fn allow_and_deny_inside_kernel() {
        let m = model();
        let shared = SharedFilters::new(4, &[3], Some(&[2, 3])).unwrap();
        let r = m
            .recommend(&[0, 1], None, 5, &[], &shared, true, 0)
            .unwrap();
        assert_eq!(r.items, vec![2]);
    }

    #[test]
    fn explanations_list_top_contributors() {
        let m = model();
        let r = m
            .recommend(
                &[1, 3, 2],
                Some(&[1.0, 2.0, 1.0]),
                1,
                &[],
                &none(4),
                false,
                2,
            )
            .unwrap();
        // item 1: 2*0.9 from 3 and 0; item 0: 0.5 from 1 + 0.2 from 2 = 0.7; item 3: 0.9
        assert_eq!(r.items, vec![1]);
        assert_eq!(r.explain_indptr, vec![0, 1]);
        assert_eq!(r.explain_sources, vec![3]);
        assert_eq!(r.explain_values, vec![1.8]);
        let r = m
            .recommend(&[1, 2], None, 1, &[], &none(4), false, 5)
            .unwrap();
        assert_eq!(r.items, vec![3]);
        let r = m
            .recommend(&[1, 2], None, 2, &[3], &none(4), false, 5)
            .unwrap();
        assert_eq!(r.items, vec![0, 1]);
        assert_eq!(r.explain_indptr, vec![0, 2, 2]);
        assert_eq!(r.explain_sources, vec![1, 2]);
    }

    #[test]
    fn batch_matches_single_calls() {
        let m = model();
        let p = [0i64, 2, 2, 3];
        let i = [0i32, 1, 2];
        let d = [1.0f32, 1.0, 3.0];
        let hist = CsrRef::new("h", 3, 4, &p, &i, &d).unwrap();
        let b = m
            .recommend_batch(hist, 2, None, &none(4), true, 1, Some(2))
            .unwrap();
        assert_eq!(b.indptr, vec![0, 2, 4, 6]);
        for u in 0..3 {
            let (ix, w) = hist.row(u);
            let r = m.recommend(ix, Some(w), 2, &[], &none(4), true, 1).unwrap();
            let (a, z) = (b.indptr[u] as usize, b.indptr[u + 1] as usize);
            assert_eq!(&b.items[a..z], &r.items[..]);
            assert_eq!(&b.scores[a..z], &r.scores[..]);
        }
        assert_eq!(b.explain_indptr.len(), b.items.len() + 1);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = model();
        assert!(m.recommend(&[4], None, 1, &[], &none(4), true, 0).is_err());
        assert!(m
            .recommend(&[0], Some(&[f32::NAN]), 1, &[], &none(4), true, 0)
            .is_err());
        assert!(m
            .recommend(&[0], Some(&[]), 1, &[], &none(4), true, 0)
            .is_err());
        assert!(m.recommend(&[0], None, 1, &[9], &none(4), true, 0).is_err());
    }
}
