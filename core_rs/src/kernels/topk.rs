//! Bounded selection of the best `k` (index, score) pairs.
//!
//! Ranking order everywhere in the core: higher score first, equal scores by lower index.

use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    pub idx: u32,
    pub score: f32,
}

/// `Greater` when `a` ranks before `b`. `total_cmp` keeps this a total order even for NaN,
/// so no input can make a sort panic.
#[inline]
pub fn rank_cmp(a: &Entry, b: &Entry) -> Ordering {
    a.score.total_cmp(&b.score).then_with(|| b.idx.cmp(&a.idx))
}

/// Keeps the best `k` entries pushed so far in a binary heap whose root is the worst kept.
pub struct TopK {
    k: usize,
    heap: Vec<Entry>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k.min(1 << 16)),
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.k
    }

    /// Whether `e` would be kept if pushed now; lets callers skip costly eligibility checks.
    #[inline]
    pub fn accepts(&self, e: &Entry) -> bool {
        if self.heap.len() < self.k {
            return true;
        }
        self.k > 0 && rank_cmp(e, &self.heap[0]) == Ordering::Greater
    }

    /// The worst kept entry when full (the bar a new entry must beat).
    pub fn worst(&self) -> Option<&Entry> {
        if self.is_full() {
            self.heap.first()
        } else {
            None
        }
    }

    /// Pushes `e`; callers normalise -0.0 to 0.0 first (see `Entry::new`).
    #[inline]
    pub fn push(&mut self, e: Entry) {
        if self.heap.len() < self.k {
            self.heap.push(e);
            self.sift_up(self.heap.len() - 1);
        } else if self.k > 0 && rank_cmp(&e, &self.heap[0]) == Ordering::Greater {
            self.heap[0] = e;
            self.sift_down(0);
        }
    }

    /// The kept entries, best first.
    pub fn into_sorted(mut self) -> Vec<Entry> {
        self.heap.sort_unstable_by(|a, b| rank_cmp(b, a));
        self.heap
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            // A min-heap by rank: the parent must rank after (be worse than) the child.
            if rank_cmp(&self.heap[i], &self.heap[parent]) == Ordering::Less {
                self.heap.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut worst = i;
            if l < n && rank_cmp(&self.heap[l], &self.heap[worst]) == Ordering::Less {
                worst = l;
            }
            if r < n && rank_cmp(&self.heap[r], &self.heap[worst]) == Ordering::Less {
                worst = r;
            }
            if worst == i {
                break;
            }
            self.heap.swap(i, worst);
            i = worst;
        }
    }
}

impl Entry {
    /// `+ 0.0` turns -0.0 into 0.0 so that a sum that came out as -0.0 ties with an untouched 0.
    #[inline]
    pub fn new(idx: u32, score: f32) -> Self {
        Entry {
            idx,
            score: score + 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(items: &[(u32, f32)], k: usize) -> Vec<Entry> {
        let mut v: Vec<Entry> = items.iter().map(|&(i, s)| Entry::new(i, s)).collect();
        v.sort_by(|a, b| rank_cmp(b, a));
        v.truncate(k);
        v
    }

    #[test]
    fn keeps_best_k_with_index_tie_break() {
        let items: Vec<(u32, f32)> = (0..50u32).map(|i| (i, ((i * 7919) % 13) as f32)).collect();
        for k in [0, 1, 3, 10, 50, 60] {
            let mut t = TopK::new(k);
            for &(i, s) in items.iter().rev() {
                t.push(Entry::new(i, s));
            }
            assert_eq!(t.into_sorted(), brute(&items, k), "k={k}");
        }
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let mut t = TopK::new(2);
        t.push(Entry::new(5, -0.0));
        t.push(Entry::new(3, 0.0));
        t.push(Entry::new(9, 0.0));
        let out = t.into_sorted();
        assert_eq!(out.iter().map(|e| e.idx).collect::<Vec<_>>(), vec![3, 5]);
    }

    #[test]
    fn accepts_matches_push() {
        let mut t = TopK::new(2);
        t.push(Entry::new(1, 1.0));
        t.push(Entry::new(2, 2.0));
        assert!(!t.accepts(&Entry::new(3, 1.0)));
        assert!(t.accepts(&Entry::new(0, 1.0)));
        assert_eq!(t.worst().map(|e| e.idx), Some(1));
    }
}
