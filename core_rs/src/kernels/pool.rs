//! Thread pools: the default one (sized by RECSYS_NUM_THREADS, else one thread per core) and
//! one cached pool per explicit thread count, so a per-call `num_threads` costs nothing after
//! its first use.

use crate::error::{CoreError, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn default_threads() -> usize {
    std::env::var("RECSYS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool_for(n: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&n) {
        return Ok(p.clone());
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("recsys-core-{i}"))
        .build()
        .map_err(|e| CoreError::arg(format!("cannot start {n} threads: {e}")))?;
    let pool = Arc::new(pool);
    map.insert(n, pool.clone());
    Ok(pool)
}

/// Resolves a requested thread count (None: the default) and validates it.
pub fn resolve_threads(num_threads: Option<usize>) -> Result<usize> {
    match num_threads {
        None => Ok(default_threads()),
        Some(0) => Err(CoreError::arg("num_threads must be at least 1")),
        Some(n) if n > 1024 => Err(CoreError::arg(format!("num_threads {n} is more than 1024"))),
        Some(n) => Ok(n),
    }
}

/// Runs `f` inside the pool of the requested size.
pub fn install<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let n = resolve_threads(num_threads)?;
    Ok(pool_for(n)?.install(f))
}

/// Like `install`, but runs `f` on the calling thread when there are fewer than two work items
/// or one thread: handing a single user's request to a pool thread costs a wake-up (tens of
/// microseconds on a busy machine) and buys nothing.
pub fn install_for<R: Send>(
    num_threads: Option<usize>,
    work_items: usize,
    f: impl FnOnce() -> R + Send,
) -> Result<R> {
    let n = resolve_threads(num_threads)?;
    if n == 1 || work_items < 2 {
        return Ok(f());
    }
    Ok(pool_for(n)?.install(f))
}
