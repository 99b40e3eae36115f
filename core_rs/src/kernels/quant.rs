//! 4-bit product quantisation in the fast-scan layout (André et al., VLDB 2015; faiss "PQ4 fast
//! scan"): codebooks, encoding, per-query lookup tables and the block scan.
//!
//! Each item is cut into `m` sub-vectors of `DSUB` dimensions; each sub-vector is replaced by
//! the index (4 bits) of its nearest of 16 centroids. Items are stored in blocks of 32: byte
//! `p * 32 + i` of a block holds item `i`'s codes for sub-quantisers `2p` (low nibble) and
//! `2p + 1` (high nibble). A query's inner product with every centroid, quantised to u8, fits
//! one 16-byte table per sub-quantiser, so one `pshufb` looks up 32 items at once. Sums are
//! exact integers (u16, bounded below 2^15), so the AVX2 and scalar scans agree bit for bit.
//!
//! The codes hold each item's direction `x / |x|`; its norm is kept apart (one f32) and
//! multiplies the direction's approximate score. Factors from ALS have long-tailed norms
//! (popularity): coding raw vectors spends the 16 centroids on the small-norm bulk and clips
//! the popular items that make most top-10s (recall@10 0.84 at R = 256 on the benchmark's
//! factors, against 0.997 coding directions). Items are kept in decreasing norm within a run,
//! so a scan stops as soon as no remaining norm can beat the R-th score.

use super::filters::Filters;
use super::topk::{Entry, TopK};
use rayon::prelude::*;
use std::ops::Range;

/// Dimensions per sub-quantiser: 2 keeps recall@10 after rerank high on ALS-like factors at
/// 16 bytes per item for 64 factors (a quarter of the int8 stream).
pub const DSUB: usize = 2;
/// Items per code block (one AVX2 register of nibble pairs).
pub const BLOCK: usize = 32;
const KSUB: usize = 16;
/// Training sample of the codebooks; 2-d k-means with 16 centres converges on far fewer.
const PQ_SAMPLE: usize = 65_536;
const PQ_ITERS: usize = 20;

/// SplitMix64: small, seeded and the same on every platform.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// `min(n, want)` distinct row indices, sorted, chosen with `rng` (all rows when n <= want).
pub fn sample_rows(n: usize, want: usize, rng: &mut Rng) -> Vec<usize> {
    if n <= want {
        return (0..n).collect();
    }
    // Floyd's algorithm: exactly `want` distinct picks without an n-sized buffer.
    let mut picked = std::collections::HashSet::with_capacity(want);
    for j in n - want..n {
        let t = rng.below(j + 1);
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    let mut v: Vec<usize> = picked.into_iter().collect();
    v.sort_unstable();
    v
}

/// A 64-bit hash of bytes, four independent multiply-rotate lanes (xxh64-like). Not
/// cryptographic: it catches corruption and mismatched inputs, which is all it is for.
pub fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut lanes = [
        seed.wrapping_add(P1).wrapping_add(P2),
        seed.wrapping_add(P2),
        seed,
        seed.wrapping_sub(P1),
    ];
    let chunks = data.chunks_exact(32);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[l * 8..l * 8 + 8].try_into().unwrap());
            *lane = lane
                .wrapping_add(w.wrapping_mul(P2))
                .rotate_left(31)
                .wrapping_mul(P1);
        }
    }
    let mut h = lanes[0].rotate_left(1)
        ^ lanes[1].rotate_left(7)
        ^ lanes[2].rotate_left(12)
        ^ lanes[3].rotate_left(18);
    h = h.wrapping_add(data.len() as u64);
    for &b in rest {
        h = (h ^ b as u64).wrapping_mul(P1).rotate_left(11);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^ (h >> 32)
}

/// The bytes of a float slice (little-endian on the platforms this builds for).
pub fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// The 16 centroids of every sub-quantiser.
#[derive(Clone, Debug, PartialEq)]
pub struct Codebook {
    pub dim: usize,
    /// Sub-quantisers, rounded up to even (a padding one has all-zero centroids).
    pub m: usize,
    /// `m * 16 * DSUB` values: sub-quantiser `s`, centroid `c` at `(s * 16 + c) * DSUB`.
    pub centroids: Vec<f32>,
}

/// Sub-quantiser `s`'s part of `x` (zero beyond `dim`), times `inv`.
#[inline(always)]
fn sub(x: &[f32], s: usize, inv: f32) -> [f32; DSUB] {
    let mut out = [0f32; DSUB];
    for (t, o) in out.iter_mut().enumerate() {
        if let Some(&v) = x.get(s * DSUB + t) {
            *o = v * inv;
        }
    }
    out
}

/// The Euclidean norm of `x`.
pub fn norm(x: &[f32]) -> f32 {
    x.iter().map(|&v| v * v).sum::<f32>().sqrt()
}

/// `1 / |x|`, 0 for a zero vector: the codes hold directions, the norms are kept apart.
fn inv_norm(x: &[f32]) -> f32 {
    let n = norm(x);
    if n > 0.0 {
        1.0 / n
    } else {
        0.0
    }
}

#[inline(always)]
fn dist2(a: &[f32; DSUB], b: &[f32]) -> f32 {
    let mut d = 0f32;
    for t in 0..DSUB {
        let e = a[t] - b[t];
        d += e * e;
    }
    d
}

impl Codebook {
    pub fn n_subs(dim: usize) -> usize {
        dim.div_ceil(DSUB).next_multiple_of(2)
    }

    /// k-means (Lloyd, `PQ_ITERS` rounds, seeded) per sub-quantiser on a sample of the rows'
    /// directions (`x / |x|`); run inside the caller's pool.
    pub fn train(f: &[f32], n: usize, dim: usize, seed: u64) -> Codebook {
        let m = Self::n_subs(dim);
        let rows = sample_rows(n, PQ_SAMPLE, &mut Rng::new(seed));
        let centroids: Vec<f32> = (0..m)
            .into_par_iter()
            .flat_map_iter(|s| {
                let pts: Vec<[f32; DSUB]> = rows
                    .iter()
                    .map(|&r| {
                        let x = &f[r * dim..(r + 1) * dim];
                        sub(x, s, inv_norm(x))
                    })
                    .collect();
                kmeans_small(&pts, seed.wrapping_add(s as u64 + 1))
            })
            .collect();
        Codebook { dim, m, centroids }
    }

    #[inline(always)]
    fn nearest(&self, s: usize, x: &[f32; DSUB]) -> u8 {
        let c = &self.centroids[s * KSUB * DSUB..(s + 1) * KSUB * DSUB];
        let mut best = (f32::INFINITY, 0u8);
        for k in 0..KSUB {
            let d = dist2(x, &c[k * DSUB..(k + 1) * DSUB]);
            if d < best.0 {
                best = (d, k as u8);
            }
        }
        best.1
    }

    /// Fast-scan blocks of the rows' directions, item `i` of block `b` being `ids[b * 32 + i]`
    /// (`None` for padding, coded 0); run inside the caller's pool.
    pub fn encode_blocks(&self, f: &[f32], ids: &[Option<u32>]) -> Vec<u8> {
        let bb = self.block_bytes();
        let mut codes = vec![0u8; ids.len().div_ceil(BLOCK) * bb];
        codes
            .par_chunks_mut(bb)
            .zip(ids.par_chunks(BLOCK))
            .with_min_len(64)
            .for_each(|(block, bids)| {
                for (i, id) in bids.iter().enumerate() {
                    let Some(j) = *id else { continue };
                    let x = &f[j as usize * self.dim..(j as usize + 1) * self.dim];
                    let inv = inv_norm(x);
                    for p in 0..self.m / 2 {
                        let lo = self.nearest(2 * p, &sub(x, 2 * p, inv));
                        let hi = self.nearest(2 * p + 1, &sub(x, 2 * p + 1, inv));
                        block[p * BLOCK + i] = lo | (hi << 4);
                    }
                }
            });
        codes
    }

    /// The largest norm of a coded direction (the centroids its codes pick, put together).
    pub fn max_decoded_norm(&self, codes: &[u8]) -> f32 {
        let sq: Vec<f32> = self
            .centroids
            .chunks(DSUB)
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect();
        let bb = self.block_bytes();
        codes
            .par_chunks(bb)
            .with_min_len(64)
            .map(|block| {
                let mut best = 0f32;
                for i in 0..BLOCK {
                    let mut s = 0f32;
                    for p in 0..self.m / 2 {
                        let b = block[p * BLOCK + i];
                        s += sq[2 * p * KSUB + (b & 15) as usize]
                            + sq[(2 * p + 1) * KSUB + (b >> 4) as usize];
                    }
                    best = best.max(s);
                }
                best
            })
            .reduce(|| 0f32, f32::max)
            .sqrt()
    }

    pub fn block_bytes(&self) -> usize {
        self.m / 2 * BLOCK
    }

    /// The query's lookup tables, quantised to u8.
    pub fn lut(&self, q: &[f32]) -> Lut {
        let mut raw = vec![0f32; self.m * KSUB];
        for s in 0..self.m {
            let qs = sub(q, s, 1.0);
            for k in 0..KSUB {
                let c = &self.centroids[(s * KSUB + k) * DSUB..(s * KSUB + k + 1) * DSUB];
                raw[s * KSUB + k] = (0..DSUB).map(|t| qs[t] * c[t]).sum();
            }
        }
        let mut bias = 0f32;
        let mut span = 0f32;
        let mins: Vec<f32> = raw
            .chunks(KSUB)
            .map(|t| {
                let lo = t.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = t.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                span = span.max(hi - lo);
                bias += lo;
                lo
            })
            .collect();
        // Sums stay below 2^15, so signed 16-bit compares work and nothing wraps.
        let top = (255usize).min(32_767 / self.m.max(1)) as f32;
        let scale = if span > 0.0 { top / span } else { 1.0 };
        let mut table = vec![0u8; self.m * 32];
        for s in 0..self.m {
            for k in 0..KSUB {
                let v = ((raw[s * KSUB + k] - mins[s]) * scale)
                    .round()
                    .clamp(0.0, top) as u8;
                // Both 128-bit lanes carry the table: pshufb looks up within a lane.
                table[s * 32 + k] = v;
                table[s * 32 + 16 + k] = v;
            }
        }
        let max_sum = (0..self.m)
            .map(|s| *table[s * 32..s * 32 + 16].iter().max().unwrap_or(&0) as u16)
            .sum();
        let mut lut = Lut {
            table,
            max_sum,
            umax: 0.0,
            scale,
            bias,
        };
        lut.umax = lut.value(max_sum);
        lut
    }
}

/// Lloyd's k-means with 16 centres on 2-d points; an emptied centre restarts at the point
/// farthest from its centre.
fn kmeans_small(pts: &[[f32; DSUB]], seed: u64) -> Vec<f32> {
    let mut cent = vec![0f32; KSUB * DSUB];
    if pts.is_empty() {
        return cent;
    }
    let mut rng = Rng::new(seed);
    let init = sample_rows(pts.len(), KSUB, &mut rng);
    for k in 0..KSUB {
        let p = pts[init[k % init.len()]];
        cent[k * DSUB..(k + 1) * DSUB].copy_from_slice(&p);
    }
    let mut assign = vec![0usize; pts.len()];
    for _ in 0..PQ_ITERS {
        let mut sums = [[0f64; DSUB]; KSUB];
        let mut counts = [0usize; KSUB];
        let mut far = (0f32, 0usize);
        for (i, p) in pts.iter().enumerate() {
            let mut best = (f32::INFINITY, 0usize);
            for k in 0..KSUB {
                let d = dist2(p, &cent[k * DSUB..(k + 1) * DSUB]);
                if d < best.0 {
                    best = (d, k);
                }
            }
            assign[i] = best.1;
            counts[best.1] += 1;
            for t in 0..DSUB {
                sums[best.1][t] += p[t] as f64;
            }
            if best.0 > far.0 {
                far = (best.0, i);
            }
        }
        for k in 0..KSUB {
            if counts[k] > 0 {
                for t in 0..DSUB {
                    cent[k * DSUB + t] = (sums[k][t] / counts[k] as f64) as f32;
                }
            } else {
                cent[k * DSUB..(k + 1) * DSUB].copy_from_slice(&pts[far.1]);
                far.0 = 0.0;
            }
        }
    }
    cent
}

/// A query's quantised tables: approximate score = `sum / scale + bias`.
pub struct Lut {
    /// `m` rows of 32 bytes (the 16 entries twice).
    pub table: Vec<u8>,
    /// The largest sum any code can reach.
    pub max_sum: u16,
    /// An upper bound on `value(sum)` over the coded items (see `cap`).
    pub umax: f32,
    pub scale: f32,
    pub bias: f32,
}

impl Lut {
    /// Tightens `umax` with `cap`, an upper bound on `q . x'` over the coded directions `x'`
    /// (|q| times their largest norm): each table entry is rounded by at most half a step.
    pub fn cap(&mut self, cap: f32, m: usize) {
        self.umax = self.umax.min(cap + m as f32 * 0.5 / self.scale);
    }

    /// The approximate inner product a u16 sum stands for.
    pub fn value(&self, sum: u16) -> f32 {
        sum as f32 / self.scale + self.bias
    }
}

/// Where the code positions' items are: `ids[p]` is the item at position `p` (`u32::MAX` pads
/// a run's last block), `norms[p]` its norm, `bmax[b]` the largest norm of block `b`. Within a
/// scanned run, positions are sorted by decreasing norm.
#[derive(Clone, Copy)]
pub struct Layout<'a> {
    pub ids: &'a [u32],
    pub norms: &'a [f32],
    pub bmax: &'a [f32],
    /// `1 / bmax[b]` (0 for a block of zero norms).
    pub binv: &'a [f32],
}

/// The approximate top-R of a scan, with every filter applied as candidates arrive. The
/// approximate score of the item at position `p` is `norms[p] * lut.value(sum)`.
pub struct Collector<'a> {
    pub top: TopK,
    lay: Layout<'a>,
    deny: Option<&'a [u8]>,
    filt: &'a Filters<'a>,
    scale: f32,
    bias: f32,
    /// The largest `lut.value(sum)` any code can reach.
    umax: f32,
    bar: f32,
}

impl<'a> Collector<'a> {
    pub fn new(
        r: usize,
        lay: Layout<'a>,
        lut: &Lut,
        deny: Option<&'a [u8]>,
        filt: &'a Filters<'a>,
    ) -> Self {
        Collector {
            top: TopK::new(r),
            lay,
            deny,
            filt,
            scale: lut.scale,
            bias: lut.bias,
            umax: lut.umax,
            bar: f32::NEG_INFINITY,
        }
    }

    /// Starts from entries another scan found (each passed the filters already).
    pub fn seed(&mut self, entries: &[Entry]) {
        for &e in entries {
            self.top.push(e);
        }
        if let Some(w) = self.top.worst() {
            self.bar = w.score;
        }
    }

    /// The smallest sum an item of block `b` needs to enter, or None when no item of this
    /// block, nor of any later block of the run (norms decrease), can enter.
    #[inline(always)]
    pub fn block_bar(&self, b: usize) -> Option<i16> {
        let bar = self.bar;
        if bar.is_nan() || bar <= 0.0 {
            return Some(0);
        }
        let nm = self.lay.bmax[b];
        if nm * self.umax < bar {
            return None;
        }
        // One below the bound, so float rounding never drops an item that could enter.
        let need = ((bar * self.lay.binv[b] - self.bias) * self.scale).floor() - 1.0;
        Some(need.clamp(0.0, 32_767.0) as i16)
    }

    /// Offers the items of `block` whose bit is set in `pass` (sums in item order).
    #[inline(never)]
    pub fn offer(&mut self, block: usize, pass: u32, sums: &[u16; BLOCK]) {
        let mut bits = pass;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let pos = block * BLOCK + i;
            let id = self.lay.ids[pos];
            if id == u32::MAX {
                continue;
            }
            let v = self.lay.norms[pos] * (sums[i] as f32 / self.scale + self.bias);
            let e = Entry::new(id, v);
            if self.top.accepts(&e)
                && self.deny.is_none_or(|d| d[id as usize] == 0)
                && self.filt.eligible(id)
            {
                self.top.push(e);
                if let Some(w) = self.top.worst() {
                    self.bar = w.score;
                }
            }
        }
    }
}

/// One block's 32 sums, in item order (the reference the AVX2 kernel must match).
#[inline(always)]
pub fn block_sums_scalar(block: &[u8], m: usize, table: &[u8]) -> [u16; BLOCK] {
    let mut out = [0u16; BLOCK];
    for p in 0..m / 2 {
        let lo_t = &table[2 * p * 32..2 * p * 32 + 16];
        let hi_t = &table[(2 * p + 1) * 32..(2 * p + 1) * 32 + 16];
        let bytes = &block[p * BLOCK..(p + 1) * BLOCK];
        for i in 0..BLOCK {
            let b = bytes[i];
            out[i] += lo_t[(b & 15) as usize] as u16 + hi_t[(b >> 4) as usize] as u16;
        }
    }
    out
}

/// Scans `blocks` of `codes` into `col` without SIMD; false when it stopped early because no
/// later block of the run could enter.
pub fn scan_scalar(
    codes: &[u8],
    m: usize,
    lut: &Lut,
    blocks: Range<usize>,
    col: &mut Collector,
) -> bool {
    let bb = m / 2 * BLOCK;
    for b in blocks {
        let Some(bar) = col.block_bar(b) else {
            return false;
        };
        let s = block_sums_scalar(&codes[b * bb..(b + 1) * bb], m, &lut.table);
        let mut pass = 0u32;
        for (i, &v) in s.iter().enumerate() {
            if v as i16 >= bar {
                pass |= 1 << i;
            }
        }
        if pass != 0 {
            col.offer(b, pass, &s);
        }
    }
    true
}

/// Scans with AVX2 when the CPU has it, else the scalar kernel (same results); false when it
/// stopped early (see `scan_scalar`).
pub fn scan(codes: &[u8], m: usize, lut: &Lut, blocks: Range<usize>, col: &mut Collector) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 was detected at run time; `blocks` lie inside `codes` (callers).
        return unsafe { simd::scan_avx2(codes, m, lut, blocks, col) };
    }
    scan_scalar(codes, m, lut, blocks, col)
}

#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2"))
}

#[cfg(target_arch = "x86_64")]
pub mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2; `codes` holds every block of `blocks` (`m / 2 * 32` bytes
    /// each) and `lut.table` holds `m * 32` bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scan_avx2(
        codes: &[u8],
        m: usize,
        lut: &Lut,
        blocks: Range<usize>,
        col: &mut Collector,
    ) -> bool {
        let pairs = m / 2;
        let bb = pairs * BLOCK;
        assert!(codes.len() >= blocks.end * bb && lut.table.len() >= m * 32);
        let nib = _mm256_set1_epi8(0x0f);
        let tp = lut.table.as_ptr();
        let mut tmp = [0u16; BLOCK];
        for b in blocks {
            let Some(bar) = col.block_bar(b) else {
                return false;
            };
            let bp = codes.as_ptr().add(b * bb);
            let mut acc0 = _mm256_setzero_si256();
            let mut acc1 = _mm256_setzero_si256();
            for p in 0..pairs {
                let c = _mm256_loadu_si256(bp.add(p * BLOCK) as *const __m256i);
                let lo = _mm256_and_si256(c, nib);
                let hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nib);
                let t0 = _mm256_loadu_si256(tp.add(2 * p * 32) as *const __m256i);
                let t1 = _mm256_loadu_si256(tp.add((2 * p + 1) * 32) as *const __m256i);
                let r0 = _mm256_shuffle_epi8(t0, lo);
                let r1 = _mm256_shuffle_epi8(t1, hi);
                // acc0 sums whole 16-bit words (low byte + 256 * high byte), acc1 the high
                // bytes: the low bytes' sums are acc0 - 256 * acc1, exactly (mod 2^16).
                acc0 = _mm256_add_epi16(acc0, _mm256_add_epi16(r0, r1));
                acc1 = _mm256_add_epi16(
                    acc1,
                    _mm256_add_epi16(_mm256_srli_epi16(r0, 8), _mm256_srli_epi16(r1, 8)),
                );
            }
            let even = _mm256_sub_epi16(acc0, _mm256_slli_epi16(acc1, 8));
            // Items 0-7 | 16-23 and 8-15 | 24-31.
            let v0 = _mm256_unpacklo_epi16(even, acc1);
            let v1 = _mm256_unpackhi_epi16(even, acc1);
            let barv = _mm256_set1_epi16(bar.saturating_sub(1));
            let c0 = _mm256_cmpgt_epi16(v0, barv);
            let c1 = _mm256_cmpgt_epi16(v1, barv);
            // packs keeps lanes: bytes come out as items 0-15 | 16-31, in order.
            let pass = _mm256_movemask_epi8(_mm256_packs_epi16(c0, c1)) as u32;
            if pass != 0 {
                _mm256_storeu_si256(tmp.as_mut_ptr() as *mut __m256i, v0);
                _mm256_storeu_si256(tmp.as_mut_ptr().add(16) as *mut __m256i, v1);
                let mut s = [0u16; BLOCK];
                s[0..8].copy_from_slice(&tmp[0..8]);
                s[8..16].copy_from_slice(&tmp[16..24]);
                s[16..24].copy_from_slice(&tmp[8..16]);
                s[24..32].copy_from_slice(&tmp[24..32]);
                col.offer(b, pass, &s);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::filters::SharedFilters;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n * dim)
            .map(|_| (r.next_u64() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn sample_is_distinct_and_seeded() {
        let a = sample_rows(1000, 100, &mut Rng::new(3));
        let b = sample_rows(1000, 100, &mut Rng::new(3));
        assert_eq!(a, b);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_rows(5, 100, &mut Rng::new(3)), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn hash_sees_every_byte() {
        let v: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let h = hash_bytes(&v, 0);
        for p in [0, 31, 32, 500, 1000] {
            let mut w = v.clone();
            w[p] ^= 1;
            assert_ne!(hash_bytes(&w, 0), h, "byte {p}");
        }
        assert_ne!(hash_bytes(&v, 1), h);
        assert_eq!(hash_bytes(&v, 0), h);
    }

    /// The AVX2 kernel finds the same entries (ids and approximate scores, so the same sums)
    /// as the scalar reference, for odd and even dimensions, with and without filters.
    #[test]
    fn avx2_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            for dim in [2usize, 7, 64, 130] {
                let n = 100;
                let f = data(n, dim, dim as u64);
                let cb = Codebook::train(&f, n, dim, 1);
                let mut ids: Vec<u32> = (0..n as u32).collect();
                ids.resize(n.next_multiple_of(BLOCK), u32::MAX);
                let opt: Vec<Option<u32>> =
                    ids.iter().map(|&i| (i != u32::MAX).then_some(i)).collect();
                let codes = cb.encode_blocks(&f, &opt);
                let norms: Vec<f32> = ids
                    .iter()
                    .map(|&i| if i == u32::MAX { 0.0 } else { 1.0 })
                    .collect();
                let bmax = vec![1f32; ids.len() / BLOCK];
                let lay = Layout {
                    ids: &ids,
                    norms: &norms,
                    bmax: &bmax,
                    binv: &bmax,
                };
                let q = data(1, dim, 99);
                let lut = cb.lut(&q);
                let nb = ids.len() / BLOCK;
                let deny: Vec<u8> = (0..n).map(|j| (j % 3 == 0) as u8).collect();
                let shared = SharedFilters::new(n, &[4], None).unwrap();
                let filt = shared.for_user(&[5, 7], &[]);
                for (r, mask) in [(n, None), (20, Some(&deny[..])), (1, None)] {
                    let mut a = Collector::new(r, lay, &lut, mask, &filt);
                    let mut c = Collector::new(r, lay, &lut, mask, &filt);
                    scan_scalar(&codes, cb.m, &lut, 0..nb, &mut a);
                    // SAFETY: AVX2 detected; the blocks are those of `codes`.
                    unsafe { simd::scan_avx2(&codes, cb.m, &lut, 0..nb, &mut c) };
                    let (a, c) = (a.top.into_sorted(), c.top.into_sorted());
                    assert_eq!(a, c, "dim {dim} r {r}");
                    assert!(!a.is_empty());
                }
            }
        }
    }

    /// Sums track the true inner product: the quantised table of an exactly coded item gives
    /// its score up to rounding.
    #[test]
    fn sums_approximate_inner_products() {
        let (n, dim) = (2000, 16);
        let f = data(n, dim, 5);
        let cb = Codebook::train(&f, n, dim, 0);
        let ids: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
        let codes = cb.encode_blocks(&f, &ids);
        let q = data(1, dim, 6);
        let lut = cb.lut(&q);
        let bb = cb.block_bytes();
        let norms: Vec<f32> = f.chunks(dim).map(norm).collect();
        let mut err = 0f64;
        let mut var = 0f64;
        for b in 0..n / BLOCK {
            let s = block_sums_scalar(&codes[b * bb..(b + 1) * bb], cb.m, &lut.table);
            for (i, &sum) in s.iter().enumerate() {
                let j = b * BLOCK + i;
                let exact: f32 = (0..dim).map(|t| f[j * dim + t] * q[t]).sum();
                err += ((norms[j] * lut.value(sum) - exact) as f64).powi(2);
                var += (exact as f64).powi(2);
            }
        }
        assert!(err < 0.1 * var, "relative squared error {}", err / var);
    }
}
