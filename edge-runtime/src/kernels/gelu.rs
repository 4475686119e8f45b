//! GELU (erf form) in place, for the int8 linears that end in one: exactly tract 0.23.9's
//! `GeluExact` (its erf kernel, the same operations in the same order), so a fused linear + GELU
//! gives the bits of the unfused plan. The two elementwise loops are also built for AVX-512F and
//! AVX2 (the same operations per element, so the same bits), picked at run time.

use tract_onnx::tract_core::tract_linalg::Func;
use tract_onnx::tract_hir::internal::TractResult;

/// tract 0.23.9's `GeluExact` on f32, the same operations in the same order:
/// `s = x * (1 / sqrt 2)`, `e = erf(s)` (tract's erf kernel), `x = (x * 0.5) * (e + 1)`.
pub(crate) fn gelu_in_place(xs: &mut [f32]) -> TractResult<()> {
    const CHUNK: usize = 1024;
    let erf = Func::Erf.ew_f32()?;
    let c = 2f32.sqrt().recip();
    let mut scratch = [0f32; CHUNK];
    for chunk in xs.chunks_mut(CHUNK) {
        let s = &mut scratch[..chunk.len()];
        gelu_loops(chunk, s, c, false);
        erf.run(s)?;
        gelu_loops(chunk, s, c, true);
    }
    Ok(())
}

/// The two elementwise loops of [`gelu_in_place`] (`finish`: the second), built for AVX-512F
/// and AVX2 too and picked at run time.
fn gelu_loops(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
    #[inline(always)]
    fn body(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
        if finish {
            x.iter_mut().zip(s.iter()).for_each(|(x, e)| *x = (*x * 0.5) * (*e + 1.0));
        } else {
            s.iter_mut().zip(x.iter()).for_each(|(s, x)| *s = *x * c);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn body_512(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
        body(x, s, c, finish)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn body_256(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
        body(x, s, c, finish)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { body_512(x, s, c, finish) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { body_256(x, s, c, finish) };
    }
    body(x, s, c, finish)
}
