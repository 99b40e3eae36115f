//! Top-K of a weighted blend of scorers for one user, in one call: each part's scores over
//! the whole catalogue are normalised by their largest magnitude, weighted and summed, and the
//! top K of the sum are selected with the usual filters. This is the hybrid recommender's
//! request path; doing it here saves a Python pass (and temporary arrays) per part.

use super::dense::DenseModel;
use super::filters::{check_indices, SharedFilters};
use super::sparse::SparseModel;
use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};
use std::borrow::Cow;

pub enum Part<'a> {
    /// `score[j] = sum_h w_h * N[h, j]` (item-KNN on a history, user-KNN on neighbours).
    Sparse {
        model: &'a SparseModel,
        items: &'a [i32],
        weights: &'a [f32],
    },
    /// `score[j] = user . factors[j]`.
    Dense {
        model: &'a DenseModel,
        user: &'a [f32],
    },
    /// Precomputed scores (e.g. popularity).
    Fixed { scores: &'a [f32] },
}

/// The selected items, their blended scores, and each part's normalised score at each of
/// them (`part_scores[p * items.len() + r]`), from which shares are explained.
#[derive(Debug, Default, PartialEq)]
pub struct Blend {
    pub items: Vec<u32>,
    pub scores: Vec<f32>,
    pub part_scores: Vec<f32>,
}

/// The largest magnitude in `v` (0 for an all-zero part, which then blends as it is).
fn peak(v: &[f32]) -> f32 {
    // A plain compare-and-select (not f32::max) so the reduction vectorises.
    v.iter()
        .fold(0f32, |m, x| if x.abs() > m { x.abs() } else { m })
}

pub fn blend_topk(
    parts: &[(Part<'_>, f32)],
    n_items: usize,
    k: usize,
    exclude: &[i32],
    shared: &SharedFilters,
) -> Result<Blend> {
    check_indices("exclude", exclude, n_items)?;
    // Each part's scores, and what they are divided by; the division happens as they are
    // added (the same x / peak, then w * that, as normalising first), which saves a pass and
    // a copy per part.
    let mut vectors: Vec<(Cow<'_, [f32]>, f32)> = Vec::with_capacity(parts.len());
    let mut blend = vec![0f32; n_items];
    for (n, (part, w)) in parts.iter().enumerate() {
        if !w.is_finite() {
            return Err(CoreError::arg(format!(
                "part {n}: weight {w} is not finite"
            )));
        }
        let v: Cow<'_, [f32]> = match part {
            Part::Sparse {
                model,
                items,
                weights,
            } => Cow::Owned(model.all_scores(items, weights)?),
            Part::Dense { model, user } => {
                model.check_vector("user_vector", user)?;
                Cow::Owned(model.all_scores(user))
            }
            Part::Fixed { scores } => {
                if let Some(p) = scores.iter().position(|x| !x.is_finite()) {
                    return Err(CoreError::arg(format!(
                        "part {n}: scores[{p}] is not finite"
                    )));
                }
                Cow::Borrowed(*scores)
            }
        };
        if v.len() != n_items {
            return Err(CoreError::arg(format!(
                "part {n} scores {} items, the blend has {n_items}",
                v.len()
            )));
        }
        let p = peak(&v);
        if *w != 0.0 {
            if p > 0.0 {
                blend
                    .iter_mut()
                    .zip(v.iter())
                    .for_each(|(b, x)| *b += w * (x / p));
            } else {
                blend
                    .iter_mut()
                    .zip(v.iter())
                    .for_each(|(b, x)| *b += w * x);
            }
        }
        vectors.push((v, p));
    }
    let filt = shared.for_user(exclude, &[]);
    let mut top = TopK::new(k);
    // The current k-th score once K items are held. Items are offered in increasing index
    // order, so one that only ties the bar loses the tie to everything held: `<=` rejects it
    // with one compare (a catalogue of mostly-zero scores would otherwise pay a full
    // comparison per item).
    let mut bar = f32::NEG_INFINITY;
    let mut offer = |j: usize| {
        if blend[j] <= bar {
            return;
        }
        let e = Entry::new(j as u32, blend[j]);
        if top.accepts(&e) && filt.eligible(j as u32) {
            top.push(e);
            bar = top.worst().map_or(f32::NEG_INFINITY, |w| w.score);
        }
    };
    match filt.allow() {
        Some(a) => a.iter().for_each(|&j| offer(j as usize)),
        None => (0..n_items).for_each(&mut offer),
    }
    let best = top.into_sorted();
    let mut out = Blend {
        items: best.iter().map(|e| e.idx).collect(),
        scores: best.iter().map(|e| e.score).collect(),
        part_scores: Vec::with_capacity(vectors.len() * best.len()),
    };
    for (v, p) in &vectors {
        out.part_scores.extend(best.iter().map(|e| {
            let x = v[e.idx as usize];
            if *p > 0.0 {
                x / p
            } else {
                x
            }
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::csr::CsrRef;

    #[test]
    fn blends_normalised_parts() {
        // item-KNN over 3 items: 0 -> {1: 2.0, 2: 1.0}
        let p = [0i64, 2, 2, 2];
        let i = [1i32, 2];
        let d = [2.0f32, 1.0];
        let knn = SparseModel::new(CsrRef::new("n", 3, 3, &p, &i, &d).unwrap());
        let svd = DenseModel::new(vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5], 3, 2).unwrap();
        let pop = [4.0f32, 1.0, 2.0];
        let parts = [
            (
                Part::Sparse {
                    model: &knn,
                    items: &[0],
                    weights: &[1.0],
                },
                1.0,
            ),
            (
                Part::Dense {
                    model: &svd,
                    user: &[0.0, 2.0],
                },
                0.5,
            ),
            (Part::Fixed { scores: &pop }, 0.25),
        ];
        let shared = SharedFilters::new(3, &[], None).unwrap();
        let b = blend_topk(&parts, 3, 3, &[], &shared).unwrap();
        // normalised: knn [0, 1, .5]; svd [0, 1, .5]; pop [1, .25, .5]
        // blend: item0 .25, item1 1 + .5 + .0625 = 1.5625, item2 .5 + .25 + .125 = .875
        assert_eq!(b.items, vec![1, 2, 0]);
        assert_eq!(b.scores, vec![1.5625, 0.875, 0.25]);
        assert_eq!(&b.part_scores[..3], &[1.0, 0.5, 0.0]);
        let b = blend_topk(&parts, 3, 2, &[1], &shared).unwrap();
        assert_eq!(b.items, vec![2, 0]);
    }

    #[test]
    fn rejects_bad_parts() {
        let pop = [1.0f32, f32::NAN];
        let shared = SharedFilters::new(2, &[], None).unwrap();
        assert!(blend_topk(&[(Part::Fixed { scores: &pop }, 1.0)], 2, 1, &[], &shared).is_err());
        let ok = [1.0f32];
        assert!(blend_topk(&[(Part::Fixed { scores: &ok }, 1.0)], 2, 1, &[], &shared).is_err());
        assert!(blend_topk(&[], 2, 1, &[5], &shared).is_err());
    }
}
