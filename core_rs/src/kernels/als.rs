//! Implicit-feedback matrix factorisation (Hu, Koren and Volinsky's weighted ALS) solved with a
//! few conjugate-gradient steps per row, as in Takács et al.: each half-step costs
//! O(nnz * f + rows * f^2) instead of a dense f x f solve per row.
//!
//! Confidence of an observed entry is `1 + alpha * w`; unobserved entries have preference 0
//! and confidence 1. Row `u` of `x` solves
//! `(YᵀY + reg_u I + Σ_i (c_ui - 1) y_i y_iᵀ) x_u = Σ_i c_ui y_i`
//! with the frequency-scaled regularisation `reg_u = reg * max(n_u, 1)^reg_exponent`, `n_u`
//! the row's stored entries (Zhou et al. 2008 for exponent 1; Rendle et al. 2021 tune it in
//! [0, 1]). Exponent 0 is one `reg` for every row.

use super::csr::CsrRef;
use super::pool;
use crate::error::{CoreError, Result};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlsParams {
    pub alpha: f32,
    pub reg: f32,
    /// `reg_u = reg * max(n_u, 1)^reg_exponent`; 0 (one `reg` for every row) to 1.
    pub reg_exponent: f32,
    pub cg_steps: usize,
}

impl AlsParams {
    /// What row `n` stored entries adds to the diagonal on top of the `reg` already in the
    /// Gram matrix: exactly 0 when the exponent is 0 or the row has at most one entry, so
    /// those rows compute what a single `reg` does, bit for bit.
    fn extra_reg(&self, n: usize) -> f32 {
        if self.reg_exponent == 0.0 || n <= 1 {
            return 0.0;
        }
        let scaled = self.reg as f64 * (n as f64).powf(self.reg_exponent as f64);
        (scaled - self.reg as f64) as f32
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `YᵀY + reg I` (f x f, row-major), accumulated in f64.
///
/// Element `(a, b)` sums `y[r][a] y[r][b]` over the rows `r` in order (rows with `y[r][a]`
/// exactly 0 skipped), whatever the split: the output's rows are shared out among threads in
/// `GRAM_BLOCKS` blocks of about equal work (row `a` costs `f - a`), each thread reading all
/// of `y` for its own rows, so the result does not depend on the thread count.
fn gram(y: &[f32], f: usize, reg: f32, num_threads: Option<usize>) -> Result<Vec<f32>> {
    let mut g = vec![0f64; f * f];
    let mut blocks = Vec::with_capacity(GRAM_BLOCKS);
    let mut rest = &mut g[..];
    let (mut lo, total) = (0usize, f * (f + 1) / 2);
    for k in 1..=GRAM_BLOCKS {
        // the first row past k/GRAM_BLOCKS of the triangle's work
        let mut hi = lo;
        let want = total * k / GRAM_BLOCKS;
        while hi < f && (f * hi - hi * hi.saturating_sub(1) / 2) < want {
            hi += 1;
        }
        let hi = if k == GRAM_BLOCKS { f } else { hi.max(lo) };
        let (head, tail) = rest.split_at_mut((hi - lo) * f);
        blocks.push((lo, head));
        rest = tail;
        lo = hi;
    }
    let rows = y.len() / f;
    let fill = |(lo, block): (usize, &mut [f64])| gram_rows_of(y, f, lo, block);
    // a thread per block pays off from a few thousand rows at 64 factors
    let work = if rows * f * f >= 1 << 22 {
        GRAM_BLOCKS
    } else {
        1
    };
    pool::install_for(num_threads, work, || {
        if work > 1 {
            blocks.into_par_iter().for_each(fill)
        } else {
            blocks.into_iter().for_each(fill)
        }
    })?;
    for a in 0..f {
        g[a * f + a] += reg as f64;
        for b in 0..a {
            g[a * f + b] = g[b * f + a];
        }
    }
    Ok(g.into_iter().map(|v| v as f32).collect())
}

/// Rows `lo..` of `gram`'s upper triangle (`block`: whole rows of `f`), added up row of `y`
/// by row of `y`; with AVX2 the same operations in 256-bit lanes (no fused multiply-adds), so
/// the same bits.
fn gram_rows_of(y: &[f32], f: usize, lo: usize, block: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if super::dense::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked just above)
        return unsafe { gram_rows_of_avx2(y, f, lo, block) };
    }
    gram_rows_of_impl(y, f, lo, block)
}

/// `gram_rows_of` compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gram_rows_of_avx2(y: &[f32], f: usize, lo: usize, block: &mut [f64]) {
    gram_rows_of_impl(y, f, lo, block)
}

#[inline(always)]
fn gram_rows_of_impl(y: &[f32], f: usize, lo: usize, block: &mut [f64]) {
    for row in y.chunks_exact(f) {
        for (da, out) in block.chunks_exact_mut(f).enumerate() {
            let a = lo + da;
            let ra = row[a] as f64;
            if ra == 0.0 {
                continue;
            }
            for (o, &rb) in out[a..].iter_mut().zip(&row[a..]) {
                *o += ra * rb as f64;
            }
        }
    }
}

/// Blocks of output rows `gram` shares out.
const GRAM_BLOCKS: usize = 8;

/// `(G + extra I) v`; `extra` 0 leaves `G v` untouched.
#[inline(always)]
fn gram_times(g: &[f32], f: usize, extra: f32, v: &[f32], out: &mut [f32]) {
    for (a, o) in out.iter_mut().enumerate() {
        *o = dot(&g[a * f..(a + 1) * f], v);
    }
    if extra != 0.0 {
        axpy(out, extra, v);
    }
}

/// `gram_times` for a symmetric `G` (as `gram` builds it), the same bits: element `a` of
/// `G v` is still `Σ_b G[a][b] v[b]` added up in `b` order from -0.0 (what `dot`'s `sum`
/// does), but as `Σ_b v[b] G[b][..]`, one row of `G` at a time, so the `f` sums advance
/// together in vector lanes instead of one add waiting on the last.
#[inline(always)]
fn sym_gram_times(g: &[f32], f: usize, extra: f32, v: &[f32], out: &mut [f32]) {
    out.fill(-0.0);
    for (row, &vb) in g.chunks_exact(f).zip(v) {
        for (o, &gb) in out.iter_mut().zip(row) {
            *o += gb * vb;
        }
    }
    if extra != 0.0 {
        axpy(out, extra, v);
    }
}

fn check_params(params: &AlsParams) -> Result<()> {
    for (name, v) in [("alpha", params.alpha), ("reg", params.reg)] {
        if !v.is_finite() || v < 0.0 {
            return Err(CoreError::arg(format!(
                "{name} must be finite and >= 0, got {v}"
            )));
        }
    }
    let nu = params.reg_exponent;
    if !(0.0..=1.0).contains(&nu) {
        return Err(CoreError::arg(format!(
            "reg_exponent must be in [0, 1], got {nu}"
        )));
    }
    Ok(())
}

/// `YᵀY + reg I` (f x f, row-major) exactly as `half_step` builds it: computed once and
/// passed to `half_step_with_gram` for each block of rows, a half-step split into blocks
/// (e.g. on a cluster) gives the whole half-step's result without each block paying the
/// n_cols x f² product.
pub fn gram_matrix(y: &[f32], f: usize, reg: f32) -> Result<Vec<f32>> {
    if f == 0 || y.len() % f != 0 {
        return Err(CoreError::arg(format!(
            "y has {} values, not a multiple of {f} factors (at least 1)",
            y.len()
        )));
    }
    if !reg.is_finite() || reg < 0.0 {
        return Err(CoreError::arg(format!(
            "reg must be finite and >= 0, got {reg}"
        )));
    }
    gram(y, f, reg, None)
}

/// One ALS half-step: updates every row of `x` (n_rows x f) given the fixed `y` (n_cols x f)
/// and the interactions `r` (n_rows x n_cols).
pub fn half_step(
    r: CsrRef<'_>,
    x: &mut [f32],
    y: &[f32],
    f: usize,
    params: &AlsParams,
    num_threads: Option<usize>,
) -> Result<()> {
    half_step_with_gram(r, x, y, None, f, params, num_threads)
}

/// `half_step` with `YᵀY + reg I` given (`gram_matrix(y, f, params.reg)`), or built here
/// when `None`.
pub fn half_step_with_gram(
    r: CsrRef<'_>,
    x: &mut [f32],
    y: &[f32],
    gram_given: Option<&[f32]>,
    f: usize,
    params: &AlsParams,
    num_threads: Option<usize>,
) -> Result<()> {
    if f == 0 {
        return Err(CoreError::arg("factors must be at least 1"));
    }
    if let Some(g) = gram_given {
        if g.len() != f * f {
            return Err(CoreError::arg(format!(
                "gram must be {f}x{f}, got {} values",
                g.len()
            )));
        }
    }
    if x.len() != r.n_rows() * f || y.len() != r.n_cols() * f {
        return Err(CoreError::arg(format!(
            "factor shapes ({} and {} values) do not match a {}x{} matrix with {f} factors",
            x.len(),
            y.len(),
            r.n_rows(),
            r.n_cols()
        )));
    }
    check_params(params)?;
    let built;
    let g = match gram_given {
        Some(g) => g,
        None => {
            built = gram(y, f, params.reg, num_threads)?;
            &built[..]
        }
    };
    // each row's extra regularisation goes to `solve_rows` in `extras`
    let cg = Cg {
        alpha: params.alpha,
        extra: 0.0,
        steps: params.cg_steps,
        stop: CG_STOP,
        symmetric: true,
    };
    let padded = PaddedGram::new(g, f);
    pool::install_for(num_threads, r.n_rows(), || {
        x.par_chunks_mut(BLOCK * f)
            .enumerate()
            .with_min_len(4)
            .for_each_init(
                || vec![0f32; BLOCK * (3 * PaddedGram::stride_for(f) + f)],
                |buf, (blk, xs)| {
                    let (first, n) = (blk * BLOCK, xs.len() / f);
                    // a short last block is filled up with empty rows: x = 0 and no entries
                    // give a zero residual, so they stop before their first step
                    let empty: (&[i32], &[f32]) = (&[], &[]);
                    let rows =
                        std::array::from_fn(|k| if k < n { r.row(first + k) } else { empty });
                    let extras = rows.map(|(cols, _)| params.extra_reg(cols.len()));
                    if n == BLOCK {
                        solve_rows(&rows, &extras, xs, y, &padded, f, &cg, buf);
                    } else {
                        let mut whole = vec![0f32; BLOCK * f];
                        whole[..xs.len()].copy_from_slice(xs);
                        solve_rows(&rows, &extras, &mut whole, y, &padded, f, &cg, buf);
                        xs.copy_from_slice(&whole[..xs.len()]);
                    }
                },
            )
    })
}

/// Stop a row's CG once its squared residual is below this.
const CG_STOP: f32 = 1e-20;

/// Rows a half-step solves together (`solve_rows`), so each row of `G` read serves them all.
const BLOCK: usize = 4;

/// Output values of each row's `G v` that `gram_rows` holds in registers at once.
const TILE: usize = 16;

/// `G` (f x f) with each row padded with zeros to a multiple of `TILE` values and the first
/// row on a cache line: `gram_rows` then works in whole tiles only (at 100 factors the last
/// 4 values, done one by one, had made the block solve no faster than row by row), each
/// tile's read within one cache line.
struct PaddedGram {
    buf: Vec<f32>,
    start: usize,
    stride: usize,
}

impl PaddedGram {
    fn stride_for(f: usize) -> usize {
        f.div_ceil(TILE) * TILE
    }

    fn new(g: &[f32], f: usize) -> Self {
        let stride = Self::stride_for(f);
        let mut buf = vec![0f32; f * stride + TILE];
        let start = buf.as_ptr().align_offset(64).min(TILE);
        for (dst, src) in buf[start..].chunks_exact_mut(stride).zip(g.chunks_exact(f)) {
            dst[..f].copy_from_slice(src);
        }
        PaddedGram { buf, start, stride }
    }

    #[inline(always)]
    fn rows(&self, f: usize) -> &[f32] {
        &self.buf[self.start..self.start + f * self.stride]
    }
}

/// `outs[k] = G vs[k]` for the `BLOCK` rows `k` of `vs` (each `f` values, `vstride` apart)
/// and a symmetric `G`: the bits of `sym_gram_times` with `extra` 0 row by row (element `a`
/// of each row added up in `b` order from -0.0), but `TILE` elements of every row held in
/// registers while `G`'s rows stream past once, instead of once per row. The rows of `outs`
/// are `g.stride` apart, so whole tiles are stored.
#[inline(always)]
fn gram_rows(
    g: &PaddedGram,
    f: usize,
    vs: &[f32],
    vstride: usize,
    outs: &mut [f32],
    vt: &mut [f32],
) {
    // vs by columns (`vt[b]` holds element b of every row), so the loop over G's rows reads
    // its BLOCK multipliers with no index to check: checks there kept the tile in memory
    for (k, v) in vs.chunks(vstride).take(BLOCK).enumerate() {
        for (t, &x) in vt.chunks_exact_mut(BLOCK).zip(&v[..f]) {
            t[k] = x;
        }
    }
    let (rows, stride) = (g.rows(f), g.stride);
    for a0 in (0..f).step_by(TILE) {
        let mut acc = [[-0.0f32; TILE]; BLOCK];
        for (row, vb) in rows.chunks_exact(stride).zip(vt.chunks_exact(BLOCK)) {
            let gt: &[f32; TILE] = row[a0..a0 + TILE].try_into().unwrap();
            for (acc, &v) in acc.iter_mut().zip(vb) {
                for (o, &gv) in acc.iter_mut().zip(gt) {
                    *o += gv * v;
                }
            }
        }
        for (k, acc) in acc.iter().enumerate() {
            outs[k * stride + a0..k * stride + a0 + TILE].copy_from_slice(acc);
        }
    }
}

/// Rows whose dots `dots` takes at once.
const LANES: usize = 8;

/// `out[j] = dot(y_i, v)` for the rows `i` of `cols` (at most `LANES`), each the bits `dot`
/// gives (its products added in order from -0.0): a full set runs as `LANES` independent
/// chains of adds, where one `dot` waits on each add before the next.
#[inline(always)]
fn dots(y: &[f32], f: usize, cols: &[i32], v: &[f32], out: &mut [f32; LANES]) {
    let row = |i: i32| &y[i as usize * f..(i as usize + 1) * f];
    if cols.len() < LANES {
        for (o, &i) in out.iter_mut().zip(cols) {
            *o = dot(row(i), v);
        }
        return;
    }
    let rows: [&[f32]; LANES] = std::array::from_fn(|j| row(cols[j]));
    let mut acc = [-0.0f32; LANES];
    for (b, &vb) in v[..f].iter().enumerate() {
        for (a, r) in acc.iter_mut().zip(&rows) {
            *a += r[b] * vb;
        }
    }
    *out = acc;
}

/// `out += coef(w_i, dot(y_i, v)) y_i` for each entry `(i, w_i)` of a row, in order, the dots
/// taken `LANES` at a time (`dots`): the bits of one entry after the other.
#[inline(always)]
fn add_entries(
    cols: &[i32],
    vals: &[f32],
    y: &[f32],
    f: usize,
    v: &[f32],
    out: &mut [f32],
    coef: impl Fn(f32, f32) -> f32,
) {
    let mut d = [0f32; LANES];
    for (cs, ws) in cols.chunks(LANES).zip(vals.chunks(LANES)) {
        dots(y, f, cs, v, &mut d);
        for ((&i, &w), &dv) in cs.iter().zip(ws).zip(&d) {
            axpy(out, coef(w, dv), &y[i as usize * f..(i as usize + 1) * f]);
        }
    }
}

/// One row's conjugate-gradient run on `(G + extra I + Σ alpha w_i y_i y_iᵀ) x = Σ c_i y_i`.
struct Cg {
    alpha: f32,
    /// Added to the diagonal of `G`.
    extra: f32,
    steps: usize,
    /// Stop once the squared residual is below this.
    stop: f32,
    /// Whether `G` is exactly symmetric (built by `gram`), so `sym_gram_times` may multiply
    /// by it; fold-in's `YᵀY` comes from the caller and keeps `gram_times`.
    symmetric: bool,
}

/// Runs `p.steps` CG steps on row `xu`, warm-started from its current value. With AVX2 the
/// same code runs in 256-bit lanes: the same operations in the same order (no fused
/// multiply-adds), so the same bits as without.
#[allow(clippy::too_many_arguments)]
fn solve_row(
    cols: &[i32],
    vals: &[f32],
    xu: &mut [f32],
    y: &[f32],
    g: &[f32],
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::dense::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked just above)
        return unsafe { solve_row_avx2(cols, vals, xu, y, g, f, p, buf) };
    }
    solve_row_impl(cols, vals, xu, y, g, f, p, buf)
}

/// `solve_row` compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn solve_row_avx2(
    cols: &[i32],
    vals: &[f32],
    xu: &mut [f32],
    y: &[f32],
    g: &[f32],
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    solve_row_impl(cols, vals, xu, y, g, f, p, buf)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn solve_row_impl(
    cols: &[i32],
    vals: &[f32],
    xu: &mut [f32],
    y: &[f32],
    g: &[f32],
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    let (r, rest) = buf.split_at_mut(f);
    let (dir, ap) = rest.split_at_mut(f);
    let extra = p.extra;
    let times = |v: &[f32], out: &mut [f32]| {
        if p.symmetric {
            sym_gram_times(g, f, extra, v, out)
        } else {
            gram_times(g, f, extra, v, out)
        }
    };
    times(xu, r);
    finish_residual(cols, vals, y, f, p.alpha, xu, r);
    dir.copy_from_slice(r);
    let mut rs_old = dot(r, r);
    for _ in 0..p.steps {
        if rs_old < p.stop {
            break;
        }
        times(dir, ap);
        finish_product(cols, vals, y, f, p.alpha, dir, ap);
        match cg_step(xu, r, dir, ap, rs_old) {
            Some(rs_new) => rs_old = rs_new,
            None => break,
        }
    }
}

/// `r = b - A x` once `r` holds `(G + extra I) x`: the row's entries' confidences and targets
/// added (`A = G + extra I + Σ alpha w_i y_i y_iᵀ`, `b = Σ (1 + alpha w_i) y_i`).
#[inline(always)]
fn finish_residual(
    cols: &[i32],
    vals: &[f32],
    y: &[f32],
    f: usize,
    alpha: f32,
    x: &[f32],
    r: &mut [f32],
) {
    r.iter_mut().for_each(|v| *v = -*v);
    add_entries(cols, vals, y, f, x, r, |w, d| {
        let c = 1.0 + alpha * w;
        c - (c - 1.0) * d
    });
}

/// `ap = A dir` once `ap` holds `(G + extra I) dir`: the row's entries added.
#[inline(always)]
fn finish_product(
    cols: &[i32],
    vals: &[f32],
    y: &[f32],
    f: usize,
    alpha: f32,
    dir: &[f32],
    ap: &mut [f32],
) {
    add_entries(cols, vals, y, f, dir, ap, |w, d| alpha * w * d);
}

/// One CG step of a row once `ap = A dir`: `x += s dir`, `r -= s ap`, `dir = r + beta dir`.
/// The new squared residual, or `None` (nothing changed) when `A` is not positive along `dir`.
#[inline(always)]
fn cg_step(x: &mut [f32], r: &mut [f32], dir: &mut [f32], ap: &[f32], rs_old: f32) -> Option<f32> {
    let denom = dot(dir, ap);
    if denom <= 0.0 || !denom.is_finite() {
        return None;
    }
    let step = rs_old / denom;
    axpy(x, step, dir);
    axpy(r, -step, ap);
    let rs_new = dot(r, r);
    let beta = rs_new / rs_old;
    for (d, &rv) in dir.iter_mut().zip(r.iter()) {
        *d = rv + beta * *d;
    }
    Some(rs_new)
}

/// `solve_row` for `BLOCK` rows at once, with the same bits for each: the rows' CG runs go
/// step by step together so that each product by `G` serves all of them (`gram_rows`); a row
/// whose run has stopped is carried along and left as it is. `p.extra` is not used: row `k`
/// adds `extras[k]` to the diagonal.
#[allow(clippy::too_many_arguments)]
fn solve_rows(
    rows: &[(&[i32], &[f32]); BLOCK],
    extras: &[f32; BLOCK],
    xs: &mut [f32],
    y: &[f32],
    g: &PaddedGram,
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::dense::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked just above)
        return unsafe { solve_rows_avx2(rows, extras, xs, y, g, f, p, buf) };
    }
    solve_rows_impl(rows, extras, xs, y, g, f, p, buf)
}

/// `solve_rows` compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn solve_rows_avx2(
    rows: &[(&[i32], &[f32]); BLOCK],
    extras: &[f32; BLOCK],
    xs: &mut [f32],
    y: &[f32],
    g: &PaddedGram,
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    solve_rows_impl(rows, extras, xs, y, g, f, p, buf)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn solve_rows_impl(
    rows: &[(&[i32], &[f32]); BLOCK],
    extras: &[f32; BLOCK],
    xs: &mut [f32],
    y: &[f32],
    g: &PaddedGram,
    f: usize,
    p: &Cg,
    buf: &mut [f32],
) {
    // r, dir and ap hold their rows `g.stride` apart, as `gram_rows` writes them
    let sp = g.stride;
    let (r, rest) = buf.split_at_mut(BLOCK * sp);
    let (dir, rest) = rest.split_at_mut(BLOCK * sp);
    let (ap, vt) = rest.split_at_mut(BLOCK * sp);
    let vt = &mut vt[..BLOCK * f];
    let span = |k: usize| k * f..(k + 1) * f;
    let padded = |k: usize| k * sp..k * sp + f;
    // r = b - A x, row by row as in `solve_row_impl`
    gram_rows(g, f, xs, f, r, vt);
    let mut rs_old = [0f32; BLOCK];
    for (k, &(cols, vals)) in rows.iter().enumerate() {
        let (rk, xk) = (&mut r[padded(k)], &xs[span(k)]);
        if extras[k] != 0.0 {
            axpy(rk, extras[k], xk);
        }
        finish_residual(cols, vals, y, f, p.alpha, xk, rk);
        rs_old[k] = dot(rk, rk);
    }
    dir.copy_from_slice(r);
    let mut running = [true; BLOCK];
    for _ in 0..p.steps {
        for (run, &rs) in running.iter_mut().zip(&rs_old) {
            *run &= rs >= p.stop;
        }
        if !running.contains(&true) {
            break;
        }
        gram_rows(g, f, dir, sp, ap, vt);
        for (k, &(cols, vals)) in rows.iter().enumerate() {
            if !running[k] {
                continue;
            }
            let (dk, apk) = (&mut dir[padded(k)], &mut ap[padded(k)]);
            if extras[k] != 0.0 {
                axpy(apk, extras[k], dk);
            }
            finish_product(cols, vals, y, f, p.alpha, dk, apk);
            let rk = &mut r[padded(k)];
            match cg_step(&mut xs[span(k)], rk, dk, apk, rs_old[k]) {
                Some(rs_new) => rs_old[k] = rs_new,
                None => running[k] = false,
            }
        }
    }
}

/// Relative residual at which fold-in's CG stops: f32 arithmetic stalls not far below it.
const FOLD_IN_TOL: f64 = 1e-5;

/// Fold-in: the factor row of one history (`cols`, `vals`: weights already transformed)
/// against fixed `y` (n_cols x f), solving the user half-step's normal equations
/// `(YᵀY + reg_u I + Σ alpha w_i y_i y_iᵀ) x = Σ (1 + alpha w_i) y_i`,
/// `reg_u = reg * max(n, 1)^reg_exponent`, by CG from 0 until the residual is `FOLD_IN_TOL`
/// of the right-hand side or after `params.cg_steps` steps. `yty` is `YᵀY` (f x f, row-major,
/// without reg), computed once per model by the caller: rebuilding it is the n_cols x f^2
/// part of a half-step, and one row needs only O((f + n) f) per step.
pub fn solve_one(
    cols: &[i32],
    vals: &[f32],
    y: &[f32],
    yty: &[f32],
    f: usize,
    params: &AlsParams,
) -> Result<Vec<f32>> {
    if f == 0 || y.len() % f != 0 {
        return Err(CoreError::arg(format!(
            "y has {} values, not a multiple of {f} factors (at least 1)",
            y.len()
        )));
    }
    if yty.len() != f * f {
        return Err(CoreError::arg(format!(
            "yty must be {f}x{f}, got {} values",
            yty.len()
        )));
    }
    if cols.len() != vals.len() {
        return Err(CoreError::arg(format!(
            "{} indices but {} values",
            cols.len(),
            vals.len()
        )));
    }
    check_params(params)?;
    let n_cols = y.len() / f;
    if let Some(&i) = cols.iter().find(|&&i| i < 0 || i as usize >= n_cols) {
        return Err(CoreError::arg(format!(
            "index {i} out of range for {n_cols} items"
        )));
    }
    if let Some(pos) = vals.iter().position(|v| !v.is_finite()) {
        return Err(CoreError::NonFinite {
            name: "data".to_string(),
            pos,
            row: 0,
            value: vals[pos],
        });
    }
    let reg_u = params.reg as f64 * (cols.len().max(1) as f64).powf(params.reg_exponent as f64);
    // |b|² sets the stop; b = Σ (1 + alpha w_i) y_i is the residual of x = 0
    let mut b = vec![0f32; f];
    for (&i, &w) in cols.iter().zip(vals) {
        axpy(
            &mut b,
            1.0 + params.alpha * w,
            &y[i as usize * f..(i as usize + 1) * f],
        );
    }
    let bb = dot(&b, &b) as f64;
    let cg = Cg {
        alpha: params.alpha,
        extra: reg_u as f32,
        steps: params.cg_steps,
        stop: (bb * FOLD_IN_TOL * FOLD_IN_TOL).max(1e-20) as f32,
        symmetric: false,
    };
    let mut x = vec![0f32; f];
    let mut buf = vec![0f32; 3 * f];
    solve_row(cols, vals, &mut x, y, yty, f, &cg, &mut buf);
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact solution of one row's normal equations by Gaussian elimination (f64).
    fn exact_row(cols: &[i32], vals: &[f32], y: &[f32], f: usize, p: &AlsParams) -> Vec<f64> {
        let g = gram(y, f, 0.0, None).unwrap();
        let mut a: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let reg_u = p.reg as f64 * (cols.len().max(1) as f64).powf(p.reg_exponent as f64);
        for s in 0..f {
            a[s * f + s] += reg_u;
        }
        let mut b = vec![0f64; f];
        for (&i, &w) in cols.iter().zip(vals) {
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            let c = 1.0 + p.alpha as f64 * w as f64;
            for s in 0..f {
                b[s] += c * yi[s] as f64;
                for t in 0..f {
                    a[s * f + t] += (c - 1.0) * yi[s] as f64 * yi[t] as f64;
                }
            }
        }
        for col in 0..f {
            let piv = a[col * f + col];
            for row in 0..f {
                if row != col {
                    let m = a[row * f + col] / piv;
                    for t in 0..f {
                        a[row * f + t] -= m * a[col * f + t];
                    }
                    b[row] -= m * b[col];
                }
            }
        }
        (0..f).map(|s| b[s] / a[s * f + s]).collect()
    }

    /// Pseudo-random values in [-1, 1), some exactly 0 (as factors can be).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                if (s >> 20) % 17 == 0 {
                    0.0
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn faster_forms_give_the_same_bits() {
        for f in [1usize, 5, 8, 33, 64] {
            let n = 1200;
            let y = values(n * f, f as u64);
            // the gram: one thread, the default pool, and the plain triangle loop
            let one = gram(&y, f, 0.5, Some(1)).unwrap();
            let many = gram(&y, f, 0.5, Some(3)).unwrap();
            let mut plain = vec![0f64; f * f];
            for row in y.chunks_exact(f) {
                for a in 0..f {
                    let ra = row[a] as f64;
                    if ra == 0.0 {
                        continue;
                    }
                    for b in a..f {
                        plain[a * f + b] += ra * row[b] as f64;
                    }
                }
            }
            for a in 0..f {
                plain[a * f + a] += 0.5;
                for b in 0..a {
                    plain[a * f + b] = plain[b * f + a];
                }
            }
            let plain: Vec<f32> = plain.into_iter().map(|v| v as f32).collect();
            assert_eq!(bits(&one), bits(&plain), "f {f}");
            assert_eq!(bits(&many), bits(&plain), "f {f}");
            // G v row by row and column by column
            let v = values(f, 99);
            let (mut a, mut b) = (vec![0f32; f], vec![0f32; f]);
            for extra in [0.0f32, 0.25] {
                gram_times(&one, f, extra, &v, &mut a);
                sym_gram_times(&one, f, extra, &v, &mut b);
                assert_eq!(bits(&a), bits(&b), "f {f} extra {extra}");
            }
            // dots of a row's entries, a full set and a remainder
            let cols: Vec<i32> = (0..11).map(|j| (j * 7 % n) as i32).collect();
            for c in [&cols[..8], &cols[8..]] {
                let mut d = [0f32; LANES];
                dots(&y, f, c, &v, &mut d);
                for (j, &i) in c.iter().enumerate() {
                    let want = dot(&y[i as usize * f..(i as usize + 1) * f], &v);
                    assert_eq!(d[j].to_bits(), want.to_bits());
                }
            }
            // a whole row's solve, with and without the AVX2 build
            let vals = values(cols.len(), 5)
                .iter()
                .map(|v| v.abs() * 3.0)
                .collect::<Vec<_>>();
            let cg = Cg {
                alpha: 2.0,
                extra: 0.3,
                steps: 3,
                stop: 1e-20,
                symmetric: true,
            };
            let mut x1 = values(f, 7);
            let mut x2 = x1.clone();
            let mut buf = vec![0f32; 3 * f];
            solve_row(&cols, &vals, &mut x1, &y, &one, f, &cg, &mut buf);
            solve_row_impl(&cols, &vals, &mut x2, &y, &one, f, &cg, &mut buf);
            assert_eq!(bits(&x1), bits(&x2), "f {f}");
            let mut x3 = values(f, 7);
            let plain_cg = Cg {
                symmetric: false,
                ..cg
            };
            solve_row_impl(&cols, &vals, &mut x3, &y, &one, f, &plain_cg, &mut buf);
            assert_eq!(bits(&x1), bits(&x3), "f {f}");
        }
    }

    #[test]
    fn rows_solved_together_give_each_rows_bits() {
        let n = 300;
        for f in [1usize, 5, 12, 16, 33, 100, 128] {
            let y = values(n * f, f as u64 + 1);
            let g = gram(&y, f, 0.5, Some(1)).unwrap();
            // rows of 11, 0 (from 0: stops before its first step), 3, 9, ... entries
            let lens: [usize; BLOCK] = std::array::from_fn(|k| [11, 0, 3, 9][k % 4] + k / 4);
            let cols: Vec<Vec<i32>> = lens
                .iter()
                .enumerate()
                .map(|(k, &m)| (0..m).map(|j| ((j * 13 + k * 7) % n) as i32).collect())
                .collect();
            let vals: Vec<Vec<f32>> = lens
                .iter()
                .enumerate()
                .map(|(k, &m)| values(m, k as u64).iter().map(|v| v.abs() * 4.0).collect())
                .collect();
            let rows: [(&[i32], &[f32]); BLOCK] =
                std::array::from_fn(|k| (&cols[k][..], &vals[k][..]));
            let extras: [f32; BLOCK] = std::array::from_fn(|k| [0.0, 0.2, 0.0, 1.5][k % 4]);
            let mut start = values(BLOCK * f, 3);
            start[f..2 * f].fill(0.0);
            for steps in [0usize, 1, 3, 8] {
                let cg = |extra| Cg {
                    alpha: 2.0,
                    extra,
                    steps,
                    stop: CG_STOP,
                    symmetric: true,
                };
                let mut together = start.clone();
                let mut buf = vec![0f32; BLOCK * (3 * PaddedGram::stride_for(f) + f)];
                let padded = PaddedGram::new(&g, f);
                solve_rows(
                    &rows,
                    &extras,
                    &mut together,
                    &y,
                    &padded,
                    f,
                    &cg(0.0),
                    &mut buf,
                );
                let mut plain = start.clone();
                solve_rows_impl(
                    &rows,
                    &extras,
                    &mut plain,
                    &y,
                    &padded,
                    f,
                    &cg(0.0),
                    &mut buf,
                );
                assert_eq!(bits(&together), bits(&plain), "f {f} steps {steps}");
                for (k, &(c, v)) in rows.iter().enumerate() {
                    let mut alone = start[k * f..(k + 1) * f].to_vec();
                    solve_row(c, v, &mut alone, &y, &g, f, &cg(extras[k]), &mut buf);
                    let got = &together[k * f..(k + 1) * f];
                    assert_eq!(bits(got), bits(&alone), "f {f} steps {steps} row {k}");
                }
            }
        }
    }

    #[test]
    fn half_step_gives_each_rows_one_row_solve() {
        // 7 rows: a block of four, then a short block of three filled up with empty rows
        let n_items = 40;
        let lens = [6usize, 0, 2, 9, 1, 4, 12];
        let (mut p, mut i, mut d) = (vec![0i64], vec![], vec![]);
        for (u, &m) in lens.iter().enumerate() {
            let mut cols: Vec<i32> = (0..m)
                .map(|j| ((j * 11 + u * 5) % n_items) as i32)
                .collect();
            cols.sort();
            d.extend(cols.iter().map(|&c| 1.0 + (c % 4) as f32));
            i.extend(cols);
            p.push(i.len() as i64);
        }
        let r = CsrRef::new("r", lens.len(), n_items, &p, &i, &d).unwrap();
        let params = AlsParams {
            alpha: 2.0,
            reg: 0.5,
            reg_exponent: 0.5,
            cg_steps: 3,
        };
        for f in [1usize, 5, 33, 100] {
            let y = values(n_items * f, f as u64 + 7);
            let start = values(lens.len() * f, 5);
            let mut got = start.clone();
            half_step(r, &mut got, &y, f, &params, Some(2)).unwrap();
            let g = gram_matrix(&y, f, params.reg).unwrap();
            let mut buf = vec![0f32; 3 * f];
            for u in 0..lens.len() {
                let (cols, vals) = r.row(u);
                let cg = Cg {
                    alpha: params.alpha,
                    extra: params.extra_reg(cols.len()),
                    steps: params.cg_steps,
                    stop: CG_STOP,
                    symmetric: true,
                };
                let mut alone = start[u * f..(u + 1) * f].to_vec();
                solve_row(cols, vals, &mut alone, &y, &g, f, &cg, &mut buf);
                assert_eq!(
                    bits(&got[u * f..(u + 1) * f]),
                    bits(&alone),
                    "f {f} row {u}"
                );
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn cg_converges_to_the_exact_row_solution() {
        let f = 4;
        let n_items = 6;
        let y: Vec<f32> = (0..n_items * f)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        // rows of 3, 0, 2 and 1 entries
        let p = [0i64, 3, 3, 5, 6];
        let i = [0i32, 2, 5, 1, 4, 3];
        let d = [1.0f32, 3.0, 2.0, 1.0, 5.0, 2.0];
        let r = CsrRef::new("r", 4, n_items, &p, &i, &d).unwrap();
        for reg_exponent in [0.0f32, 0.5, 1.0] {
            let params = AlsParams {
                alpha: 2.0,
                reg: 0.1,
                reg_exponent,
                cg_steps: 20,
            };
            let mut x = vec![0.1f32; 4 * f];
            half_step(r, &mut x, &y, f, &params, Some(2)).unwrap();
            for u in 0..4 {
                let (cols, vals) = r.row(u);
                let want = exact_row(cols, vals, &y, f, &params);
                for s in 0..f {
                    assert!(
                        (x[u * f + s] as f64 - want[s]).abs() < 1e-4,
                        "nu {reg_exponent} user {u}: {:?} vs {want:?}",
                        &x[u * f..(u + 1) * f]
                    );
                }
            }
            // An empty row solves (YᵀY + reg I) x = 0.
            assert!(x[f..2 * f].iter().all(|v| v.abs() < 1e-4));
        }
    }

    #[test]
    fn frequency_scaling_shrinks_busy_rows_only() {
        let f = 3;
        let n_items = 5;
        let y: Vec<f32> = (0..n_items * f)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) / 9.0)
            .collect();
        // a row of 4 entries and a row of 1
        let p = [0i64, 4, 5];
        let i = [0i32, 1, 3, 4, 2];
        let d = [1.0f32, 2.0, 1.0, 3.0, 1.0];
        let r = CsrRef::new("r", 2, n_items, &p, &i, &d).unwrap();
        let solve = |reg_exponent: f32| {
            let params = AlsParams {
                alpha: 1.0,
                reg: 2.0,
                reg_exponent,
                cg_steps: 3,
            };
            let mut x = vec![0.0f32; 2 * f];
            half_step(r, &mut x, &y, f, &params, Some(1)).unwrap();
            x
        };
        let (flat, half, full) = (solve(0.0), solve(0.5), solve(1.0));
        // a one-entry row's reg is reg * 1^nu = reg: the same bits whatever the exponent
        assert_eq!(flat[f..], half[f..]);
        assert_eq!(flat[f..], full[f..]);
        // the 4-entry row is regularised 2x (nu 0.5) and 4x (nu 1) harder: a smaller norm
        let norm = |x: &[f32]| dot(&x[..f], &x[..f]);
        assert!(norm(&full) < norm(&half) && norm(&half) < norm(&flat));
    }

    #[test]
    fn row_blocks_with_a_given_gram_equal_the_whole_half_step() {
        let (f, n_items) = (3, 5);
        let y: Vec<f32> = (0..n_items * f)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let p = [0i64, 2, 4, 5, 5, 8];
        let i = [0i32, 3, 1, 2, 4, 0, 1, 2];
        let d = [1.0f32, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 5.0];
        let r = CsrRef::new("r", 5, n_items, &p, &i, &d).unwrap();
        let params = AlsParams {
            alpha: 2.0,
            reg: 0.5,
            reg_exponent: 0.5,
            cg_steps: 3,
        };
        let start: Vec<f32> = (0..5 * f).map(|v| v as f32 / 50.0).collect();
        let mut whole = start.clone();
        half_step(r, &mut whole, &y, f, &params, Some(2)).unwrap();
        let g = gram_matrix(&y, f, params.reg).unwrap();
        let mut blocks = start.clone();
        for (lo, hi) in [(0usize, 2usize), (2, 5)] {
            let (a, z) = (p[lo] as usize, p[hi] as usize);
            let sub: Vec<i64> = p[lo..=hi].iter().map(|v| v - p[lo]).collect();
            let rb = CsrRef::new("rb", hi - lo, n_items, &sub, &i[a..z], &d[a..z]).unwrap();
            let xb = &mut blocks[lo * f..hi * f];
            half_step_with_gram(rb, xb, &y, Some(&g), f, &params, Some(1)).unwrap();
        }
        assert_eq!(whole, blocks);
        assert!(half_step_with_gram(r, &mut blocks, &y, Some(&g[..4]), f, &params, None).is_err());
        assert!(gram_matrix(&y[..4], f, 0.1).is_err());
        assert!(gram_matrix(&y, f, f32::NAN).is_err());
    }

    #[test]
    fn rejects_bad_shapes_and_params() {
        let p = [0i64, 0];
        let r = CsrRef::new("r", 1, 2, &p, &[], &[]).unwrap();
        let params = AlsParams {
            alpha: 1.0,
            reg: 0.1,
            reg_exponent: 0.0,
            cg_steps: 3,
        };
        assert!(half_step(r, &mut [0.0; 3], &[0.0; 4], 2, &params, None).is_err());
        let bad = AlsParams {
            reg: f32::NAN,
            ..params
        };
        assert!(half_step(r, &mut [0.0; 2], &[0.0; 4], 2, &bad, None).is_err());
        for reg_exponent in [-0.1, 1.5, f32::NAN, f32::INFINITY] {
            let bad = AlsParams {
                reg_exponent,
                ..params
            };
            assert!(half_step(r, &mut [0.0; 2], &[0.0; 4], 2, &bad, None).is_err());
        }
    }

    #[test]
    fn fold_in_solves_the_rows_normal_equations() {
        let f = 5;
        let n_items = 9;
        let y: Vec<f32> = (0..n_items * f)
            .map(|i| ((i * 41 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let yty = gram(&y, f, 0.0, None).unwrap();
        let cols = [1i32, 4, 6, 8];
        let vals = [2.0f32, 1.0, 0.5, 3.0];
        for reg_exponent in [0.0f32, 0.5, 1.0] {
            let p = AlsParams {
                alpha: 2.0,
                reg: 0.3,
                reg_exponent,
                cg_steps: 50,
            };
            let x = solve_one(&cols, &vals, &y, &yty, f, &p).unwrap();
            let want = exact_row(&cols, &vals, &y, f, &p);
            for s in 0..f {
                assert!(
                    (x[s] as f64 - want[s]).abs() < 1e-4,
                    "nu {reg_exponent}: {x:?} vs {want:?}"
                );
            }
            // the same row through a converged half-step gives the same vector
            let indptr = [0i64, cols.len() as i64];
            let r = CsrRef::new("r", 1, n_items, &indptr, &cols, &vals).unwrap();
            let mut xh = vec![0f32; f];
            half_step(r, &mut xh, &y, f, &p, Some(1)).unwrap();
            for s in 0..f {
                assert!((x[s] - xh[s]).abs() < 1e-4, "{x:?} vs half-step {xh:?}");
            }
        }
        // an empty history solves (YᵀY + reg I) x = 0
        let p = AlsParams {
            alpha: 2.0,
            reg: 0.3,
            reg_exponent: 0.0,
            cg_steps: 50,
        };
        assert_eq!(solve_one(&[], &[], &y, &yty, f, &p).unwrap(), vec![0.0; f]);
    }

    #[test]
    fn fold_in_rejects_bad_input() {
        let (f, y) = (2, [0.5f32, 1.0, -1.0, 0.25]);
        let yty = gram(&y, f, 0.0, None).unwrap();
        let p = AlsParams {
            alpha: 1.0,
            reg: 0.1,
            reg_exponent: 0.0,
            cg_steps: 10,
        };
        assert!(solve_one(&[0], &[1.0], &y, &yty, f, &p).is_ok());
        assert!(solve_one(&[2], &[1.0], &y, &yty, f, &p).is_err()); // item out of range
        assert!(solve_one(&[-1], &[1.0], &y, &yty, f, &p).is_err());
        assert!(solve_one(&[0, 1], &[1.0], &y, &yty, f, &p).is_err()); // lengths differ
        assert!(solve_one(&[0], &[f32::NAN], &y, &yty, f, &p).is_err());
        assert!(solve_one(&[0], &[1.0], &y, &yty[..3], f, &p).is_err()); // yty not f x f
        assert!(solve_one(&[0], &[1.0], &y[..3], &yty, f, &p).is_err()); // y not n x f
        let bad = AlsParams { alpha: -1.0, ..p };
        assert!(solve_one(&[0], &[1.0], &y, &yty, f, &bad).is_err());
    }
}
