//! Top-K scoring of user vectors against a dense item-factor matrix (row-major float32).
//!
//! The scan is memory-bound, so it streams the matrix once, rejects most items with a single
//! comparison against the current k-th score, and checks filters only for the few that pass.
//! The inner loop is compiled twice, plain and with AVX2, and picked at run time.
//!
//! A matrix whose every factor is exactly representable in half precision is stored as f16:
//! half the bytes to stream, and the same products, since each factor converts back to the
//! same f32 and the sums run in f32 in the same order (bit-identical scores).

use super::csr::{Csr, CsrRef};
use super::filters::{check_indices, Filters, SharedFilters};
use super::pool;
use super::sparse::{BatchRecs, Recs};
use super::topk::{rank_cmp, Entry, TopK};
use crate::error::{CoreError, Result};
use half::f16;
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// A stored factor: f32, or f16 for matrices that lose nothing in half precision.
pub trait Elem: Copy + Send + Sync {
    fn get(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// Below this many matrix entries a single-user call stays on the calling thread: a pool
/// round trip costs more than it saves.
const PARALLEL_MIN_ENTRIES: usize = 1 << 21;

#[inline(always)]
fn dot<E: Elem>(a: &[E], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l].get() * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x.get() * y;
    }
    s
}

#[inline(always)]
fn scan_range<E: Elem>(
    f: &[E],
    dim: usize,
    user: &[f32],
    rows: Range<usize>,
    filt: &Filters<'_>,
    top: &mut TopK,
) {
    for j in rows {
        let e = Entry::new(j as u32, dot(&f[j * dim..(j + 1) * dim], user));
        if top.accepts(&e) && filt.eligible(j as u32) {
            top.push(e);
        }
    }
}

#[inline(always)]
fn sum_range(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = a.chunks_exact(8);
    let r = c.remainder();
    for x in c {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + r.iter().sum::<f32>()
}

/// Whether the CPU has AVX2 and FMA (detected once).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the CPU also converts half floats in vectors (F16C; detected once).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma_f16c() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
}

/// Explicit 256-bit kernels: left to itself the compiler keeps an 8-lane accumulator in two
/// 128-bit registers and reduces every row through scalar adds.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Eight stored factors as f32 lanes, and one as f32.
    pub trait Load: Elem {
        unsafe fn load8(p: *const Self) -> __m256;
        #[inline(always)]
        unsafe fn at(p: *const Self) -> f32 {
            (*p).get()
        }
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    impl Load for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }

    /// Dot products of the four rows starting at `r0` (stride `dim`) with `up`; each slice of
    /// the user vector is loaded once for the four rows, and four independent FMA chains keep
    /// the units busy.
    #[inline(always)]
    unsafe fn dot4<E: Load>(r0: *const E, dim: usize, up: *const f32) -> [f32; 4] {
        let vecs = dim / 8;
        let (r1, r2, r3) = (r0.add(dim), r0.add(2 * dim), r0.add(3 * dim));
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        for c in 0..vecs {
            let u = _mm256_loadu_ps(up.add(c * 8));
            a0 = _mm256_fmadd_ps(E::load8(r0.add(c * 8)), u, a0);
            a1 = _mm256_fmadd_ps(E::load8(r1.add(c * 8)), u, a1);
            a2 = _mm256_fmadd_ps(E::load8(r2.add(c * 8)), u, a2);
            a3 = _mm256_fmadd_ps(E::load8(r3.add(c * 8)), u, a3);
        }
        [
            tail(r0, dim, up, hsum(a0)),
            tail(r1, dim, up, hsum(a1)),
            tail(r2, dim, up, hsum(a2)),
            tail(r3, dim, up, hsum(a3)),
        ]
    }

    /// Dot products of the eight rows starting at `r0` with `up`, as one vector: the eight
    /// accumulators are reduced together with horizontal adds instead of one by one.
    #[inline(always)]
    unsafe fn dot8<E: Load>(r0: *const E, dim: usize, up: *const f32) -> __m256 {
        let vecs = dim / 8;
        let mut a = [_mm256_setzero_ps(); 8];
        for c in 0..vecs {
            let u = _mm256_loadu_ps(up.add(c * 8));
            for (r, acc) in a.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(E::load8(r0.add(r * dim + c * 8)), u, *acc);
            }
        }
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let sums = _mm256_add_ps(
            _mm256_permute2f128_ps(u0, u1, 0x20),
            _mm256_permute2f128_ps(u0, u1, 0x31),
        );
        if dim % 8 == 0 {
            return sums;
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sums);
        for (r, o) in out.iter_mut().enumerate() {
            *o = tail(r0.add(r * dim), dim, up, *o);
        }
        _mm256_loadu_ps(out.as_ptr())
    }

    #[inline(always)]
    unsafe fn dot1<E: Load>(r0: *const E, dim: usize, up: *const f32) -> f32 {
        let mut a0 = _mm256_setzero_ps();
        for c in 0..dim / 8 {
            a0 = _mm256_fmadd_ps(E::load8(r0.add(c * 8)), _mm256_loadu_ps(up.add(c * 8)), a0);
        }
        tail(r0, dim, up, hsum(a0))
    }

    /// Adds the products of the `dim % 8` last entries.
    #[inline(always)]
    unsafe fn tail<E: Load>(row: *const E, dim: usize, up: *const f32, mut s: f32) -> f32 {
        for t in dim / 8 * 8..dim {
            s += E::at(row.add(t)) * *up.add(t);
        }
        s
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA (`has_avx2_fma`); `f` holds `rows.end * dim` values
    /// and `user` holds `dim`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scan_avx2(
        f: &[f32],
        dim: usize,
        user: &[f32],
        rows: Range<usize>,
        filt: &Filters<'_>,
        top: &mut TopK,
    ) {
        scan_impl(f, dim, user, rows, filt, top)
    }

    /// `scan_avx2` over half-precision factors.
    ///
    /// # Safety
    /// As `scan_avx2`, and the CPU must support F16C (`has_avx2_fma_f16c`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scan_avx2_f16(
        f: &[f16],
        dim: usize,
        user: &[f32],
        rows: Range<usize>,
        filt: &Filters<'_>,
        top: &mut TopK,
    ) {
        scan_impl(f, dim, user, rows, filt, top)
    }

    #[inline(always)]
    unsafe fn scan_impl<E: Load>(
        f: &[E],
        dim: usize,
        user: &[f32],
        rows: Range<usize>,
        filt: &Filters<'_>,
        top: &mut TopK,
    ) {
        let up = user.as_ptr();
        // The current k-th score: one float compare rejects almost every item.
        let mut bar = f32::NEG_INFINITY;
        if let Some(w) = top.worst() {
            bar = w.score;
        }
        #[inline(always)]
        fn offer(j: usize, s: f32, top: &mut TopK, filt: &Filters<'_>, bar: &mut f32) {
            // Not-less also lets NaN through to the exact check, which ranks it last.
            if s.partial_cmp(bar) != Some(std::cmp::Ordering::Less) {
                let e = Entry::new(j as u32, s);
                if top.accepts(&e) && filt.eligible(j as u32) {
                    top.push(e);
                    *bar = top.worst().map_or(f32::NEG_INFINITY, |w| w.score);
                }
            }
        }
        let mut j = rows.start;
        // Eight rows at a time; one vector compare against the bar skips the whole group in
        // the common case.
        while j + 8 <= rows.end {
            let sums = dot8(f.as_ptr().add(j * dim), dim, up);
            let pass = _mm256_cmp_ps::<_CMP_NLT_UQ>(sums, _mm256_set1_ps(bar));
            if _mm256_movemask_ps(pass) != 0 {
                let mut s8 = [0f32; 8];
                _mm256_storeu_ps(s8.as_mut_ptr(), sums);
                for (o, s) in s8.into_iter().enumerate() {
                    offer(j + o, s, top, filt, &mut bar);
                }
            }
            j += 8;
        }
        while j < rows.end {
            offer(
                j,
                dot1(f.as_ptr().add(j * dim), dim, up),
                top,
                filt,
                &mut bar,
            );
            j += 1;
        }
    }

    /// Every row's dot product with `user`, into `out` (one entry per row of `f`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (`has_avx2_fma`); `f` holds `out.len() * dim` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores_avx2(f: &[f32], dim: usize, user: &[f32], out: &mut [f32]) {
        scores_impl(f, dim, user, out)
    }

    /// `scores_avx2` over half-precision factors.
    ///
    /// # Safety
    /// As `scores_avx2`, and the CPU must support F16C (`has_avx2_fma_f16c`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_avx2_f16(f: &[f16], dim: usize, user: &[f32], out: &mut [f32]) {
        scores_impl(f, dim, user, out)
    }

    #[inline(always)]
    unsafe fn scores_impl<E: Load>(f: &[E], dim: usize, user: &[f32], out: &mut [f32]) {
        let up = user.as_ptr();
        let mut quads = out.chunks_exact_mut(4);
        let mut j = 0;
        for o in &mut quads {
            o.copy_from_slice(&dot4(f.as_ptr().add(j * dim), dim, up));
            j += 4;
        }
        for o in quads.into_remainder() {
            *o = dot1(f.as_ptr().add(j * dim), dim, up);
            j += 1;
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA (`has_avx2_fma`).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_avx2(a: &[f32]) -> f32 {
        let p = a.as_ptr();
        let n = a.len() / 32 * 32;
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i < n {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p.add(i)));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p.add(i + 8)));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p.add(i + 16)));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p.add(i + 24)));
            i += 32;
        }
        let s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        s + a[n..].iter().sum::<f32>()
    }
}

/// The stored matrix (row-major, n_items x dim).
#[derive(Clone, Debug)]
enum Factors {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Factors {
    /// Half precision when that loses nothing (every value converts back to itself).
    fn new(v: Vec<f32>) -> Self {
        if v.iter()
            .all(|&x| f16::from_f32(x).to_f32().to_bits() == x.to_bits())
        {
            Factors::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
        } else {
            Factors::F32(v)
        }
    }

    fn len(&self) -> usize {
        match self {
            Factors::F32(f) => f.len(),
            Factors::F16(f) => f.len(),
        }
    }
}

fn scan(
    f: &Factors,
    dim: usize,
    user: &[f32],
    rows: Range<usize>,
    filt: &Filters<'_>,
    top: &mut TopK,
) {
    match f {
        Factors::F32(f) => {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: AVX2 and FMA were detected at run time; callers pass rows inside `f`.
                return unsafe { simd::scan_avx2(f, dim, user, rows, filt, top) };
            }
            scan_range(f, dim, user, rows, filt, top)
        }
        Factors::F16(f) => {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma_f16c() {
                // SAFETY: AVX2, FMA and F16C were detected; callers pass rows inside `f`.
                return unsafe { simd::scan_avx2_f16(f, dim, user, rows, filt, top) };
            }
            scan_range(f, dim, user, rows, filt, top)
        }
    }
}

fn scores_into<E: Elem>(f: &[E], dim: usize, user: &[f32], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot(&f[j * dim..(j + 1) * dim], user);
    }
}

fn sum(a: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::sum_avx2(a) };
    }
    sum_range(a)
}

/// Splits `0..n` into `parts` contiguous ranges.
fn chunks(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| (n * p / parts)..(n * (p + 1) / parts))
        .collect()
}

/// An item-factor matrix held for repeated scoring.
#[derive(Clone, Debug)]
pub struct DenseModel {
    factors: Factors,
    n_items: usize,
    dim: usize,
}

impl DenseModel {
    pub fn new(factors: Vec<f32>, n_items: usize, dim: usize) -> Result<Self> {
        if factors.len() != n_items * dim {
            return Err(CoreError::arg(format!(
                "factors hold {} values, not {n_items} x {dim}",
                factors.len()
            )));
        }
        if n_items > i32::MAX as usize {
            return Err(CoreError::arg(format!("{n_items} items exceed i32 range")));
        }
        check_finite("item_factors", &factors, dim)?;
        Ok(DenseModel {
            factors: Factors::new(factors),
            n_items,
            dim,
        })
    }

    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Every item's score for one user vector (checked by the caller: `dim` finite values).
    pub fn all_scores(&self, user: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.n_items];
        match &self.factors {
            Factors::F32(f) => {
                #[cfg(target_arch = "x86_64")]
                if has_avx2_fma() {
                    // SAFETY: AVX2 and FMA were detected; f holds n_items * dim values.
                    unsafe { simd::scores_avx2(f, self.dim, user, &mut out) };
                    return out;
                }
                scores_into(f, self.dim, user, &mut out);
            }
            Factors::F16(f) => {
                #[cfg(target_arch = "x86_64")]
                if has_avx2_fma_f16c() {
                    // SAFETY: AVX2, FMA and F16C were detected; f holds n_items * dim values.
                    unsafe { simd::scores_avx2_f16(f, self.dim, user, &mut out) };
                    return out;
                }
                scores_into(f, self.dim, user, &mut out);
            }
        }
        out
    }

    /// Whether the factors are held in half precision (exactly; see the module doc).
    pub fn is_half(&self) -> bool {
        matches!(self.factors, Factors::F16(_))
    }

    /// Checks one user vector (length and finiteness).
    pub fn check_vector(&self, name: &str, user: &[f32]) -> Result<()> {
        self.check_user(name, user, 1)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn factors(&self) -> Cow<'_, [f32]> {
        match &self.factors {
            Factors::F32(f) => Cow::Borrowed(f),
            Factors::F16(f) => Cow::Owned(f.iter().map(|x| x.to_f32()).collect()),
        }
    }

    fn check_user(&self, name: &str, v: &[f32], n_users: usize) -> Result<()> {
        if v.len() != n_users * self.dim {
            return Err(CoreError::arg(format!(
                "{name} has {} values; the model has {} factors",
                v.len(),
                self.dim
            )));
        }
        check_finite(name, v, self.dim)
    }

    /// Scores one user vector; large catalogues are split across the pool's threads.
    pub fn recommend(
        &self,
        user: &[f32],
        k: usize,
        exclude: &[i32],
        shared: &SharedFilters,
        num_threads: Option<usize>,
    ) -> Result<Recs> {
        self.check_user("user_vector", user, 1)?;
        check_indices("exclude", exclude, self.n_items)?;
        let filt = shared.for_user(exclude, &[]);
        let threads = pool::resolve_threads(num_threads)?;
        let best = if filt.allow().is_none()
            && threads > 1
            && self.factors.len() >= PARALLEL_MIN_ENTRIES
        {
            let parts = pool::install(Some(threads), || {
                chunks(self.n_items, threads * 2)
                    .into_par_iter()
                    .map(|rows| {
                        let mut top = TopK::new(k);
                        scan(&self.factors, self.dim, user, rows, &filt, &mut top);
                        top.into_sorted()
                    })
                    .collect::<Vec<_>>()
            })?;
            let mut top = TopK::new(k);
            parts.into_iter().flatten().for_each(|e| top.push(e));
            top.into_sorted()
        } else {
            self.scan_one(user, k, &filt)
        };
        Ok(Recs {
            items: best.iter().map(|e| e.idx).collect(),
            scores: best.iter().map(|e| e.score).collect(),
            ..Default::default()
        })
    }

    fn scan_one(&self, user: &[f32], k: usize, filt: &Filters<'_>) -> Vec<Entry> {
        let mut top = TopK::new(k);
        match filt.allow() {
            Some(allow) => {
                for &j in allow {
                    let j = j as usize;
                    scan(&self.factors, self.dim, user, j..j + 1, filt, &mut top);
                }
            }
            None => scan(
                &self.factors,
                self.dim,
                user,
                0..self.n_items,
                filt,
                &mut top,
            ),
        }
        top.into_sorted()
    }

    /// Scores `users` (n_users x dim, row-major); `exclude` is users x items.
    pub fn recommend_batch(
        &self,
        users: &[f32],
        n_users: usize,
        k: usize,
        exclude: Option<CsrRef<'_>>,
        shared: &SharedFilters,
        num_threads: Option<usize>,
    ) -> Result<BatchRecs> {
        self.check_user("user_vectors", users, n_users)?;
        if let Some(ex) = exclude {
            if ex.n_rows() != n_users || ex.n_cols() != self.n_items {
                return Err(CoreError::arg(format!(
                    "exclude is {}x{} but must be {n_users}x{} (users x items)",
                    ex.n_rows(),
                    ex.n_cols(),
                    self.n_items
                )));
            }
        }
        let recs = pool::install_for(num_threads, n_users, || {
            (0..n_users)
                .into_par_iter()
                .with_min_len(4)
                .map(|u| {
                    let ex = exclude.map_or(&[][..], |m| m.row(u).0);
                    let filt = shared.for_user(ex, &[]);
                    let best = self.scan_one(&users[u * self.dim..(u + 1) * self.dim], k, &filt);
                    Recs {
                        items: best.iter().map(|e| e.idx).collect(),
                        scores: best.iter().map(|e| e.score).collect(),
                        ..Default::default()
                    }
                })
                .collect::<Vec<_>>()
        })?;
        Ok(BatchRecs::from_users(recs, false))
    }
}

/// Top-K of precomputed score rows (`scores` is n_rows x n_items, row-major), with the same
/// filters and ranking order as the scorers: for blends computed elsewhere (e.g. a hybrid).
pub fn select_topk(
    scores: &[f32],
    n_items: usize,
    k: usize,
    exclude: Option<CsrRef<'_>>,
    shared: &SharedFilters,
    num_threads: Option<usize>,
) -> Result<BatchRecs> {
    let n_rows = dense_rows("scores", scores, n_items, "items")?;
    if let Some(ex) = exclude {
        if ex.n_rows() != n_rows || ex.n_cols() != n_items {
            return Err(CoreError::arg(format!(
                "exclude is {}x{} but must be {n_rows}x{n_items}",
                ex.n_rows(),
                ex.n_cols()
            )));
        }
    }
    let recs = pool::install_for(num_threads, n_rows, || {
        scores
            .par_chunks(n_items)
            .enumerate()
            .map(|(u, row)| {
                let ex = exclude.map_or(&[][..], |m| m.row(u).0);
                let filt = shared.for_user(ex, &[]);
                let mut top = TopK::new(k);
                let mut offer = |j: usize| {
                    let e = Entry::new(j as u32, row[j]);
                    if top.accepts(&e) && filt.eligible(j as u32) {
                        top.push(e);
                    }
                };
                match filt.allow() {
                    Some(a) => a.iter().for_each(|&j| offer(j as usize)),
                    None => (0..n_items).for_each(&mut offer),
                }
                let best = top.into_sorted();
                Recs {
                    items: best.iter().map(|e| e.idx).collect(),
                    scores: best.iter().map(|e| e.score).collect(),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>()
    })?;
    Ok(BatchRecs::from_users(recs, false))
}

/// The `k` entries of each row of the dense `b` (row-major, `n_cols` columns) largest in
/// magnitude, equal magnitudes to the lower column, zeros dropped: a CSR with sorted columns
/// (EASE's item weights cut to its `k_neighbors`; negative weights count by their size).
pub fn top_magnitude_rows(
    b: &[f32],
    n_cols: usize,
    k: usize,
    num_threads: Option<usize>,
) -> Result<Csr> {
    let n_rows = dense_rows("b", b, n_cols, "columns")?;
    // `Greater` when `x` ranks before `y`: rank_cmp on magnitudes
    let by_size = |x: &(u32, f32), y: &(u32, f32)| {
        let (ex, ey) = (Entry::new(x.0, x.1.abs()), Entry::new(y.0, y.1.abs()));
        rank_cmp(&ex, &ey)
    };
    let rows = pool::install_for(num_threads, n_rows, || {
        b.par_chunks(n_cols)
            .with_min_len(16)
            .map(|row| {
                let mut kept: Vec<(u32, f32)> = (0..n_cols as u32)
                    .zip(row.iter().copied())
                    .filter(|&(_, v)| v != 0.0)
                    .collect();
                if kept.len() > k {
                    if k > 0 {
                        // a total order: the same k whatever the selection's path
                        kept.select_nth_unstable_by(k - 1, |x, y| by_size(y, x));
                    }
                    kept.truncate(k);
                    kept.sort_unstable_by_key(|e| e.0);
                }
                kept
            })
            .collect::<Vec<_>>()
    })?;
    Ok(Csr::from_rows(n_cols, rows))
}

/// The number of rows of the row-major `v` of `n_cols` columns (`unit` names them in the
/// error), checked to be whole rows of finite values.
fn dense_rows(name: &str, v: &[f32], n_cols: usize, unit: &str) -> Result<usize> {
    if n_cols == 0 || v.len() % n_cols != 0 {
        return Err(CoreError::arg(format!(
            "{name} holds {} values, not a multiple of {n_cols} {unit}",
            v.len()
        )));
    }
    check_finite(name, v, n_cols)?;
    Ok(v.len() / n_cols)
}

pub(crate) fn check_finite(name: &str, v: &[f32], dim: usize) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(p) => Err(CoreError::NonFinite {
            name: name.to_string(),
            pos: p,
            row: p / dim.max(1),
            value: v[p],
        }),
    }
}

/// Sums `a` with the chunking and thread count the single-user dense scan uses, and nothing
/// else: the time it takes is the memory-bandwidth bound of that scan.
pub fn stream_read(a: &[f32], row_len: usize, num_threads: Option<usize>) -> Result<f64> {
    let threads = pool::resolve_threads(num_threads)?;
    let row_len = row_len.max(1);
    let n_rows = a.len() / row_len;
    if threads == 1 || a.len() < PARALLEL_MIN_ENTRIES {
        return Ok(sum(a) as f64);
    }
    pool::install(Some(threads), || {
        chunks(n_rows, threads * 2)
            .into_par_iter()
            .map(|r| {
                let end = if r.end == n_rows {
                    a.len()
                } else {
                    r.end * row_len
                };
                sum(&a[r.start * row_len..end]) as f64
            })
            .sum::<f64>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> DenseModel {
        // 5 items x 3 factors
        let f = vec![
            1.0, 0.0, 0.0, //
            0.0, 1.0, 0.0, //
            1.0, 1.0, 0.0, //
            0.0, 0.0, 1.0, //
            -1.0, 0.0, 0.0,
        ];
        DenseModel::new(f, 5, 3).unwrap()
    }

    fn none() -> SharedFilters {
        SharedFilters::new(5, &[], None).unwrap()
    }

    #[test]
    fn ranks_by_dot_with_ties_by_index() {
        let m = model();
        let r = m
            .recommend(&[1.0, 1.0, 0.0], 4, &[], &none(), Some(1))
            .unwrap();
        assert_eq!(r.items, vec![2, 0, 1, 3]);
        assert_eq!(r.scores, vec![2.0, 1.0, 1.0, 0.0]);
        let r = m
            .recommend(&[1.0, 1.0, 0.0], 10, &[2], &none(), Some(1))
            .unwrap();
        assert_eq!(r.items, vec![0, 1, 3, 4]);
    }

    /// A matrix of half-exact values (k / 64 for small k) and the same matrix forced to f32
    /// storage score bit for bit alike, on both the SIMD and the scalar paths.
    #[test]
    fn half_storage_scores_like_f32() {
        for dim in [3usize, 8, 13, 100] {
            let n = 301;
            let f: Vec<f32> = (0..n * dim)
                .map(|i| ((i * 2654435761usize) % 257) as f32 / 64.0 - 2.0)
                .collect();
            let half = DenseModel::new(f.clone(), n, dim).unwrap();
            assert!(half.is_half());
            let full = DenseModel {
                factors: Factors::F32(f.clone()),
                n_items: n,
                dim,
            };
            let u: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            assert_eq!(half.all_scores(&u), full.all_scores(&u));
            let shared = SharedFilters::new(n, &[3], None).unwrap();
            let a = half.recommend(&u, 20, &[5], &shared, Some(1)).unwrap();
            let b = full.recommend(&u, 20, &[5], &shared, Some(1)).unwrap();
            assert_eq!(a, b);
            let Factors::F16(h) = &half.factors else {
                unreachable!()
            };
            let mut scalar = vec![0f32; n];
            scores_into(h, dim, &u, &mut scalar);
            let mut scalar32 = vec![0f32; n];
            scores_into(&f, dim, &u, &mut scalar32);
            assert_eq!(scalar, scalar32);
            assert_eq!(half.factors().as_ref(), &f[..]);
        }
        // One value half precision cannot hold keeps the whole matrix in f32.
        let m = DenseModel::new(vec![1.0, 0.1, 0.5, 0.25], 2, 2).unwrap();
        assert!(!m.is_half());
    }

    #[test]
    fn allow_and_deny() {
        let m = model();
        let shared = SharedFilters::new(5, &[0], Some(&[4, 0, 3])).unwrap();
        let r = m
            .recommend(&[1.0, 1.0, 0.0], 10, &[], &shared, None)
            .unwrap();
        assert_eq!(r.items, vec![3, 4]);
    }

    #[test]
    fn parallel_scan_matches_serial() {
        let n = 70_000;
        let dim = 32;
        let f: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let m = DenseModel::new(f, n, dim).unwrap();
        let u: Vec<f32> = (0..dim).map(|i| (i as f32 - 16.0) / 16.0).collect();
        let shared = SharedFilters::new(n, &[5, 6], None).unwrap();
        let a = m.recommend(&u, 25, &[7], &shared, Some(1)).unwrap();
        let b = m.recommend(&u, 25, &[7], &shared, Some(2)).unwrap();
        assert_eq!(a, b);
        let batch = m
            .recommend_batch(&u, 1, 25, None, &shared, Some(2))
            .unwrap();
        assert_eq!(batch.items.len(), 25);
        let expected: f64 = m.factors().iter().map(|&x| x as f64).sum();
        for threads in [1, 2] {
            let got = stream_read(&m.factors(), dim, Some(threads)).unwrap();
            assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
        }
    }

    #[test]
    fn top_magnitude_rows_keeps_the_largest_by_size_ties_to_lower_columns() {
        let b = vec![
            0.5, -2.0, 1.0, 0.0, -1.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, //
            3.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let m = top_magnitude_rows(&b, 5, 2, Some(1)).unwrap();
        assert_eq!(m.indptr, vec![0, 2, 2, 3]);
        // row 0: |-2| first, then 1.0 and -1.0 tie on size: the lower column (2) is kept
        assert_eq!(m.indices, vec![1, 2, 0]);
        assert_eq!(m.data, vec![-2.0, 1.0, 3.0]);
        let all = top_magnitude_rows(&b, 5, 9, Some(2)).unwrap();
        assert_eq!(all.indices, vec![0, 1, 2, 4, 0]);
        assert_eq!(top_magnitude_rows(&b, 5, 0, None).unwrap().indices.len(), 0);
        assert!(top_magnitude_rows(&b, 4, 2, None).is_err());
        assert!(top_magnitude_rows(&[f32::NAN], 1, 1, None).is_err());
    }

    #[test]
    fn select_topk_filters_rows() {
        let scores = [0.5, 2.0, 1.0, 3.0, /* row 1 */ 1.0, 1.0, 1.0, 0.0];
        let p = [0i64, 1, 1];
        let i = [3i32];
        let d = [1.0f32];
        let ex = CsrRef::new("exclude", 2, 4, &p, &i, &d).unwrap();
        let shared = SharedFilters::new(4, &[1], None).unwrap();
        let b = select_topk(&scores, 4, 2, Some(ex), &shared, Some(2)).unwrap();
        assert_eq!(b.indptr, vec![0, 2, 4]);
        assert_eq!(b.items, vec![2, 0, 0, 2]);
        assert!(select_topk(&[f32::NAN], 1, 1, None, &shared_none(1), None).is_err());
        assert!(select_topk(&[1.0; 3], 2, 1, None, &shared_none(2), None).is_err());
    }

    fn shared_none(n: usize) -> SharedFilters {
        SharedFilters::new(n, &[], None).unwrap()
    }

    #[test]
    fn rejects_bad_vectors() {
        let m = model();
        assert!(m.recommend(&[1.0, 1.0], 4, &[], &none(), None).is_err());
        assert!(m
            .recommend(&[1.0, f32::NAN, 0.0], 4, &[], &none(), None)
            .is_err());
        assert!(DenseModel::new(vec![1.0; 5], 2, 3).is_err());
        assert!(DenseModel::new(vec![f32::INFINITY; 6], 2, 3).is_err());
    }
}
