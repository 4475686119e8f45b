//! Multi-head attention on slices, `softmax(q k^T * scale) v` for every head, a block of query
//! rows at a time, so the [heads, seq, seq] score and probability tensors never exist: the
//! arithmetic of `ops::attention`'s fused op.
//!
//! It reads the [B, T, N*Dh] layouts (head `h` is columns `h*Dh..(h+1)*Dh`). Once per call
//! it copies q and k head by head into transposed [Dh, T] matrices, so that the products'
//! operand packing reads contiguous memory (with strided views, packing took a third of the
//! time). Then per block of at most [`QUERY_BLOCK`] query rows and per head:
//! `s = q_blk k_h^T * c` ([`matrixmultiply::sgemm`], row-major [m, T]), then per row (in L1)
//! `s = exp(s - row max)` and its sum ([`super::softmax`]), then `y_blk,h = s v_h` written in
//! place in the output and `y_blk,h /= row sum` (on [m, Dh] rather than the [m, T]
//! probabilities). Rows are split over the engine's thread pool, one chunk per thread
//! ([`super::parallel`]; inline with one thread). Tested against textbook attention in f64.

use tract_onnx::tract_hir::internal::*;

use super::parallel::for_row_chunks;
use super::softmax::softmax_numerators;

/// Most query rows per block: the block's scores (`QUERY_BLOCK` x seq f32, 128 KiB at 512
/// tokens) stay in the core's L2 cache between the two products. (64 to 512 measured within
/// about 15% of each other on one Zen 4 core at 128 and 512 tokens; 32 was slower.)
pub const QUERY_BLOCK: usize = 64;

/// Sizes of one fused attention: q [batch, q_rows, heads * head_dim], k and v
/// [batch, kv_rows, heads * head_dim].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// B.
    pub batch: usize,
    /// Tq.
    pub q_rows: usize,
    /// T.
    pub kv_rows: usize,
    /// N.
    pub heads: usize,
    /// Dh.
    pub head_dim: usize,
}

/// `out = merge_heads(softmax(q_h k_h^T * scale) v_h)` for every batch and head; all row-major
/// with the shapes of [`Dims`]. Slices shorter than those shapes give an error. With no keys
/// (`kv_rows == 0`) the output is zeros.
pub fn attend(dims: &Dims, scale: f32, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> TractResult<()> {
    attend_in_blocks(dims, scale, q, k, v, out, QUERY_BLOCK)
}

/// [`attend`] with at most `block` query rows per block (for tuning; 0 means 1).
pub fn attend_in_blocks(
    dims: &Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    block: usize,
) -> TractResult<()> {
    let block = block.max(1);
    let &Dims { batch, q_rows, kv_rows, heads, head_dim } = dims;
    let width = heads * head_dim;
    ensure!(
        q.len() >= batch * q_rows * width && k.len() >= batch * kv_rows * width && v.len() >= batch * kv_rows * width,
        "attention inputs shorter than {dims:?}"
    );
    ensure!(out.len() == batch * q_rows * width, "attention output of {} for {dims:?}", out.len());
    if out.is_empty() || kv_rows == 0 {
        out.fill(0.0);
        return Ok(());
    }
    // Heads transposed once per call, so that the products' packing reads contiguous memory:
    // qt[b][h] = q_h^T [Dh, Tq] and kt[b][h] = k_h^T [Dh, T].
    let qt = heads_transposed(q, batch, q_rows, heads, head_dim);
    let kt = heads_transposed(k, batch, kv_rows, heads, head_dim);
    for_row_chunks(out, width, 1, 8, |first_row, chunk| {
        let rows = chunk.len() / width;
        // One block's scores, row-major [m, T].
        let mut scores = vec![0f32; block.min(rows) * kv_rows];
        let mut sum = vec![0f32; block.min(rows)];
        let mut r = 0;
        while r < rows {
            let global = first_row + r;
            let (b, i) = (global / q_rows, global % q_rows);
            // A block never crosses into the next batch entry.
            let m = block.min(rows - r).min(q_rows - i);
            let s = &mut scores[..m * kv_rows];
            for h in 0..heads {
                let qt_h = (b * heads + h) * head_dim * q_rows;
                let kt_h = (b * heads + h) * head_dim * kv_rows;
                // SAFETY: qt holds batch * heads * head_dim * q_rows values, so rows i..i+m
                // of the [Dh, Tq] matrix at qt_h are inside it (i + m <= q_rows); kt likewise
                // with kv_rows columns; `s` holds m * kv_rows.
                unsafe {
                    // s [m, T] = q_blk,h [m, Dh] . k_h^T [Dh, T] * scale
                    matrixmultiply::sgemm(
                        m,
                        head_dim,
                        kv_rows,
                        scale,
                        qt.as_ptr().add(qt_h + i),
                        1,
                        q_rows as isize,
                        kt.as_ptr().add(kt_h),
                        kv_rows as isize,
                        1,
                        0.0,
                        s.as_mut_ptr(),
                        kv_rows as isize,
                        1,
                    );
                }
                // Softmax along j: exp(s - row max), row by row while the row is in L1; the
                // 1 / sum is applied to the [m, Dh] output instead of the [m, T] probabilities.
                let sum = &mut sum[..m];
                softmax_numerators(s, kv_rows, sum)?;
                let out_blk = r * width + h * head_dim;
                // SAFETY: v rows b*kv_rows..(b+1)*kv_rows, head columns inside `width`
                // (length checked above); output rows r..r+m of this chunk, same columns.
                unsafe {
                    // out_blk,h [m, Dh] = exp_s [m, T] . v_h [T, Dh]
                    matrixmultiply::sgemm(
                        m,
                        kv_rows,
                        head_dim,
                        1.0,
                        s.as_ptr(),
                        kv_rows as isize,
                        1,
                        v.as_ptr().add(b * kv_rows * width + h * head_dim),
                        width as isize,
                        1,
                        0.0,
                        chunk.as_mut_ptr().add(out_blk),
                        width as isize,
                        1,
                    );
                }
                for (row, &z) in chunk[out_blk..].chunks_mut(width).take(m).zip(sum.iter()) {
                    let inv = z.recip();
                    for y in &mut row[..head_dim] {
                        *y *= inv;
                    }
                }
            }
            r += m;
        }
        Ok(())
    })
}

/// `x` [batch, rows, heads * head_dim] as [batch, heads, head_dim, rows] (each head transposed),
/// in 32 x 32 tiles.
fn heads_transposed(x: &[f32], batch: usize, rows: usize, heads: usize, head_dim: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let width = heads * head_dim;
    let mut t = vec![0f32; batch * rows * width];
    for b in 0..batch {
        let src = &x[b * rows * width..(b + 1) * rows * width];
        let dst = &mut t[b * rows * width..(b + 1) * rows * width];
        for j0 in (0..rows).step_by(TILE) {
            let j1 = (j0 + TILE).min(rows);
            for c0 in (0..width).step_by(TILE) {
                // Column c (= h * head_dim + within-head column) of row j goes to dst[c * rows + j].
                for c in c0..(c0 + TILE).min(width) {
                    for (j, d) in (j0..j1).zip(&mut dst[c * rows + j0..c * rows + j1]) {
                        *d = src[j * width + c];
                    }
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// Textbook attention in f64, head by head.
    fn reference(d: &Dims, scale: f32, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let w = d.heads * d.head_dim;
        let mut out = vec![0f32; d.batch * d.q_rows * w];
        for b in 0..d.batch {
            for h in 0..d.heads {
                for i in 0..d.q_rows {
                    let qi = &q[(b * d.q_rows + i) * w + h * d.head_dim..][..d.head_dim];
                    let s: Vec<f64> = (0..d.kv_rows)
                        .map(|j| {
                            let kj = &k[(b * d.kv_rows + j) * w + h * d.head_dim..][..d.head_dim];
                            qi.iter().zip(kj).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
                                * f64::from(scale)
                        })
                        .collect();
                    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d.head_dim {
                        let y: f64 = (0..d.kv_rows)
                            .map(|j| e[j] / z * f64::from(v[(b * d.kv_rows + j) * w + h * d.head_dim + c]))
                            .sum();
                        out[(b * d.q_rows + i) * w + h * d.head_dim + c] = y as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attend_matches_the_textbook_formula() {
        // Odd sizes, more query rows than one block, a batch of two, a single query row
        // (the exporter's last layer), keys longer and shorter than queries.
        for (i, d) in [
            Dims { batch: 1, q_rows: 5, kv_rows: 5, heads: 1, head_dim: 3 },
            Dims { batch: 2, q_rows: 70, kv_rows: 70, heads: 3, head_dim: 8 },
            Dims { batch: 1, q_rows: 1, kv_rows: 131, heads: 4, head_dim: 16 },
            Dims { batch: 2, q_rows: 129, kv_rows: 9, heads: 2, head_dim: 5 },
        ]
        .iter()
        .enumerate()
        {
            let w = d.heads * d.head_dim;
            let q = values(d.batch * d.q_rows * w, 3 * i as u64);
            let k = values(d.batch * d.kv_rows * w, 3 * i as u64 + 1);
            let v = values(d.batch * d.kv_rows * w, 3 * i as u64 + 2);
            let scale = 1.0 / (d.head_dim as f32).sqrt();
            let mut out = vec![f32::NAN; d.batch * d.q_rows * w];
            attend(d, scale, &q, &k, &v, &mut out).unwrap();
            let want = reference(d, scale, &q, &k, &v);
            let err = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "{d:?}: max error {err}");
        }
    }

    #[test]
    fn attend_rejects_short_inputs_and_zeroes_empty_keys() {
        let d = Dims { batch: 1, q_rows: 2, kv_rows: 3, heads: 2, head_dim: 2 };
        let mut out = vec![1f32; 8];
        assert!(attend(&d, 1.0, &[0.0; 8], &[0.0; 11], &[0.0; 12], &mut out).is_err());
        assert!(attend(&d, 1.0, &[0.0; 8], &[0.0; 12], &[0.0; 12], &mut out[..7]).is_err());
        let d = Dims { kv_rows: 0, ..d };
        attend(&d, 1.0, &[0.0; 8], &[], &[], &mut out).unwrap();
        assert_eq!(out, [0.0; 8]);
    }
}
