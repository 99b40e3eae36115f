//! Times item-item similarity on a users x items matrix dumped by numpy:
//! `cargo run --release --example simbench -- INDPTR.bin INDICES.bin N_ITEMS THREADS`.
use recsys_core::kernels::csr::CsrRef;
use recsys_core::kernels::similarity::{
    similarity_topk_of_columns, Measure, SimilarityParams, Weighting,
};
use std::time::Instant;

fn read<T: Copy>(path: &str) -> Vec<T> {
    let bytes = std::fs::read(path).expect("read");
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut v = Vec::with_capacity(n);
    // SAFETY: plain-old-data read of a file written by numpy.tofile.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            v.as_mut_ptr() as *mut u8,
            n * std::mem::size_of::<T>(),
        );
        v.set_len(n);
    }
    v
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let indptr: Vec<i64> = read(&a[1]);
    let indices: Vec<i32> = read(&a[2]);
    let n_items: usize = a[3].parse().unwrap();
    let threads: usize = a[4].parse().unwrap();
    let data = vec![1.0f32; indices.len()];
    let m = CsrRef::new("ui", indptr.len() - 1, n_items, &indptr, &indices, &data).unwrap();
    let p = SimilarityParams {
        k: 100,
        weighting: Weighting::None,
        measure: Measure::Cosine { shrink: 0.0 },
        include_self: false,
        pop_beta: 0.0,
    };
    for _ in 0..2 {
        let t = Instant::now();
        let s = similarity_topk_of_columns(m, &p, Some(threads)).unwrap();
        println!(
            "threads {threads}: {:.3}s nnz {}",
            t.elapsed().as_secs_f64(),
            s.nnz()
        );
    }
}
