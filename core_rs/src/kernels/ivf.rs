//! IVF lists over the PQ codes: a k-means coarse partition (seeded, trained on a sample) with
//! the items reordered so that each list is a contiguous run of 32-item code blocks. The codes
//! encode the items' directions (not residuals), so one lookup table per query serves every list.
//!
//! The partition is of directions `x / |x|` (as the codes are). Lists are probed in order of
//! `q . c` (the most aligned first), in rounds split across the threads, and widened until `R`
//! eligible candidates are found and no list left can beat the `R`-th approximate score (by
//! the bound `nmax (q . c + |q| r)`, `nmax` the largest member norm, `r` the largest distance
//! of a member's direction from its centre), or a share of the catalogue has been read; with
//! fewer than `R` eligible candidates by then, every list is read (the full compressed scan).

use super::compressed::{by_norm, dot, put_f32s, Reader};
use super::filters::Filters;
use super::pool;
use super::quant::{self, Codebook, Collector, Layout, Lut, Rng, BLOCK};
use super::topk::{rank_cmp, Entry};
use crate::error::Result;
use rayon::prelude::*;

const KMEANS_ITERS: usize = 10;
/// Training points per list for the coarse k-means.
const SAMPLE_PER_LIST: usize = 64;
/// Each probing round reads at least this share of the items (1/32)...
const ROUND_DIV: usize = 32;
/// ...and probing stops after this share (1/16) once `R` eligible candidates are in (at 10M,
/// recall@10 0.964 against 0.978 at 1/8, in half the time: p50 1.4 ms against 2.7 ms)...
const BUDGET_DIV: usize = 16;
/// ...but never before this many blocks (131k items): at 1M that is ~1/8. Under a deny mask
/// the budget grows by 1 / the share the mask keeps, up to MAX_BUDGET_GROWTH times (trained
/// 1M factors, 50% mask: recall@10 0.922 with a fixed budget, 0.973 doubled; a 99% mask kept
/// recall 0.999 unscaled, and reading all 10M items for it took 16 ms).
const MIN_BUDGET_BLOCKS: usize = 4096;
const MAX_BUDGET_GROWTH: f64 = 2.0;
/// Mask entries read, evenly spaced, to estimate the share it keeps.
const SHARE_SAMPLE: usize = 1024;

/// The share of items a deny mask (nonzero = denied) leaves, from an even sample.
fn kept_share(deny: Option<&[u8]>) -> f64 {
    let Some(m) = deny else { return 1.0 };
    let step = (m.len() / SHARE_SAMPLE).max(1);
    let (mut seen, mut kept) = (0usize, 0usize);
    for &d in m.iter().step_by(step) {
        seen += 1;
        kept += usize::from(d == 0);
    }
    kept.max(1) as f64 / seen.max(1) as f64
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ivf {
    dim: usize,
    /// `n_lists * dim` coarse centres.
    centroids: Vec<f32>,
    /// Per list, the largest distance of a member from its centre.
    radius: Vec<f32>,
    /// List `l` owns code blocks `starts[l]..starts[l + 1]`.
    starts: Vec<u32>,
}

/// The nearest centre of `x * inv` (`norms[c] = |c|^2`; ties to the lower index).
fn nearest(x: &[f32], inv: f32, cent: &[f32], norms: &[f32], dim: usize) -> usize {
    let mut best = (f32::INFINITY, 0usize);
    for (c, nc) in norms.iter().enumerate() {
        let d = nc - 2.0 * inv * dot(x, &cent[c * dim..(c + 1) * dim]);
        if d < best.0 {
            best = (d, c);
        }
    }
    best.1
}

fn norms(cent: &[f32], dim: usize) -> Vec<f32> {
    cent.chunks(dim).map(|c| dot(c, c)).collect()
}

impl Ivf {
    /// About sqrt(n) / 6 lists (512 at 10M): assignment at build time costs n x lists dot
    /// products, and a list of ~20k items is read in tens of microseconds.
    pub fn default_lists(n: usize) -> usize {
        ((n as f64).sqrt() / 6.0).round().clamp(1.0, 4096.0) as usize
    }

    pub fn n_lists(&self) -> usize {
        self.radius.len()
    }

    pub fn bytes(&self) -> usize {
        (self.centroids.len() + self.radius.len() + self.starts.len()) * 4
    }

    /// Trains `lists` centres and cuts the items into lists, each in decreasing norm; returns
    /// the lists and the item of each code position. Runs in the caller's pool.
    pub fn build(
        f: &[f32],
        n: usize,
        dim: usize,
        lists: usize,
        seed: u64,
        item_norms: &[f32],
    ) -> (Ivf, Vec<u32>) {
        let mut rng = Rng::new(seed ^ 0x1F1F_1F1F);
        let rows = quant::sample_rows(n, (SAMPLE_PER_LIST * lists).max(65_536), &mut rng);
        let init = quant::sample_rows(rows.len(), lists, &mut rng);
        let inv = |j: usize| {
            let v = item_norms[j];
            if v > 0.0 {
                1.0 / v
            } else {
                0.0
            }
        };
        let mut cent: Vec<f32> = init
            .iter()
            .flat_map(|&i| {
                let r = rows[i];
                f[r * dim..(r + 1) * dim].iter().map(move |v| v * inv(r))
            })
            .collect();
        cent.resize(lists * dim, 0.0);
        for _ in 0..KMEANS_ITERS {
            let nrm = norms(&cent, dim);
            let assign: Vec<usize> = rows
                .par_iter()
                .with_min_len(256)
                .map(|&r| nearest(&f[r * dim..(r + 1) * dim], inv(r), &cent, &nrm, dim))
                .collect();
            let mut sums = vec![0f64; lists * dim];
            let mut counts = vec![0usize; lists];
            for (&r, &c) in rows.iter().zip(&assign) {
                counts[c] += 1;
                for t in 0..dim {
                    sums[c * dim + t] += (f[r * dim + t] * inv(r)) as f64;
                }
            }
            for c in 0..lists {
                if counts[c] > 0 {
                    for t in 0..dim {
                        cent[c * dim + t] = (sums[c * dim + t] / counts[c] as f64) as f32;
                    }
                } else {
                    // An empty centre restarts at a random sample point.
                    let r = rows[rng.below(rows.len())];
                    for t in 0..dim {
                        cent[c * dim + t] = f[r * dim + t] * inv(r);
                    }
                }
            }
        }
        let nrm = norms(&cent, dim);
        let assign: Vec<u32> = (0..n)
            .into_par_iter()
            .with_min_len(1024)
            .map(|j| nearest(&f[j * dim..(j + 1) * dim], inv(j), &cent, &nrm, dim) as u32)
            .collect();
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); lists];
        for (j, &c) in assign.iter().enumerate() {
            members[c as usize].push(j as u32);
        }
        let radius: Vec<f32> = members
            .par_iter()
            .enumerate()
            .map(|(c, m)| {
                let cc = &cent[c * dim..(c + 1) * dim];
                m.iter()
                    .map(|&j| {
                        let x = &f[j as usize * dim..(j as usize + 1) * dim];
                        let s = inv(j as usize);
                        x.iter().zip(cc).map(|(a, b)| (a * s - b) * (a * s - b)).sum::<f32>()
                    })
                    .fold(0f32, f32::max)
                    .sqrt()
                    // Rounding in the sums above must not make the bound too tight.
                    * 1.0001
            })
            .collect();
        let mut starts = vec![0u32];
        let mut ids = Vec::with_capacity(n + lists * BLOCK);
        for mut m in members {
            by_norm(&mut m, item_norms);
            ids.extend_from_slice(&m);
            starts.push((ids.len() / BLOCK) as u32);
        }
        let ivf = Ivf {
            dim,
            centroids: cent,
            radius,
            starts,
        };
        (ivf, ids)
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        put_f32s(out, &self.centroids);
        put_f32s(out, &self.radius);
        for s in &self.starts {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }

    /// Reads `write` output, checking that the lists cover the `npos` code positions.
    pub fn read(
        r: &mut Reader<'_>,
        lists: usize,
        npos: usize,
        dim: usize,
    ) -> std::result::Result<Ivf, String> {
        let e = |_| "IVF section ends early".to_string();
        let centroids = r.f32s(lists * dim).map_err(e)?;
        let radius = r.f32s(lists).map_err(e)?;
        let starts = r.u32s(lists + 1).map_err(e)?;
        let ok = starts[0] == 0
            && starts.windows(2).all(|w| w[0] <= w[1])
            && starts[lists] as usize * BLOCK == npos;
        if !ok {
            return Err("IVF lists do not cover the code positions".into());
        }
        Ok(Ivf {
            dim,
            centroids,
            radius,
            starts,
        })
    }

    /// The approximate top-`r` eligible items: lists by decreasing bound, widened as the
    /// module doc says.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        codes: &[u8],
        cb: &Codebook,
        lay: Layout<'_>,
        lut: &Lut,
        user: &[f32],
        r: usize,
        deny: Option<&[u8]>,
        filt: &Filters<'_>,
        threads: usize,
    ) -> Result<Vec<u32>> {
        let dim = self.dim;
        let qn = dot(user, user).sqrt();
        // Lists whose centre is most aligned with the user first; `rest[i]` bounds every list
        // from position i on, so probing can stop when the R-th score beats it.
        let mut order: Vec<(f32, u32, f32)> = (0..self.n_lists())
            .filter(|&l| self.starts[l + 1] > self.starts[l])
            .map(|l| {
                let c = &self.centroids[l * dim..(l + 1) * dim];
                let qc = dot(user, c);
                // Members are at most nmax long, their directions within `radius` of c.
                let nmax = lay.norms[self.starts[l] as usize * BLOCK];
                (qc, l as u32, nmax * (qc + qn * self.radius[l]).max(0.0))
            })
            .collect();
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rest = vec![f32::NEG_INFINITY; order.len() + 1];
        for i in (0..order.len()).rev() {
            rest[i] = rest[i + 1].max(order[i].2);
        }
        let total_blocks = lay.ids.len() / BLOCK;
        let round = total_blocks.div_ceil(ROUND_DIV).max(1);
        let budget = total_blocks.div_ceil(BUDGET_DIV).max(MIN_BUDGET_BLOCKS) as f64;
        let growth = (1.0 / kept_share(deny)).min(MAX_BUDGET_GROWTH);
        let budget = ((budget * growth).ceil() as usize).min(total_blocks);
        let threads = threads.max(1);
        let mut cols: Vec<Collector> = (0..threads)
            .map(|_| Collector::new(r, lay, lut, deny, filt))
            .collect();
        let (mut next, mut read) = (0usize, 0usize);
        while next < order.len() {
            // This round's lists, then dealt to the threads in turn by blocks.
            let mut groups: Vec<Vec<u32>> = vec![Vec::new(); threads];
            let mut loads = vec![0usize; threads];
            let mut this = 0usize;
            while next < order.len() && this < round {
                let l = order[next].1 as usize;
                let nb = (self.starts[l + 1] - self.starts[l]) as usize;
                let t = (0..threads).min_by_key(|&t| loads[t]).unwrap_or(0);
                groups[t].push(l as u32);
                loads[t] += nb;
                this += nb;
                next += 1;
            }
            read += this;
            let scan_group = |(col, g): (&mut Collector, &Vec<u32>)| {
                for &l in g {
                    let (s, e) = (self.starts[l as usize], self.starts[l as usize + 1]);
                    // A list stops early on its own: norms decrease within a list only.
                    quant::scan(codes, cb.m, lut, s as usize..e as usize, col);
                }
            };
            if threads > 1 {
                pool::install(Some(threads), || {
                    cols.par_iter_mut().zip(&groups).for_each(scan_group)
                })?;
            } else {
                cols.iter_mut().zip(&groups).for_each(scan_group);
            }
            // Every thread's next round starts from the best `r` so far: a tighter bar.
            let best = merge_dedup(cols.drain(..).map(|c| c.top.into_sorted()), r);
            cols = (0..threads)
                .map(|_| {
                    let mut c = Collector::new(r, lay, lut, deny, filt);
                    c.seed(&best);
                    c
                })
                .collect();
            if best.len() >= r {
                let w = best[best.len() - 1];
                let beaten = rest[next] < w.score;
                if beaten || read >= budget {
                    break;
                }
            }
        }
        let best = merge_dedup(cols.into_iter().map(|c| c.top.into_sorted()), r);
        Ok(best.iter().map(|e| e.idx).collect())
    }
}

/// The best `r` of sorted parts that may share entries (seeded copies).
fn merge_dedup(parts: impl Iterator<Item = Vec<Entry>>, r: usize) -> Vec<Entry> {
    let mut all: Vec<Entry> = parts.flatten().collect();
    all.sort_unstable_by(|a, b| rank_cmp(b, a));
    all.dedup_by_key(|e| e.idx);
    all.truncate(r);
    all
}

#[cfg(test)]
mod tests {
    use super::kept_share;

    #[test]
    fn kept_share_reads_the_mask() {
        assert_eq!(kept_share(None), 1.0);
        let half: Vec<u8> = (0..100_000).map(|j| (j % 2) as u8).collect();
        assert!((kept_share(Some(&half)) - 0.5).abs() < 0.01);
        let all = vec![1u8; 5000];
        assert!(kept_share(Some(&all)) > 0.0); // never 0: the budget stays finite
        assert_eq!(kept_share(Some(&[0u8; 10])), 1.0);
    }
}
