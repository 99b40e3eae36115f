//! Which items may be recommended: exclusions, a deny-list and an optional allow-list.
//!
//! Scorers ask `eligible` only for a candidate that would enter the top-K, so the cost of a
//! filter is paid a few times per call, not once per item.

use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};

/// Checks that every index of a list lies in `[0, n)`.
pub fn check_indices(name: &str, idx: &[i32], n: usize) -> Result<()> {
    match idx.iter().position(|&i| i < 0 || i as usize >= n) {
        None => Ok(()),
        Some(p) => Err(CoreError::arg(format!(
            "{name}[{p}] = {} is not an item index in [0, {n})",
            idx[p]
        ))),
    }
}

fn sorted_unique(lists: &[&[i32]]) -> Vec<u32> {
    let mut v: Vec<u32> = lists
        .iter()
        .flat_map(|l| l.iter().map(|&i| i as u32))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The parts of the filter shared by every user of a call.
#[derive(Clone, Debug)]
pub struct SharedFilters {
    n_items: usize,
    deny: Vec<u32>,
    allow: Option<Vec<u32>>,
}

impl SharedFilters {
    pub fn new(n_items: usize, deny: &[i32], allow: Option<&[i32]>) -> Result<Self> {
        check_indices("deny", deny, n_items)?;
        if let Some(a) = allow {
            check_indices("allow", a, n_items)?;
        }
        Ok(SharedFilters {
            n_items,
            deny: sorted_unique(&[deny]),
            allow: allow.map(|a| sorted_unique(&[a])),
        })
    }

    /// One user's filter; the lists must have been range-checked already.
    pub fn for_user(&self, exclude: &[i32], history: &[i32]) -> Filters<'_> {
        let blocked = if exclude.is_empty() && history.is_empty() {
            self.deny.clone()
        } else {
            let mut v = self.deny.clone();
            v.extend(exclude.iter().chain(history).map(|&i| i as u32));
            v.sort_unstable();
            v.dedup();
            v
        };
        Filters {
            n_items: self.n_items,
            blocked,
            allow: self.allow.as_deref(),
        }
    }
}

pub struct Filters<'a> {
    n_items: usize,
    blocked: Vec<u32>,
    allow: Option<&'a [u32]>,
}

impl Filters<'_> {
    #[inline]
    pub fn eligible(&self, j: u32) -> bool {
        self.blocked.binary_search(&j).is_err()
            && self.allow.is_none_or(|a| a.binary_search(&j).is_ok())
    }

    pub fn allow(&self) -> Option<&[u32]> {
        self.allow
    }

    /// Offers every eligible item not yet scored (`scored(j)` false) with score 0, in index
    /// order, stopping as soon as the top-K cannot take a 0 any more: later indices lose ties.
    pub fn fill_zeros(&self, top: &mut TopK, scored: impl Fn(u32) -> bool) {
        let offer = |j: u32, top: &mut TopK| -> bool {
            let e = Entry::new(j, 0.0);
            if !top.accepts(&e) {
                return false;
            }
            if !scored(j) && self.eligible(j) {
                top.push(e);
            }
            true
        };
        match self.allow {
            Some(a) => {
                for &j in a {
                    if !offer(j, top) {
                        break;
                    }
                }
            }
            None => {
                for j in 0..self.n_items as u32 {
                    if !offer(j, top) {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_combines_lists() {
        let shared = SharedFilters::new(10, &[1, 1, 7], Some(&[0, 1, 2, 3, 7])).unwrap();
        let f = shared.for_user(&[2], &[3]);
        let ok: Vec<u32> = (0..10).filter(|&j| f.eligible(j)).collect();
        assert_eq!(ok, vec![0]);
    }

    #[test]
    fn rejects_out_of_range() {
        let err = SharedFilters::new(5, &[5], None).unwrap_err();
        assert!(err.to_string().contains("deny[0] = 5"), "{err}");
        assert!(SharedFilters::new(5, &[], Some(&[-1])).is_err());
    }

    #[test]
    fn fill_zeros_takes_lowest_eligible_indices() {
        let shared = SharedFilters::new(6, &[0], None).unwrap();
        let f = shared.for_user(&[], &[]);
        let mut top = TopK::new(3);
        top.push(Entry::new(4, 1.0));
        f.fill_zeros(&mut top, |j| j == 4);
        let got: Vec<u32> = top.into_sorted().iter().map(|e| e.idx).collect();
        assert_eq!(got, vec![4, 1, 2]);
    }
}
