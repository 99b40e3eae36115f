//! Compressed sparse row matrices: a validated borrowed view and an owned canonical form.

use crate::error::{CoreError, Result};

/// A borrowed CSR matrix whose structure and values have been checked.
#[derive(Clone, Copy, Debug)]
pub struct CsrRef<'a> {
    n_rows: usize,
    n_cols: usize,
    indptr: &'a [i64],
    indices: &'a [i32],
    data: &'a [f32],
}

impl<'a> CsrRef<'a> {
    /// Checks lengths, `indptr` monotonicity, index range and finiteness of every value.
    /// `name` is used in error messages ("history", "neighbours", ...).
    pub fn new(
        name: &str,
        n_rows: usize,
        n_cols: usize,
        indptr: &'a [i64],
        indices: &'a [i32],
        data: &'a [f32],
    ) -> Result<Self> {
        if n_cols > i32::MAX as usize {
            return Err(CoreError::matrix(
                name,
                format!("{n_cols} columns exceed i32 range"),
            ));
        }
        if indptr.len() != n_rows + 1 {
            return Err(CoreError::matrix(
                name,
                format!(
                    "indptr has length {} but the matrix has {n_rows} rows (expected {})",
                    indptr.len(),
                    n_rows + 1
                ),
            ));
        }
        if indices.len() != data.len() {
            return Err(CoreError::matrix(
                name,
                format!(
                    "indices has length {} but data has length {}",
                    indices.len(),
                    data.len()
                ),
            ));
        }
        if indptr[0] != 0 {
            return Err(CoreError::matrix(
                name,
                format!("indptr[0] is {}, expected 0", indptr[0]),
            ));
        }
        for r in 0..n_rows {
            if indptr[r + 1] < indptr[r] {
                return Err(CoreError::matrix(
                    name,
                    format!(
                        "indptr decreases at row {r} ({} > {})",
                        indptr[r],
                        indptr[r + 1]
                    ),
                ));
            }
        }
        if indptr[n_rows] as u64 != indices.len() as u64 {
            return Err(CoreError::matrix(
                name,
                format!(
                    "indptr[-1] is {} but there are {} stored entries",
                    indptr[n_rows],
                    indices.len()
                ),
            ));
        }
        if let Some(pos) = indices.iter().position(|&c| c < 0 || c as usize >= n_cols) {
            return Err(CoreError::matrix(
                name,
                format!(
                    "column index {} at position {pos} (row {}) is outside [0, {n_cols})",
                    indices[pos],
                    row_of(indptr, pos)
                ),
            ));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::NonFinite {
                name: format!("{name}.data"),
                pos,
                row: row_of(indptr, pos),
                value: data[pos],
            });
        }
        Ok(CsrRef {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    #[inline]
    pub fn row(&self, r: usize) -> (&'a [i32], &'a [f32]) {
        let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// True when every row's indices are strictly increasing (sorted, no duplicates).
    pub fn is_canonical(&self) -> bool {
        (0..self.n_rows).all(|r| self.row(r).0.windows(2).all(|w| w[0] < w[1]))
    }

    pub fn to_owned_canonical(&self) -> Csr {
        let mut indptr = Vec::with_capacity(self.n_rows + 1);
        let mut indices = Vec::with_capacity(self.nnz());
        let mut data = Vec::with_capacity(self.nnz());
        indptr.push(0i64);
        let mut pairs: Vec<(i32, f32)> = Vec::new();
        for r in 0..self.n_rows {
            let (ix, vx) = self.row(r);
            if ix.windows(2).all(|w| w[0] < w[1]) {
                indices.extend_from_slice(ix);
                data.extend_from_slice(vx);
            } else {
                pairs.clear();
                pairs.extend(ix.iter().copied().zip(vx.iter().copied()));
                pairs.sort_by_key(|p| p.0);
                merge_sorted_pairs(&pairs, &mut indices, &mut data);
            }
            indptr.push(indices.len() as i64);
        }
        Csr {
            n_rows: self.n_rows,
            n_cols: self.n_cols,
            indptr,
            indices,
            data,
        }
    }
}

/// Appends `pairs` (sorted by index) to the output, summing runs of equal indices.
pub(crate) fn merge_sorted_pairs(
    pairs: &[(i32, f32)],
    indices: &mut Vec<i32>,
    data: &mut Vec<f32>,
) {
    let mut i = 0;
    while i < pairs.len() {
        let (c, mut v) = pairs[i];
        i += 1;
        while i < pairs.len() && pairs[i].0 == c {
            v += pairs[i].1;
            i += 1;
        }
        indices.push(c);
        data.push(v);
    }
}

/// The row holding stored entry `pos` (for error messages).
fn row_of(indptr: &[i64], pos: usize) -> usize {
    indptr
        .partition_point(|&p| p as u64 <= pos as u64)
        .saturating_sub(1)
}

/// An owned CSR matrix in canonical form: each row's indices strictly increasing.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    pub n_rows: usize,
    pub n_cols: usize,
    pub indptr: Vec<i64>,
    pub indices: Vec<i32>,
    pub data: Vec<f32>,
}

impl Csr {
    pub fn empty(n_rows: usize, n_cols: usize) -> Self {
        Csr {
            n_rows,
            n_cols,
            indptr: vec![0; n_rows + 1],
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Builds a matrix from rows already canonical (sorted, unique indices).
    pub fn from_rows(n_cols: usize, rows: Vec<Vec<(u32, f32)>>) -> Self {
        let nnz = rows.iter().map(Vec::len).sum();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        indptr.push(0);
        for row in &rows {
            for &(c, v) in row {
                indices.push(c as i32);
                data.push(v);
            }
            indptr.push(indices.len() as i64);
        }
        Csr {
            n_rows: rows.len(),
            n_cols,
            indptr,
            indices,
            data,
        }
    }

    pub fn view(&self) -> CsrRef<'_> {
        CsrRef {
            n_rows: self.n_rows,
            n_cols: self.n_cols,
            indptr: &self.indptr,
            indices: &self.indices,
            data: &self.data,
        }
    }

    #[inline]
    pub fn row(&self, r: usize) -> (&[i32], &[f32]) {
        let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
        (&self.indices[a..b], &self.data[a..b])
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The transpose, canonical again (a counting sort keeps rows in column order).
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0i64; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for c in 0..self.n_cols {
            counts[c + 1] += counts[c];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0i32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (ix, vx) = self.row(r);
            for (&c, &v) in ix.iter().zip(vx) {
                let slot = next[c as usize] as usize;
                indices[slot] = r as i32;
                data[slot] = v;
                next[c as usize] += 1;
            }
        }
        Csr {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            data,
        }
    }

    /// The stored value at (r, c), by binary search in the canonical row.
    #[inline]
    pub fn get(&self, r: usize, c: i32) -> Option<f32> {
        let (ix, vx) = self.row(r);
        ix.binary_search(&c).ok().map(|p| vx[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        n_rows: usize,
        n_cols: usize,
        p: &'a [i64],
        i: &'a [i32],
        d: &'a [f32],
    ) -> Result<CsrRef<'a>> {
        CsrRef::new("m", n_rows, n_cols, p, i, d)
    }

    #[test]
    fn rejects_bad_structure() {
        assert!(matches!(
            view(2, 3, &[0, 1], &[0], &[1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
        assert!(matches!(
            view(1, 3, &[1, 1], &[0], &[1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
        assert!(matches!(
            view(2, 3, &[0, 2, 1], &[0, 1], &[1.0, 1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
        assert!(matches!(
            view(1, 3, &[0, 1], &[3], &[1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
        assert!(matches!(
            view(1, 3, &[0, 1], &[-1], &[1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
        assert!(matches!(
            view(1, 3, &[0, 2], &[0, 1], &[1.0]),
            Err(CoreError::InvalidMatrix { .. })
        ));
    }

    #[test]
    fn rejects_non_finite_with_position() {
        let err = view(2, 3, &[0, 1, 3], &[0, 1, 2], &[1.0, 2.0, f32::NAN]).unwrap_err();
        assert!(
            matches!(err, CoreError::NonFinite { pos: 2, row: 1, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("m.data[2]") && msg.contains("row 1"), "{msg}");
        assert!(view(1, 3, &[0, 1], &[0], &[f32::INFINITY]).is_err());
    }

    #[test]
    fn canonical_sorts_and_sums_duplicates() {
        let m = view(2, 4, &[0, 3, 3], &[2, 0, 2], &[1.0, 5.0, 2.0]).unwrap();
        assert!(!m.is_canonical());
        let c = m.to_owned_canonical();
        assert_eq!(c.indptr, vec![0, 2, 2]);
        assert_eq!(c.indices, vec![0, 2]);
        assert_eq!(c.data, vec![5.0, 3.0]);
    }

    #[test]
    fn transpose_round_trips() {
        let m = view(2, 3, &[0, 2, 3], &[0, 2, 1], &[1.0, 2.0, 3.0])
            .unwrap()
            .to_owned_canonical();
        let t = m.transpose();
        assert_eq!((t.n_rows, t.n_cols), (3, 2));
        assert_eq!(t.indptr, vec![0, 1, 2, 3]);
        assert_eq!(t.indices, vec![0, 1, 0]);
        assert_eq!(t.data, vec![1.0, 3.0, 2.0]);
        assert_eq!(t.transpose(), m);
        assert_eq!(m.get(0, 2), Some(2.0));
        assert_eq!(m.get(0, 1), None);
    }
}
