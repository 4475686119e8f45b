//! The arithmetic of the fused ops on plain slices, one file per kernel family. Each entry point
//! checks the CPU at run time (`is_x86_feature_detected!`) and runs the widest variant this CPU
//! has (AVX-512, AVX2), else a portable loop with the same results: a build never depends on
//! its target CPU. [`parallel`] splits a kernel's rows over the engine's thread pool.

pub(crate) mod attend;
mod gelu;
#[cfg(target_arch = "arm")]
mod int8_armv7;
#[cfg(target_arch = "x86_64")]
mod int8_avx2;
#[cfg(target_arch = "x86_64")]
mod int8_avx512;
pub(crate) mod int8_dot;
#[cfg(target_arch = "aarch64")]
mod int8_neon;
#[cfg(target_arch = "aarch64")]
mod int8_neon_dot;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"))]
mod int8_tiles;
mod lanes;
pub(crate) mod normalize;
pub(crate) mod parallel;
pub(crate) mod quantize;
pub(crate) mod softmax;

/// The instruction set the float kernels (DynamicQuantizeLinear, LayerNorm, the attention's
/// softmax, GELU) run on here: `avx512f`, `avx2` or `portable` on x86_64, as each entry point
/// picks it; `neon` on aarch64 (their reductions written as NEON vectors in `lanes`, their
/// elementwise loops vectorized by LLVM, exp and erf from tract's kernels); `portable`
/// elsewhere.
pub(crate) fn float_variant() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "neon";
    }
    #[allow(unreachable_code)]
    "portable"
}
