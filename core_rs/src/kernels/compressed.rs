//! Compressed scoring with exact rerank: every item's 4-bit PQ code is scored (`quant`), the
//! filters are applied as candidates arrive, the best `R` eligible candidates are rescored with
//! the exact f32 factors and the best `k` of those are returned.
//!
//! Exactly `min(k, #eligible)` items come back: the approximate top-R holds every eligible
//! item when fewer than `R >= k` are eligible. When few items are eligible (a sparse allow
//! list, or a deny mask that removes nearly everything) the eligible items are scored exactly
//! instead, which is both cheaper and exact.

use super::csr::CsrRef;
use super::dense::check_finite;
use super::filters::{check_indices, Filters, SharedFilters};
use super::ivf::Ivf;
use super::pool;
use super::quant::{self, Codebook, Collector, Layout, BLOCK};
use super::sparse::{BatchRecs, Recs};
use super::topk::{Entry, TopK};
use crate::error::{CoreError, Result};
use rayon::prelude::*;
use std::ops::Range;

/// Default number of approximate candidates reranked exactly.
pub const DEFAULT_RERANK: usize = 128;
/// From this many items `build` adds IVF lists by default. Measured on the benchmark's
/// factors (docs/benchmarks.md): at 1M items the flat scan takes ~1 ms p50 (recall@10 0.99),
/// IVF lists 0.2-0.4 ms (recall@10 0.97); at 10M the flat scan would pass the 5 ms budget.
pub const IVF_MIN_ITEMS: usize = 1_000_000;
/// Below this many items a single-user scan stays on the calling thread (measured: a pool
/// round trip costs about what scanning 100k codes does).
const PARALLEL_MIN_ITEMS: usize = 131_072;
/// Exact scoring of the eligible items is chosen when at most 1/32 of them are eligible: the
/// exact scan reads 256 bytes per eligible item (64 factors) against 16 per item compressed.
const EXACT_FRACTION: usize = 32;
/// ...and at most this many are (estimated): exact scoring reads 256 bytes per eligible item
/// at random, which at 100k eligible items (10M, 99% denied) took longer than the IVF scan.
const EXACT_MAX_OPEN: usize = 50_000;
/// Deny-mask positions sampled to estimate how many items are eligible.
const DENSITY_SAMPLES: usize = 1024;

const MAGIC: &[u8; 8] = b"RSPQ4FS\0";
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4 + 4 + 4 + 8 + 8 + 8;

/// 4-bit PQ codes of an item-factor matrix, in fast-scan blocks, optionally cut into IVF lists.
/// The f32 factors themselves are not held here: callers pass them to each call (the Python
/// layer keeps one reference), so the codes add 1/8 of the matrix, not a second copy.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedModel {
    n_items: usize,
    dim: usize,
    cb: Codebook,
    codes: Vec<u8>,
    /// Item at each code position (`u32::MAX`: padding), in decreasing norm within a run.
    ids: Vec<u32>,
    /// Norm of the item at each position (0 for padding).
    norms: Vec<f32>,
    /// Largest norm of each block (derived from `norms`).
    bmax: Vec<f32>,
    binv: Vec<f32>,
    ivf: Option<Ivf>,
    fingerprint: u64,
    /// Largest norm of a decoded direction: with |q| it bounds every direction's score.
    rmax: f32,
}

/// Blocks a thread scans before moving on to its next share of the flat layout: the threads
/// take turns along the decreasing norms so that each stops early at about the same place.
const CHUNK_BLOCKS: usize = 64;

/// Items `run` in decreasing norm (ties by id), padded with `u32::MAX` to whole blocks.
pub fn by_norm(run: &mut Vec<u32>, norms: &[f32]) {
    run.sort_unstable_by(|&a, &b| {
        norms[b as usize]
            .total_cmp(&norms[a as usize])
            .then(a.cmp(&b))
    });
    run.resize(run.len().next_multiple_of(BLOCK), u32::MAX);
}

fn inverse(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| if x > 0.0 { 1.0 / x } else { 0.0 })
        .collect()
}

fn block_max(norms: &[f32]) -> Vec<f32> {
    norms
        .chunks(BLOCK)
        .map(|c| c.iter().copied().fold(0f32, f32::max))
        .collect()
}

/// One call's filters and sizes.
pub struct Query<'a> {
    pub k: usize,
    pub rerank: usize,
    pub deny_mask: Option<&'a [u8]>,
    pub num_threads: Option<usize>,
}

/// A dot product in eight lanes (the compiler vectorises it without target features).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The fingerprint of a factor matrix: its shape and every value's bits.
pub fn fingerprint(factors: &[f32], n_items: usize, dim: usize) -> u64 {
    quant::hash_bytes(
        quant::f32_bytes(factors),
        ((n_items as u64) << 20) ^ dim as u64,
    )
}

fn check_factors(factors: &[f32], n_items: usize, dim: usize) -> Result<()> {
    if factors.len() != n_items * dim {
        return Err(CoreError::arg(format!(
            "item_factors hold {} values, not {n_items} x {dim}",
            factors.len()
        )));
    }
    if dim == 0 {
        return Err(CoreError::arg("item_factors must have at least one column"));
    }
    if n_items >= u32::MAX as usize || n_items > i32::MAX as usize {
        return Err(CoreError::arg(format!("{n_items} items exceed i32 range")));
    }
    check_finite("item_factors", factors, dim)
}

/// Splits `0..n` into `parts` contiguous ranges.
fn chunks(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| (n * p / parts)..(n * (p + 1) / parts))
        .collect()
}

/// Whether few enough items pass the deny mask (estimated from evenly spaced samples) that
/// scoring them exactly beats the compressed scan.
fn mostly_denied(mask: &[u8]) -> bool {
    let n = mask.len();
    if n == 0 {
        return true;
    }
    let step = (n / DENSITY_SAMPLES).max(1);
    let (mut seen, mut open) = (0usize, 0usize);
    let mut j = step / 2;
    while j < n {
        seen += 1;
        open += (mask[j] == 0) as usize;
        j += step;
    }
    open * EXACT_FRACTION <= seen && open * n / seen.max(1) <= EXACT_MAX_OPEN
}

/// Exact scores of the eligible items among `ids`, best `k`.
fn exact_ids(
    factors: &[f32],
    dim: usize,
    user: &[f32],
    ids: impl Iterator<Item = u32>,
    deny: Option<&[u8]>,
    filt: &Filters<'_>,
    top: &mut TopK,
) {
    for j in ids {
        if deny.is_some_and(|d| d[j as usize] != 0) {
            continue;
        }
        let ju = j as usize;
        let e = Entry::new(j, dot(&factors[ju * dim..(ju + 1) * dim], user));
        if top.accepts(&e) && filt.eligible(j) {
            top.push(e);
        }
    }
}

/// The items of `rows` the deny mask leaves, skipping eight denied items at a time.
fn open_rows(mask: &[u8], rows: Range<usize>) -> impl Iterator<Item = u32> + '_ {
    let (lo, hi) = (rows.start, rows.end);
    let mut j = lo;
    std::iter::from_fn(move || {
        while j < hi {
            if j % 8 == 0 && j + 8 <= hi {
                let w = u64::from_le_bytes(mask[j..j + 8].try_into().unwrap());
                // No zero byte among the eight: all denied.
                let has_zero = w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080;
                if has_zero == 0 {
                    j += 8;
                    continue;
                }
            }
            let cur = j;
            j += 1;
            if mask[cur] == 0 {
                return Some(cur as u32);
            }
        }
        None
    })
}

impl CompressedModel {
    /// Trains the codebooks on a sample (seeded), encodes every item and, with `ivf_lists`
    /// > 0, builds that many IVF lists. Runs in the pool of `num_threads`.
    pub fn build(
        factors: &[f32],
        n_items: usize,
        dim: usize,
        seed: u64,
        ivf_lists: Option<usize>,
        num_threads: Option<usize>,
    ) -> Result<Self> {
        check_factors(factors, n_items, dim)?;
        let lists = match ivf_lists {
            None if n_items >= IVF_MIN_ITEMS => Ivf::default_lists(n_items),
            None => 0,
            Some(l) if l > n_items.max(1) => {
                return Err(CoreError::arg(format!(
                    "ivf_lists = {l} is more than the {n_items} items"
                )))
            }
            Some(l) => l,
        };
        pool::install(num_threads, || {
            let cb = Codebook::train(factors, n_items, dim, seed);
            let item_norms: Vec<f32> = factors
                .par_chunks(dim)
                .with_min_len(4096)
                .map(quant::norm)
                .collect();
            let (ids, ivf) = if lists > 0 {
                let (ivf, ids) = Ivf::build(factors, n_items, dim, lists, seed, &item_norms);
                (ids, Some(ivf))
            } else {
                let mut ids: Vec<u32> = (0..n_items as u32).collect();
                by_norm(&mut ids, &item_norms);
                (ids, None)
            };
            let norms: Vec<f32> = ids
                .iter()
                .map(|&i| {
                    if i == u32::MAX {
                        0.0
                    } else {
                        item_norms[i as usize]
                    }
                })
                .collect();
            let opt: Vec<Option<u32>> = ids.iter().map(|&i| (i != u32::MAX).then_some(i)).collect();
            let codes = cb.encode_blocks(factors, &opt);
            let rmax = cb.max_decoded_norm(&codes) * 1.0001;
            CompressedModel {
                rmax,
                n_items,
                dim,
                cb,
                codes,
                binv: inverse(&block_max(&norms)),
                bmax: block_max(&norms),
                ids,
                norms,
                ivf,
                fingerprint: fingerprint(factors, n_items, dim),
            }
        })
    }

    fn layout(&self) -> Layout<'_> {
        Layout {
            ids: &self.ids,
            norms: &self.norms,
            bmax: &self.bmax,
            binv: &self.binv,
        }
    }

    pub fn n_items(&self) -> usize {
        self.n_items
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn ivf_lists(&self) -> usize {
        self.ivf.as_ref().map_or(0, |v| v.n_lists())
    }

    /// Bytes of the codes and lists (what the index adds to the factor matrix).
    pub fn index_bytes(&self) -> usize {
        self.codes.len()
            + (self.cb.centroids.len() + self.ids.len() + self.norms.len() + self.bmax.len()) * 4
            + self.ivf.as_ref().map_or(0, |v| v.bytes())
    }

    fn check_call(
        &self,
        factors: &[f32],
        users: &[f32],
        n_users: usize,
        name: &str,
        q: &Query<'_>,
    ) -> Result<()> {
        if factors.len() != self.n_items * self.dim {
            return Err(CoreError::arg(format!(
                "item_factors hold {} values, not {} x {}",
                factors.len(),
                self.n_items,
                self.dim
            )));
        }
        if users.len() != n_users * self.dim {
            return Err(CoreError::arg(format!(
                "{name} has {} values; the model has {} factors",
                users.len(),
                self.dim
            )));
        }
        check_finite(name, users, self.dim)?;
        if let Some(m) = q.deny_mask {
            if m.len() != self.n_items {
                return Err(CoreError::arg(format!(
                    "deny_mask has {} entries, not one per item ({})",
                    m.len(),
                    self.n_items
                )));
            }
        }
        pool::resolve_threads(q.num_threads)?;
        Ok(())
    }

    /// Top-k for one user; large catalogues are split across the pool's threads.
    pub fn recommend(
        &self,
        factors: &[f32],
        user: &[f32],
        exclude: &[i32],
        shared: &SharedFilters,
        q: &Query<'_>,
    ) -> Result<Recs> {
        self.check_call(factors, user, 1, "user_vector", q)?;
        check_indices("exclude", exclude, self.n_items)?;
        let filt = shared.for_user(exclude, &[]);
        let threads = pool::resolve_threads(q.num_threads)?;
        let best = self.search(factors, user, &filt, q, threads)?;
        Ok(to_recs(best))
    }

    /// Top-k for each of `n_users` users (rows of `users`); users are spread over the pool.
    pub fn recommend_batch(
        &self,
        factors: &[f32],
        users: &[f32],
        n_users: usize,
        exclude: Option<CsrRef<'_>>,
        shared: &SharedFilters,
        q: &Query<'_>,
    ) -> Result<BatchRecs> {
        self.check_call(factors, users, n_users, "user_vectors", q)?;
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
        let recs = pool::install_for(q.num_threads, n_users, || {
            (0..n_users)
                .into_par_iter()
                .with_min_len(4)
                .map(|u| {
                    let ex = exclude.map_or(&[][..], |m| m.row(u).0);
                    let filt = shared.for_user(ex, &[]);
                    let user = &users[u * self.dim..(u + 1) * self.dim];
                    self.search(factors, user, &filt, q, 1).map(to_recs)
                })
                .collect::<Result<Vec<_>>>()
        })??;
        Ok(BatchRecs::from_users(recs, false))
    }

    /// Picks exact or compressed scoring for one user and runs it on `threads` threads.
    fn search(
        &self,
        factors: &[f32],
        user: &[f32],
        filt: &Filters<'_>,
        q: &Query<'_>,
        threads: usize,
    ) -> Result<Vec<Entry>> {
        let n = self.n_items;
        if q.k == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let deny = q.deny_mask;
        if let Some(a) = filt.allow() {
            if a.len() * 8 <= n {
                let mut top = TopK::new(q.k);
                exact_ids(
                    factors,
                    self.dim,
                    user,
                    a.iter().copied(),
                    deny,
                    filt,
                    &mut top,
                );
                return Ok(top.into_sorted());
            }
        }
        let par = threads > 1 && n >= PARALLEL_MIN_ITEMS;
        if deny.is_some_and(mostly_denied) {
            let mask = deny.unwrap_or(&[]);
            let run = |rows: Range<usize>| {
                let mut top = TopK::new(q.k);
                exact_ids(
                    factors,
                    self.dim,
                    user,
                    open_rows(mask, rows),
                    None,
                    filt,
                    &mut top,
                );
                top.into_sorted()
            };
            if !par {
                return Ok(run(0..n));
            }
            let parts = pool::install(Some(threads), || {
                chunks(n, threads * 2)
                    .into_par_iter()
                    .map(run)
                    .collect::<Vec<_>>()
            })?;
            return Ok(merge(parts, q.k));
        }
        let r = q.rerank.max(q.k);
        let mut lut = self.cb.lut(user);
        lut.cap(quant::norm(user) * self.rmax, self.cb.m);
        let cands = match &self.ivf {
            Some(ivf) => {
                let lay = self.layout();
                ivf.search(
                    &self.codes,
                    &self.cb,
                    lay,
                    &lut,
                    user,
                    r,
                    deny,
                    filt,
                    threads,
                )?
            }
            None => self.flat(&lut, r, deny, filt, if par { threads } else { 1 })?,
        };
        let mut top = TopK::new(q.k);
        exact_ids(
            factors,
            self.dim,
            user,
            cands.into_iter(),
            None,
            filt,
            &mut top,
        );
        Ok(top.into_sorted())
    }

    /// The approximate top-`r` eligible items of the flat layout.
    fn flat(
        &self,
        lut: &quant::Lut,
        r: usize,
        deny: Option<&[u8]>,
        filt: &Filters<'_>,
        threads: usize,
    ) -> Result<Vec<u32>> {
        let n_blocks = self.ids.len() / BLOCK;
        let n_chunks = n_blocks.div_ceil(CHUNK_BLOCKS);
        let run = |t: usize| {
            let mut col = Collector::new(r, self.layout(), lut, deny, filt);
            for c in (t..n_chunks).step_by(threads) {
                let blocks = c * CHUNK_BLOCKS..((c + 1) * CHUNK_BLOCKS).min(n_blocks);
                if !quant::scan(&self.codes, self.cb.m, lut, blocks, &mut col) {
                    break;
                }
            }
            col.top.into_sorted()
        };
        let best = if threads <= 1 {
            run(0)
        } else {
            let parts = pool::install(Some(threads), || {
                (0..threads).into_par_iter().map(run).collect::<Vec<_>>()
            })?;
            merge(parts, r)
        };
        Ok(best.iter().map(|e| e.idx).collect())
    }

    /// The model as bytes: a header (format version, shape, the factors' fingerprint, the
    /// payload's length and checksum) and the payload (codebooks, codes, IVF lists).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.index_bytes() + 64);
        put_u64(&mut payload, self.cb.m as u64);
        put_f32s(&mut payload, &self.cb.centroids);
        put_u64(&mut payload, self.codes.len() as u64);
        payload.extend_from_slice(&self.codes);
        put_u64(&mut payload, self.ids.len() as u64);
        for i in &self.ids {
            payload.extend_from_slice(&i.to_le_bytes());
        }
        put_f32s(&mut payload, &self.norms);
        if let Some(ivf) = &self.ivf {
            ivf.write(&mut payload);
        }
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.n_items as u64).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.ivf_lists() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&quant::hash_bytes(&payload, 0).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Reads `to_bytes` output back for `factors` (n_items x dim), refusing a blob with another
    /// format version, a damaged payload, another shape or other factors.
    pub fn from_bytes(blob: &[u8], factors: &[f32], n_items: usize, dim: usize) -> Result<Self> {
        let bad = |what: &str| CoreError::arg(format!("compressed index: {what}"));
        if blob.len() < HEADER || &blob[..8] != MAGIC {
            return Err(bad("not a compressed-scorer blob (bad magic or too short)"));
        }
        let mut r = Reader { b: blob, at: 8 };
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {version}, but this build reads version {FORMAT_VERSION}"
            )));
        }
        let (bn, bdim, lists, _) = (r.u64()? as usize, r.u32()? as usize, r.u32()?, r.u32()?);
        let (fp, plen, sum) = (r.u64()?, r.u64()? as usize, r.u64()?);
        let payload = &blob[HEADER..];
        if payload.len() != plen {
            return Err(bad(&format!(
                "payload is {} bytes, the header says {plen} (truncated?)",
                payload.len()
            )));
        }
        if quant::hash_bytes(payload, 0) != sum {
            return Err(bad("checksum mismatch: the payload is damaged"));
        }
        if (bn, bdim) != (n_items, dim) {
            return Err(bad(&format!(
                "wrong shape: built for {bn} x {bdim} factors, item_factors is {n_items} x {dim}"
            )));
        }
        check_factors(factors, n_items, dim)?;
        if fingerprint(factors, n_items, dim) != fp {
            return Err(bad(
                "built from other factors: item_factors' fingerprint does not match",
            ));
        }
        let mut r = Reader { b: payload, at: 0 };
        let m = r.u64()? as usize;
        if m != Codebook::n_subs(dim) {
            return Err(bad(&format!("{m} sub-quantisers for {dim} factors")));
        }
        let centroids = r.f32s(m * 16 * quant::DSUB)?;
        let clen = r.u64()? as usize;
        let codes = r.bytes(clen)?.to_vec();
        let npos = r.u64()? as usize;
        let ids = r.u32s(npos)?;
        let norms = r.f32s(npos)?;
        let cb = Codebook { dim, m, centroids };
        let ivf = if lists > 0 {
            Some(Ivf::read(&mut r, lists as usize, npos, dim).map_err(|e| bad(&e))?)
        } else {
            None
        };
        if clen != npos / BLOCK * cb.block_bytes() || npos % BLOCK != 0 || r.at != payload.len() {
            return Err(bad("code section does not match the shape"));
        }
        let mut seen = vec![false; n_items];
        let once = ids.iter().all(|&i| {
            i == u32::MAX
                || ((i as usize) < n_items && !std::mem::replace(&mut seen[i as usize], true))
        });
        if !once || !seen.iter().all(|&s| s) {
            return Err(bad(
                "the code positions do not hold every item exactly once",
            ));
        }
        if !norms.iter().all(|v| v.is_finite() && *v >= 0.0) {
            return Err(bad("norms must be finite and >= 0"));
        }
        let rmax = cb.max_decoded_norm(&codes) * 1.0001;
        Ok(CompressedModel {
            rmax,
            n_items,
            dim,
            cb,
            codes,
            binv: inverse(&block_max(&norms)),
            bmax: block_max(&norms),
            ids,
            norms,
            ivf,
            fingerprint: fp,
        })
    }
}

fn to_recs(best: Vec<Entry>) -> Recs {
    Recs {
        items: best.iter().map(|e| e.idx).collect(),
        scores: best.iter().map(|e| e.score).collect(),
        ..Default::default()
    }
}

fn merge(parts: Vec<Vec<Entry>>, k: usize) -> Vec<Entry> {
    let mut top = TopK::new(k);
    parts.into_iter().flatten().for_each(|e| top.push(e));
    top.into_sorted()
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.extend_from_slice(quant::f32_bytes(v));
}

/// A bounds-checked cursor over a blob.
pub struct Reader<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.at < n {
            return Err(CoreError::arg("compressed index: payload ends early"));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }

    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let raw = self.bytes(n.saturating_mul(4))?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    pub fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let raw = self.bytes(n.saturating_mul(4))?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::Rng;

    /// Clustered directions with long-tailed norms, like ALS item factors.
    fn factors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        let mut u = || (r.next_u64() % 20_001) as f32 / 10_000.0 - 1.0;
        let centres: Vec<f32> = (0..16 * dim).map(|_| u()).collect();
        let mut f = Vec::with_capacity(n * dim);
        for j in 0..n {
            let c = j % 16;
            let norm = 0.3 + 3.0 / (1.0 + (j % 997) as f32 / 10.0);
            for t in 0..dim {
                f.push((centres[c * dim + t] + 0.5 * u()) * norm);
            }
        }
        f
    }

    fn exact(f: &[f32], dim: usize, user: &[f32], k: usize, ok: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut top = TopK::new(k);
        for j in 0..f.len() / dim {
            if ok(j as u32) {
                top.push(Entry::new(j as u32, dot(&f[j * dim..(j + 1) * dim], user)));
            }
        }
        top.into_sorted().iter().map(|e| e.idx).collect()
    }

    fn query(k: usize, mask: Option<&[u8]>) -> Query<'_> {
        Query {
            k,
            rerank: DEFAULT_RERANK,
            deny_mask: mask,
            num_threads: Some(1),
        }
    }

    fn models(f: &[f32], n: usize, dim: usize) -> Vec<CompressedModel> {
        vec![
            CompressedModel::build(f, n, dim, 7, Some(0), Some(2)).unwrap(),
            CompressedModel::build(f, n, dim, 7, Some(9), Some(2)).unwrap(),
        ]
    }

    /// Exactly min(k, #eligible) items, none denied or excluded, for masks of every density
    /// (including exactly k, k - 1 and 0 eligible), flat and IVF, 1 and 2 threads.
    #[test]
    fn exact_k_under_every_mask() {
        let (n, dim, k) = (3000, 8, 10);
        let f = factors(n, dim, 1);
        let user: Vec<f32> = (0..dim).map(|t| (t as f32 * 0.7).sin()).collect();
        let none = SharedFilters::new(n, &[], None).unwrap();
        for m in models(&f, n, dim) {
            for open in [0usize, 1, k - 1, k, k + 1, 30, 100, 300, 1500, 2990, n] {
                let mut r = Rng::new(open as u64);
                let mut mask = vec![1u8; n];
                let mut left = open;
                while left > 0 {
                    let j = r.below(n);
                    if mask[j] == 1 {
                        mask[j] = 0;
                        left -= 1;
                    }
                }
                let excl = [0i32, 5, 17];
                let eligible = (0..n)
                    .filter(|&j| mask[j] == 0 && !excl.contains(&(j as i32)))
                    .count();
                for threads in [1, 2] {
                    let q = Query {
                        num_threads: Some(threads),
                        ..query(k, Some(&mask))
                    };
                    let got = m.recommend(&f, &user, &excl, &none, &q).unwrap();
                    assert_eq!(got.items.len(), k.min(eligible), "open {open}");
                    for &j in &got.items {
                        assert_eq!(mask[j as usize], 0);
                        assert!(!excl.contains(&(j as i32)));
                    }
                    let mut u = got.items.clone();
                    u.sort();
                    u.dedup();
                    assert_eq!(u.len(), got.items.len());
                }
            }
            // Allow lists, small (exact path) and large (compressed path), with deny ids.
            for len in [3usize, 50, 2000] {
                let allow: Vec<i32> = (0..len as i32).map(|i| i * (n / len) as i32).collect();
                let shared = SharedFilters::new(n, &[allow[1]], Some(&allow)).unwrap();
                let got = m
                    .recommend(&f, &user, &[], &shared, &query(k, None))
                    .unwrap();
                assert_eq!(got.items.len(), k.min(len - 1));
                assert!(got
                    .items
                    .iter()
                    .all(|&j| allow.contains(&(j as i32)) && j as i32 != allow[1]));
            }
        }
    }

    /// With enough items that IVF probing stops on its budget, sparse masks still give exactly
    /// min(k, #eligible) items: probing widens until R eligible candidates are in.
    #[test]
    fn ivf_widens_for_sparse_masks() {
        let (n, dim, k) = (300_000, 4, 10);
        let f = factors(n, dim, 8);
        let m = CompressedModel::build(&f, n, dim, 2, Some(64), Some(2)).unwrap();
        let none = SharedFilters::new(n, &[], None).unwrap();
        let user = [1.0f32, -0.5, 0.25, 0.0];
        // 60k open items (past EXACT_MAX_OPEN, so the IVF path runs) or a handful.
        for (open, stride) in [(60_000usize, 5usize), (3, 100_003), (k, 29_989)] {
            let mut mask = vec![1u8; n];
            for i in 0..open {
                mask[(i * stride) % n] = 0;
            }
            let eligible = mask.iter().filter(|&&d| d == 0).count();
            let got = m
                .recommend(&f, &user, &[], &none, &query(k, Some(&mask)))
                .unwrap();
            assert_eq!(got.items.len(), k.min(eligible), "open {open}");
            assert!(got.items.iter().all(|&j| mask[j as usize] == 0));
        }
        // Exclusions are not sampled for the exact path: 5 eligible items make the probing
        // widen to every list.
        let keep = [7i32, 70_001, 150_000, 222_222, 299_999];
        let excl: Vec<i32> = (0..n as i32).filter(|j| !keep.contains(j)).collect();
        let got = m
            .recommend(&f, &user, &excl, &none, &query(k, None))
            .unwrap();
        let mut items: Vec<i32> = got.items.iter().map(|&j| j as i32).collect();
        items.sort();
        assert_eq!(items, keep);
    }

    /// recall@10 against the exact top-10 on clustered factors, with and without masks.
    #[test]
    fn recall_close_to_exact() {
        let (n, dim, k) = (20_000, 32, 10);
        let f = factors(n, dim, 2);
        let none = SharedFilters::new(n, &[], None).unwrap();
        let half: Vec<u8> = (0..n).map(|j| (j * 7919 % 2) as u8).collect();
        for m in models(&f, n, dim) {
            for mask in [None, Some(&half[..])] {
                let mut hit = 0;
                for u in 0..50 {
                    let user = &f[(u * 37) * dim..(u * 37 + 1) * dim];
                    let got = m.recommend(&f, user, &[], &none, &query(k, mask)).unwrap();
                    let want = exact(&f, dim, user, k, |j| {
                        mask.is_none_or(|d| d[j as usize] == 0)
                    });
                    hit += got.items.iter().filter(|j| want.contains(j)).count();
                }
                let recall = hit as f64 / (50 * k) as f64;
                assert!(recall >= 0.95, "recall {recall} ivf {}", m.ivf_lists());
            }
        }
    }

    #[test]
    fn scores_are_exact_and_threads_agree() {
        let (n, dim) = (200_000, 16);
        let f = factors(n, dim, 3);
        let m = CompressedModel::build(&f, n, dim, 1, Some(0), Some(2)).unwrap();
        let none = SharedFilters::new(n, &[], None).unwrap();
        let user = &f[5 * dim..6 * dim];
        let a = m.recommend(&f, user, &[], &none, &query(20, None)).unwrap();
        let q2 = Query {
            num_threads: Some(2),
            ..query(20, None)
        };
        let b = m.recommend(&f, user, &[], &none, &q2).unwrap();
        assert_eq!(a, b);
        for (j, s) in a.items.iter().zip(&a.scores) {
            let j = *j as usize;
            assert_eq!(*s, dot(&f[j * dim..(j + 1) * dim], user) + 0.0);
        }
    }

    #[test]
    fn bytes_round_trip_and_refusals() {
        let (n, dim) = (1000, 6);
        let f = factors(n, dim, 4);
        for m in models(&f, n, dim) {
            let b = m.to_bytes();
            assert_eq!(CompressedModel::from_bytes(&b, &f, n, dim).unwrap(), m);
            // Same seed, same bytes.
            let again =
                CompressedModel::build(&f, n, dim, 7, Some(m.ivf_lists()), Some(1)).unwrap();
            assert_eq!(again.to_bytes(), b);
            let err = |blob: &[u8], f: &[f32], n: usize, d: usize| {
                CompressedModel::from_bytes(blob, f, n, d)
                    .unwrap_err()
                    .to_string()
            };
            let mut bad = b.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(err(&bad, &f, n, dim).contains("checksum"));
            let mut bad = b.clone();
            bad[8] = 9;
            assert!(err(&bad, &f, n, dim).contains("format version 9"));
            assert!(err(&b[..b.len() - 1], &f, n, dim).contains("truncated"));
            assert!(err(&b[..10], &f, n, dim).contains("magic"));
            assert!(err(&b, &f[..(n - 1) * dim], n - 1, dim).contains("wrong shape"));
            let mut g = f.clone();
            g[3] += 1.0;
            assert!(err(&b, &g, n, dim).contains("other factors"));
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        let f = factors(100, 4, 5);
        let m = CompressedModel::build(&f, 100, 4, 0, None, None).unwrap();
        let none = SharedFilters::new(100, &[], None).unwrap();
        let user = [1.0f32, 0.0, 0.0, 0.0];
        let e = m
            .recommend(&f, &user[..3], &[], &none, &query(5, None))
            .unwrap_err();
        assert!(e.to_string().contains("user_vector"));
        let short = vec![0u8; 99];
        let e = m
            .recommend(&f, &user, &[], &none, &query(5, Some(&short)))
            .unwrap_err();
        assert!(e.to_string().contains("deny_mask"));
        let e = m
            .recommend(&f, &user, &[100], &none, &query(5, None))
            .unwrap_err();
        assert!(e.to_string().contains("exclude"));
        assert!(CompressedModel::build(&f, 100, 4, 0, Some(101), None).is_err());
        assert!(CompressedModel::build(&f[..0], 0, 0, 0, None, None).is_err());
        let empty = CompressedModel::build(&[], 0, 4, 0, None, None).unwrap();
        let none0 = SharedFilters::new(0, &[], None).unwrap();
        assert!(empty
            .recommend(&[], &user, &[], &none0, &query(5, None))
            .unwrap()
            .items
            .is_empty());
    }
}
