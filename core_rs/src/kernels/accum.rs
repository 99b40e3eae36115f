//! A per-thread scatter accumulator over a dense index space.
//!
//! `stamp[j] == epoch` marks `acc[j]` as written since `begin`, so a call costs what it
//! touches, never a clear of the whole index space.

use std::cell::RefCell;

#[derive(Default)]
pub struct Accumulator {
    pub acc: Vec<f32>,
    pub stamp: Vec<u32>,
    pub epoch: u32,
    pub touched: Vec<u32>,
}

impl Accumulator {
    pub fn begin(&mut self, n: usize) {
        if self.acc.len() < n {
            self.acc.resize(n, 0.0);
            self.stamp.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.fill(0);
            self.epoch = 1;
        }
        self.touched.clear();
    }

    /// `acc[cols[t]] += w * vals[t]` for every t.
    ///
    /// # Safety
    /// Every index in `cols` must be non-negative and below the `n` given to `begin`.
    #[inline]
    pub unsafe fn scatter(&mut self, cols: &[i32], vals: &[f32], w: f32) {
        let epoch = self.epoch;
        for (&j, &v) in cols.iter().zip(vals) {
            let j = j as usize;
            if *self.stamp.get_unchecked(j) != epoch {
                *self.stamp.get_unchecked_mut(j) = epoch;
                *self.acc.get_unchecked_mut(j) = 0.0;
                self.touched.push(j as u32);
            }
            *self.acc.get_unchecked_mut(j) += w * v;
        }
    }

    /// `scatter` for (index, value) pairs stored together.
    ///
    /// # Safety
    /// Every index must be below the `n` given to `begin`.
    #[inline]
    pub unsafe fn scatter_pairs(&mut self, pairs: &[(u32, f32)], w: f32) {
        let epoch = self.epoch;
        for &(j, v) in pairs {
            let j = j as usize;
            if *self.stamp.get_unchecked(j) != epoch {
                *self.stamp.get_unchecked_mut(j) = epoch;
                *self.acc.get_unchecked_mut(j) = 0.0;
                self.touched.push(j as u32);
            }
            *self.acc.get_unchecked_mut(j) += w * v;
        }
    }

    #[inline]
    pub fn is_touched(&self, j: u32) -> bool {
        self.stamp[j as usize] == self.epoch
    }
}

thread_local! {
    pub static ACCUMULATOR: RefCell<Accumulator> = RefCell::new(Accumulator::default());
}
