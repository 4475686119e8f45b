//! u8 dynamic quantization of f32 activations as ONNX `DynamicQuantizeLinear` defines it: the
//! range (with 0) gives the scale and zero point ([`scale_and_zero_point`]), then
//! `y = saturate(round_half_even(x / scale) + zp)` ([`quantize`]).
//!
//! The same arithmetic as tract-onnx 0.23.9's `DynamicQuantizeLinearU8`, in loops LLVM
//! vectorizes (on SSE2, and on x86_64 also built for AVX2 and AVX-512F, picked at run time): a
//! 16-lane min/max, and round-half-to-even by the float "magic number"
//! (`(v + 1.5 * 2^23) - 1.5 * 2^23` rounds `v` to an integer, ties to even, for `|v| < 2^22`;
//! here `|x / scale| <= 255` by construction of the scale). Results are bit-identical to
//! tract's op for finite inputs (checked in the tests below against the ONNX reference values,
//! and against tract's op in `benches/tests/tract_ops.rs`); a NaN input element becomes 0 here
//! and the zero point in tract's op.

/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer,
/// ties to even (the default rounding mode).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// 2^23: for an integer-valued q in [0, 2^23), the low mantissa bits of q + 2^23 are q.
const INT_MAGIC: f32 = 8_388_608.0;

/// (min(x, 0), max(x, 0)) in 16 independent lanes so it vectorizes; `min` and `max` are the
/// per-lane steps (lane, value) -> lane.
#[inline(always)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
fn min_max_lanes(xs: &[f32], min: impl Fn(f32, f32) -> f32, max: impl Fn(f32, f32) -> f32) -> (f32, f32) {
    let mut mn = [0f32; 16];
    let mut mx = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            mn[i] = min(mn[i], c[i]);
            mx[i] = max(mx[i], c[i]);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        mn[i] = min(mn[i], v);
        mx[i] = max(mx[i], v);
    }
    (mn.iter().copied().fold(0f32, f32::min), mx.iter().copied().fold(0f32, f32::max))
}

/// (min(x, 0), max(x, 0)) ignoring NaNs, with `f32::min`/`max`: what SSE2 vectorizes best. On
/// aarch64 LLVM keeps this fold scalar, so it runs as two NEON passes (`fminnm`, `fmaxnm` on
/// vectors: the same values).
#[inline(always)]
fn min_max_body(xs: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "aarch64")]
    {
        use super::lanes::{fold16, MaxNum, MinNum};
        let mn = fold16(xs, 0.0, &MinNum).into_iter().fold(0f32, f32::min);
        let mx = fold16(xs, 0.0, &MaxNum).into_iter().fold(0f32, f32::max);
        (mn, mx)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        min_max_lanes(xs, f32::min, f32::max)
    }
}

/// [`min_max_body`] with compare-and-select (a NaN compares false, so it is ignored too):
/// this maps to one `vminps`/`vmaxps` per vector with AVX2 and AVX-512, where LLVM's
/// `f32::min` is several times slower (and SSE2's compare-and-select is slower than its
/// `f32::min`). The same (min, max) up to the sign of a zero, which gives the same scale and zero point.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn min_max_select(xs: &[f32]) -> (f32, f32) {
    min_max_lanes(xs, |m, x| if x < m { x } else { m }, |m, x| if x > m { x } else { m })
}

/// `y = saturate(round_half_even(x / scale) + zp)` for a finite, nonzero scale.
#[inline(always)]
fn quantize_body(xs: &[f32], scale: f32, zpf: f32, ys: &mut [u8]) {
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        let v = *x / scale;
        let r = (v + ROUND_MAGIC) - ROUND_MAGIC;
        // `max` first: a NaN becomes 0. q is then an integer in [0, 255], and adding 2^23
        // puts it in the low mantissa bits: a float-to-int conversion LLVM vectorizes (a
        // saturating `as u8` or `as i32` is 3-4x slower here).
        // Not `clamp`: it keeps NaN, which `max` turns into 0.
        #[allow(clippy::manual_clamp)]
        let q = (r + zpf).max(0.0).min(255.0);
        *y = ((q + INT_MAGIC).to_bits() & 0xFF) as u8;
    }
}

/// The two loops compiled for wider x86_64 vectors (AVX-512F, AVX2) than the SSE2 baseline
/// of every x86_64 build, picked at run time. The quantization is the same code (LLVM
/// vectorizes it per target; identical results, as Rust never contracts `a * b + c` into a
/// fused multiply-add); the range uses [`min_max_select`]. On the AVX-512 VNNI test machine
/// (128 x 1536 values): 107 us baseline, 54 us AVX2, 32 us AVX-512F.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub(super) fn min_max_512(xs: &[f32]) -> (f32, f32) {
        super::min_max_select(xs)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn min_max_256(xs: &[f32]) -> (f32, f32) {
        super::min_max_select(xs)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn quantize_512(xs: &[f32], scale: f32, zpf: f32, ys: &mut [u8]) {
        super::quantize_body(xs, scale, zpf, ys)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_256(xs: &[f32], scale: f32, zpf: f32, ys: &mut [u8]) {
        super::quantize_body(xs, scale, zpf, ys)
    }
}

fn min_max_with_zero(xs: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { wide::min_max_512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { wide::min_max_256(xs) };
        }
    }
    min_max_body(xs)
}

/// Scale and zero point as ONNX defines them (and tract computes them).
pub fn scale_and_zero_point(xs: &[f32]) -> (f32, u8) {
    let (min, max) = min_max_with_zero(xs);
    let scale = (max - min) / 255.0;
    let zp = (-min / scale).round_ties_even().clamp(0.0, 255.0);
    // -min / scale is NaN when the input is all zeros: tract's op gets 0 through `f32::max`.
    let zp = if zp.is_nan() { 0.0 } else { zp };
    (scale, zp as u8)
}

/// `y = saturate(round_half_even(x / scale) + zp)`.
pub fn quantize(xs: &[f32], scale: f32, zp: u8, ys: &mut [u8]) {
    let zpf = f32::from(zp);
    if scale == 0.0 || !scale.is_finite() {
        // All-zero input (scale 0): x / 0 is NaN, which tract's op maps to 0 + zp.
        ys.iter_mut().for_each(|y| *y = zp);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { wide::quantize_512(xs, scale, zpf, ys) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { wide::quantize_256(xs, scale, zpf, ys) };
        }
    }
    quantize_body(xs, scale, zpf, ys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ONNX operator documentation's examples (also tract's own tests).
    #[test]
    fn onnx_reference_values() {
        let data: [(&[f32], f32, u8, &[u8]); 3] = [
            (&[0., 2., -3., -2.5, 1.34, 0.5], 0.019_607_844, 153, &[153, 255, 0, 26, 221, 179]),
            (&[-1., -2.1, -1.3, -2.5, -3.34, -4.], 0.015_686_275, 255, &[191, 121, 172, 96, 42, 0]),
            (
                &[1., 2.1, 1.3, 2.5, 3.34, 4., 1.5, 2.6, 3.9, 4., 3., 2.345],
                0.015_686_275,
                0,
                &[64, 134, 83, 159, 213, 255, 96, 166, 249, 255, 191, 149],
            ),
        ];
        for (xs, scale, zp, want) in data {
            let (s, z) = scale_and_zero_point(xs);
            assert!((s - scale).abs() < 1e-8);
            assert_eq!(z, zp);
            let mut ys = vec![0u8; xs.len()];
            quantize(xs, s, z, &mut ys);
            assert_eq!(ys, want);
        }
    }

    #[test]
    fn ties_round_to_even() {
        // scale exactly 1: 0.5 -> 0 (+127), and a zero point on a tie: -min/scale = 126.5 -> 126.
        let xs = [-127f32, 128., 0.5];
        let (s, z) = scale_and_zero_point(&xs);
        assert_eq!((s, z), (1.0, 127));
        let mut ys = [0u8; 3];
        quantize(&xs, s, z, &mut ys);
        assert_eq!(ys, [0, 255, 127]);
        let (s, z) = scale_and_zero_point(&[-253f32, 257.]);
        assert_eq!((s, z), (2.0, 126));
    }

    #[test]
    fn matches_scalar_definition_on_random_data() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for len in [1usize, 15, 16, 17, 1000, 4099] {
            let xs: Vec<f32> = (0..len).map(|_| (next() - 0.3) * 7.0).collect();
            let (s, z) = scale_and_zero_point(&xs);
            let mn = xs.iter().fold(0f32, |a, &v| a.min(v));
            let mx = xs.iter().fold(0f32, |a, &v| a.max(v));
            assert_eq!(s, (mx - mn) / 255.0);
            let mut ys = vec![0u8; len];
            quantize(&xs, s, z, &mut ys);
            for (x, y) in xs.iter().zip(&ys) {
                let want = ((x / s).round_ties_even() as i32 + i32::from(z)).clamp(0, 255) as u8;
                assert_eq!(*y, want, "x = {x}");
            }
        }
        // Every build of the loops this CPU can run gives the baseline's results.
        #[cfg(target_arch = "x86_64")]
        {
            let xs: Vec<f32> = (0..4099).map(|_| (next() - 0.6) * 3.0).collect();
            let (s, z) = scale_and_zero_point(&xs);
            let mut want = vec![0u8; xs.len()];
            quantize_body(&xs, s, f32::from(z), &mut want);
            let mm = min_max_body(&xs);
            for (feature, ok) in [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ] {
                if !ok {
                    eprintln!("{feature}: not on this CPU, not compared");
                    continue;
                }
                let mut got = vec![0u8; xs.len()];
                // SAFETY: the feature was detected just above.
                let got_mm = unsafe {
                    if feature == "avx2" {
                        wide::quantize_256(&xs, s, f32::from(z), &mut got);
                        wide::min_max_256(&xs)
                    } else {
                        wide::quantize_512(&xs, s, f32::from(z), &mut got);
                        wide::min_max_512(&xs)
                    }
                };
                assert_eq!(got, want, "{feature}");
                assert_eq!(got_mm, mm, "{feature}");
            }
        }
        let zeros = [0f32; 5];
        let (s, z) = scale_and_zero_point(&zeros);
        assert_eq!((s, z), (0.0, 0));
        let mut ys = [9u8; 5];
        quantize(&zeros, s, z, &mut ys);
        assert_eq!(ys, [0; 5]);
    }
}
