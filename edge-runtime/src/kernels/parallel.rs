//! Row-parallel loops of ckd-edge's fused ops on the engine's tract executor.
//!
//! tract's `par_chunks_mut` cuts work into 4 chunks per thread. For the fused ops that costs
//! more than it gains at transformer sizes: each chunk of attention repacks every head's keys
//! and values, each chunk of a linear streams all its weights, and each chunk is a task to
//! wake a worker for. [`for_row_chunks`] makes one chunk per thread instead. (Letting the
//! calling thread take one chunk while the pool takes the rest, to hide a sleeping worker's
//! wake-up, measured slower on 2 cores: the pool's other thread then competes for a core.)

use tract_onnx::tract_hir::internal::TractResult;

/// Runs `f(first_row, chunk)` over `out` (rows of `row_len` values) cut into one chunk per
/// thread of the current tract executor, each chunk a multiple of `align` rows (but the
/// last). With one thread, no pool, or less than `min_rows` rows per thread, it runs `f(0, out)`
/// on the calling thread.
pub(crate) fn for_row_chunks<T: Send>(
    out: &mut [T],
    row_len: usize,
    align: usize,
    min_rows: usize,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync + Send,
) -> TractResult<()> {
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        use tract_onnx::prelude::multithread::{current_tract_executor, Executor};
        let rows = out.len().checked_div(row_len).unwrap_or(0);
        if let Executor::MultiThread(pool) = current_tract_executor() {
            let threads = pool.current_num_threads();
            if threads > 1 && rows >= threads * min_rows.max(1) {
                let align = align.max(1);
                let chunk_rows = rows.div_ceil(threads).div_ceil(align) * align;
                return pool.install(|| {
                    out.par_chunks_mut(chunk_rows * row_len).enumerate().try_for_each(|(i, c)| f(i * chunk_rows, c))
                });
            }
        }
    }
    let _ = (row_len, align, min_rows);
    f(0, out)
}
