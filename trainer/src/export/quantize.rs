//! Weight quantization for the int8 export: per-output-channel symmetric s8.
//!
//! A linear layer `y = x W^T + b` with `W` [N out, K in] becomes
//! `y[n] ≈ (x_q - x_zp) · Wq[:, n] * (x_scale * w_scale[n]) + b[n]`, with
//! `w_scale[n] = max_k |W[n, k]| / 127` and `Wq[k, n] = round_half_even(W[n, k] / w_scale[n])`
//! clamped to [-127, 127] (the symmetric range: zero point 0, -128 unused). The quantized
//! weight is stored transposed, [K, N], the layout ONNX `MatMulInteger(x [.., K], W [K, N])`
//! reads. The rounding error of one weight is at most `w_scale[n] / 2`: one quantization step
//! is `w_scale[n]`.

/// Largest magnitude of a symmetric s8 value.
pub const Q_MAX: f32 = 127.0;

/// One linear layer's weight, quantized per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// K, input features.
    pub k: usize,
    /// N, output features.
    pub n: usize,
    /// [K, N] row-major (the transpose of the PyTorch [N, K] layout).
    pub q: Vec<i8>,
    /// [N] per-output-channel scales (> 0).
    pub scales: Vec<f32>,
}

impl QuantizedWeight {
    /// Dequantized weight, [N, K] row-major (the input layout), for error checks.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for kk in 0..self.k {
            for nn in 0..self.n {
                w[nn * self.k + kk] = f32::from(self.q[kk * self.n + nn]) * self.scales[nn];
            }
        }
        w
    }
}

/// Quantizes `w` ([N, K] row-major, `w.len() == n * k`) per output channel. A channel whose
/// weights are all zero gets scale 1 (and all-zero codes), so no scale is ever 0.
/// Returns `None` when the length does not match or a weight is not finite.
pub fn quantize_per_channel(w: &[f32], n: usize, k: usize) -> Option<QuantizedWeight> {
    if w.len() != n * k || w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let scales: Vec<f32> = w
        .chunks(k.max(1))
        .take(n)
        .map(|row| {
            let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            if m > 0.0 {
                m / Q_MAX
            } else {
                1.0
            }
        })
        .collect();
    let mut q = vec![0i8; n * k];
    for nn in 0..n {
        let s = scales[nn];
        for kk in 0..k {
            let v = (w[nn * k + kk] / s).round_ties_even().clamp(-Q_MAX, Q_MAX);
            q[kk * n + nn] = v as i8;
        }
    }
    Some(QuantizedWeight { k, n, q, scales })
}

/// Quantizes the rows of a table `w` ([rows, cols] row-major) symmetrically to s8, one scale
/// per row (the embedding table of an int8-embeddings export: a `Gather` of a code row and of
/// its scale, then a multiply, gives the row back within half a step). Same rules as
/// [`quantize_per_channel`], but the codes keep the input layout, [rows, cols].
/// Returns `None` when the length does not match or a value is not finite.
pub fn quantize_table_rows(w: &[f32], rows: usize, cols: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    // A table row is an output channel of a [rows, cols] "weight"; the codes come back in
    // [cols, rows] and are transposed to the table's layout.
    let qw = quantize_per_channel(w, rows, cols)?;
    let mut q = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            q[r * cols + c] = qw.q[c * rows + r];
        }
    }
    Some((q, qw.scales))
}

/// [N, K] row-major -> [K, N] row-major.
pub fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * k];
    for nn in 0..n {
        for kk in 0..k {
            t[kk * n + nn] = w[nn * k + kk];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_and_codes() {
        // Channel 0: max |w| = 2.54 -> scale 0.02; 1.27 / 0.02 = 63.5 rounds to even 64.
        // Channel 1: all zero -> scale 1, codes 0. Channel 2: max 127 -> scale 1.
        let w = [2.54f32, -1.27, 0.01, 0.0, 0.0, 0.0, -127.0, 0.5, 1.5];
        let qw = quantize_per_channel(&w, 3, 3).unwrap();
        assert!((qw.scales[0] - 0.02).abs() < 1e-7);
        assert_eq!(qw.scales[1], 1.0);
        assert_eq!(qw.scales[2], 1.0);
        // [K, N] layout: column n holds channel n.
        let col = |nn: usize| (0..3).map(|kk| qw.q[kk * 3 + nn]).collect::<Vec<_>>();
        assert_eq!(col(0), vec![127, -64, 0]);
        assert_eq!(col(1), vec![0, 0, 0]);
        // 0.5 -> 0 and 1.5 -> 2 (ties to even).
        assert_eq!(col(2), vec![-127, 0, 2]);
    }

    #[test]
    fn error_is_at_most_half_a_step() {
        let (n, k) = (7, 33);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1 + i % 3) as f32).collect();
        let qw = quantize_per_channel(&w, n, k).unwrap();
        let d = qw.dequantize();
        for nn in 0..n {
            for kk in 0..k {
                let e = (d[nn * k + kk] - w[nn * k + kk]).abs();
                assert!(e <= qw.scales[nn] * 0.5 + 1e-6, "channel {nn}: error {e} > half step");
            }
        }
        assert!(quantize_per_channel(&w, n, k + 1).is_none());
        assert!(quantize_per_channel(&[f32::NAN], 1, 1).is_none());
    }

    #[test]
    fn table_rows_keep_the_layout() {
        // Row 0: max 2.54 -> scale 0.02, codes [127, -64, 0]; row 1 all zero -> scale 1.
        let w = [2.54f32, -1.27, 0.01, 0.0, 0.0, 0.0];
        let (q, s) = quantize_table_rows(&w, 2, 3).unwrap();
        assert_eq!(q, vec![127, -64, 0, 0, 0, 0]);
        assert!((s[0] - 0.02).abs() < 1e-7 && s[1] == 1.0);
        assert!(quantize_table_rows(&w, 2, 2).is_none());
    }

    #[test]
    fn transpose_swaps_layout() {
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
