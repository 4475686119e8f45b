//! Reductions written as 16 independent lanes (lane l takes elements l, l + 16, ...), so that
//! LLVM vectorizes them on every target; the lanes are combined by the caller.

/// `row` folded into 16 lanes by `f`, each lane starting from `init`.
#[inline(always)]
pub(crate) fn lanes(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; 16] {
    let mut acc = [init; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = f(*a, x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = f(*a, x);
    }
    acc
}
