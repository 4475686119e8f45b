//! LayerNorm over the last axis on slices, in f32 as ONNX defines it (`stash_type` float):
//! per row of H values `mean = sum(x) / H`, `d = x - mean`, `var = sum(d^2) / H`,
//! `y = d * (1 / sqrt(var + epsilon)) * gamma + beta`. The sums run in 16 lanes so the loops
//! vectorize (NEON written out on aarch64, `lanes::fold16`); the same code is also built for
//! AVX-512F and AVX2, picked at run time.

use super::lanes::{fold16, SquaredDeviation, Sum};

/// LayerNorm of each row of `x` (rows of `gamma.len()` values) in place. Callers check that
/// `gamma` and `beta` have the same length; a trailing partial row is left alone.
pub fn normalize_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { normalize_rows_512(x, gamma, beta, eps) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { normalize_rows_256(x, gamma, beta, eps) };
    }
    normalize_rows_body(x, gamma, beta, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn normalize_rows_256(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    normalize_rows_body(x, gamma, beta, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn normalize_rows_512(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    normalize_rows_body(x, gamma, beta, eps)
}

/// [`normalize_rows`] for the build's baseline target (the portable variant).
#[inline(always)]
pub(crate) fn normalize_rows_body(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    if h == 0 {
        return;
    }
    let inv_h = 1.0 / h as f32;
    for row in x.chunks_exact_mut(h) {
        let mean = fold16(row, 0.0, &Sum).iter().sum::<f32>() * inv_h;
        let var = fold16(row, 0.0, &SquaredDeviation(mean)).iter().sum::<f32>() * inv_h;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}
