//! Softmax numerators of a block of score rows, the middle step of fused attention:
//! per row `s = exp(s - max s)` and its sum (the division by the sum is left to the caller,
//! which applies it to the smaller [m, Dh] output instead of the [m, T] probabilities).
//!
//! Variants, picked at run time: x86_64 with AVX-512F, one pass for the max and one that
//! computes, stores and sums the exponentials with an exp of its own (within 2 ulp);
//! elsewhere vectorizable max, subtract and sum loops (built for AVX2 too, picked at run time)
//! around tract's exp kernel.

use tract_onnx::tract_core::tract_linalg::Func;
use tract_onnx::tract_hir::internal::TractResult;

use super::lanes::{fold16, MaxSelect, Sum};

/// Softmax numerators of each row of the row-major block `s` ([sums.len(), t]): row i becomes
/// `exp(s_i - max s_i)` and `sums[i]` its sum. On x86_64 with AVX-512F one pass finds the max
/// and a second computes, stores and sums the exponentials ([`wide::exp_shifted_512`]);
/// elsewhere the max, subtract and sum loops vectorize and tract's exp kernel runs on the row.
pub(crate) fn softmax_numerators(s: &mut [f32], t: usize, sums: &mut [f32]) -> TractResult<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for (row, z) in s.chunks_exact_mut(t).zip(sums.iter_mut()) {
            // SAFETY: the CPU has AVX-512F (checked just above).
            *z = unsafe { wide::exp_shifted_512(row) };
        }
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { softmax_numerators_256(s, t, sums) };
    }
    softmax_numerators_portable(s, t, sums)
}

/// [`softmax_numerators_portable`] with its max, subtract and sum loops built for AVX2 (the
/// same operations per lane: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn softmax_numerators_256(s: &mut [f32], t: usize, sums: &mut [f32]) -> TractResult<()> {
    softmax_numerators_portable(s, t, sums)
}

/// [`softmax_numerators`] without the AVX-512 kernel.
#[inline(always)]
fn softmax_numerators_portable(s: &mut [f32], t: usize, sums: &mut [f32]) -> TractResult<()> {
    let exp = Func::Exp.ew_f32()?;
    for (row, z) in s.chunks_exact_mut(t).zip(sums.iter_mut()) {
        let mx = fold16(row, f32::NEG_INFINITY, &MaxSelect).into_iter().fold(f32::NEG_INFINITY, f32::max);
        for x in row.iter_mut() {
            *x -= mx;
        }
        exp.run(row)?;
        *z = fold16(row, 0.0, &Sum).iter().sum();
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    /// `row = exp(row - max(row))`; returns the new row's sum. Empty rows give 0.
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_shifted_512(row: &mut [f32]) -> f32 {
        let n = row.len();
        let p = row.as_mut_ptr();
        let rest = n % 16;
        let tail: __mmask16 = ((1u32 << rest) - 1) as u16;
        let end = n - rest;
        // SAFETY (every load and store below): full vectors at i < end read p[i..i + 16]
        // inside the row; the tail is masked to its `rest` elements.
        unsafe {
            let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
            let mut i = 0;
            while i + 64 <= end {
                for (l, acc) in m.iter_mut().enumerate() {
                    *acc = _mm512_max_ps(*acc, _mm512_loadu_ps(p.add(i + 16 * l)));
                }
                i += 64;
            }
            while i < end {
                m[0] = _mm512_max_ps(m[0], _mm512_loadu_ps(p.add(i)));
                i += 16;
            }
            if rest > 0 {
                m[1] = _mm512_mask_max_ps(m[1], tail, m[1], _mm512_maskz_loadu_ps(tail, p.add(end)));
            }
            let mx = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(
                _mm512_max_ps(m[0], m[1]),
                _mm512_max_ps(m[2], m[3]),
            )));
            let mut sum = [_mm512_setzero_ps(); 2];
            i = 0;
            while i + 32 <= end {
                for (l, acc) in sum.iter_mut().enumerate() {
                    let e = exp(_mm512_sub_ps(_mm512_loadu_ps(p.add(i + 16 * l)), mx));
                    _mm512_storeu_ps(p.add(i + 16 * l), e);
                    *acc = _mm512_add_ps(*acc, e);
                }
                i += 32;
            }
            while i < end {
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mx));
                _mm512_storeu_ps(p.add(i), e);
                sum[0] = _mm512_add_ps(sum[0], e);
                i += 16;
            }
            if rest > 0 {
                let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.add(end)), mx));
                _mm512_mask_storeu_ps(p.add(end), tail, e);
                sum[1] = _mm512_mask_add_ps(sum[1], tail, sum[1], e);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(sum[0], sum[1]))
        }
    }

    /// `exp(x)` for x <= 0 (inputs below -87.3 give about 1e-38 rather than a denormal or 0),
    /// Cephes' `expf` scheme: x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2 split in two parts),
    /// `exp(r) = 1 + r + r^2 P(r)` with its degree-5 polynomial, then `* 2^n` by `vscalefps`.
    /// Within 2 ulp of the true value (tested against f64).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn exp(x: __m512) -> __m512 {
        const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.336_54));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut poly = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(*c));
        }
        let e = _mm512_fmadd_ps(poly, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(e, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_exp_is_within_two_ulp() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F here: the portable softmax is used (and tested) instead");
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0f64;
        for i in 0..=87_000 {
            let x = -(i as f32) * 1e-3;
            let xs = [x; 16];
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F checked above; 16-element arrays.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), wide::exp(_mm512_loadu_ps(xs.as_ptr()))) };
            let exact = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((f64::from(out[0]) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // Far below: tiny, positive, finite.
        let mut out = [0f32; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), wide::exp(_mm512_set1_ps(-1e4))) };
        assert!(out[0] > 0.0 && out[0] < 1e-37);
    }

    #[test]
    fn softmax_numerators_match_f64_for_every_tail_length() {
        for t in [1, 2, 15, 16, 17, 31, 33, 64, 65, 130] {
            let m = 3;
            let mut s: Vec<f32> = values(m * t, t as u64).iter().map(|x| x * 20.0).collect();
            let orig = s.clone();
            let mut sums = vec![0f32; m];
            let mut s2 = s.clone();
            let mut sums2 = sums.clone();
            softmax_numerators(&mut s, t, &mut sums).unwrap();
            softmax_numerators_portable(&mut s2, t, &mut sums2).unwrap();
            for (s, sums) in [(&s, &sums), (&s2, &sums2)] {
                for i in 0..m {
                    let row = &orig[i * t..(i + 1) * t];
                    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f64> = row.iter().map(|x| f64::from(x - mx).exp()).collect();
                    for (a, b) in s[i * t..(i + 1) * t].iter().zip(&e) {
                        assert!((f64::from(*a) - b).abs() <= 3e-7 * b.max(1e-30), "t {t}: {a} vs {b}");
                    }
                    let z: f64 = e.iter().sum();
                    assert!((f64::from(sums[i]) - z).abs() <= 1e-6 * z, "t {t}: sum {} vs {z}", sums[i]);
                }
            }
        }
    }
}
