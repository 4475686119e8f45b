//! Reductions written as 16 independent lanes (lane l takes elements l, l + 16, ...), combined
//! by the caller, so that they vectorize. LLVM vectorizes the generic [`lanes`] on x86_64, and
//! on aarch64 the sums and the compare-and-select maximum too, but there it keeps the
//! `f32::min` / `f32::max` fold scalar (`fminnm s`, `fmaxnm s` in the disassembly of an
//! optimized build). So the steps the kernels use are also written as NEON vectors of 4 lanes
//! ([`Step`], [`fold16`]): the same operations per lane in the same order, so the same bits on
//! every target.

/// `row` folded into 16 lanes by `f`, each lane starting from `init`.
#[inline(always)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
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

/// One per-lane step `(lane, value) -> lane`, as a scalar and (on aarch64) as 4 NEON lanes
/// computing the same operations.
pub(crate) trait Step {
    fn scalar(&self, a: f32, x: f32) -> f32;
    #[cfg(target_arch = "aarch64")]
    fn neon(
        &self,
        a: std::arch::aarch64::float32x4_t,
        x: std::arch::aarch64::float32x4_t,
    ) -> std::arch::aarch64::float32x4_t;
}

/// `a + x`.
pub(crate) struct Sum;
/// `a + (x - mean) * (x - mean)`.
pub(crate) struct SquaredDeviation(pub f32);
/// `x` where `x > a`, else `a` (a NaN `x` is ignored).
pub(crate) struct MaxSelect;
/// `f32::min` (IEEE minNum: a NaN is ignored). Used on aarch64 only (elsewhere the range of
/// `quantize` folds both ends in one pass).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) struct MinNum;
/// `f32::max` (IEEE maxNum: a NaN is ignored). Used on aarch64 only, as [`MinNum`].
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) struct MaxNum;

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;

// SAFETY (every `neon` below): NEON is part of the aarch64 base architecture; registers only.
impl Step for Sum {
    #[inline(always)]
    fn scalar(&self, a: f32, x: f32) -> f32 {
        a + x
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn neon(&self, a: float32x4_t, x: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, x) }
    }
}

impl Step for SquaredDeviation {
    #[inline(always)]
    fn scalar(&self, a: f32, x: f32) -> f32 {
        a + (x - self.0) * (x - self.0)
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn neon(&self, a: float32x4_t, x: float32x4_t) -> float32x4_t {
        unsafe {
            let d = vsubq_f32(x, vdupq_n_f32(self.0));
            vaddq_f32(a, vmulq_f32(d, d))
        }
    }
}

impl Step for MaxSelect {
    #[inline(always)]
    fn scalar(&self, a: f32, x: f32) -> f32 {
        if x > a {
            x
        } else {
            a
        }
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn neon(&self, a: float32x4_t, x: float32x4_t) -> float32x4_t {
        unsafe { vbslq_f32(vcgtq_f32(x, a), x, a) }
    }
}

impl Step for MinNum {
    #[inline(always)]
    fn scalar(&self, a: f32, x: f32) -> f32 {
        a.min(x)
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn neon(&self, a: float32x4_t, x: float32x4_t) -> float32x4_t {
        unsafe { vminnmq_f32(a, x) }
    }
}

impl Step for MaxNum {
    #[inline(always)]
    fn scalar(&self, a: f32, x: f32) -> f32 {
        a.max(x)
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn neon(&self, a: float32x4_t, x: float32x4_t) -> float32x4_t {
        unsafe { vmaxnmq_f32(a, x) }
    }
}

/// [`lanes`] with `step`: NEON vectors on aarch64, the generic loop elsewhere (same values).
#[inline(always)]
pub(crate) fn fold16(row: &[f32], init: f32, step: &impl Step) -> [f32; 16] {
    #[cfg(target_arch = "aarch64")]
    {
        let mut acc = [unsafe { vdupq_n_f32(init) }; 4];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` holds 16 values; lanes 4i .. 4i + 4 are in it.
                *a = step.neon(*a, unsafe { vld1q_f32(c.as_ptr().add(4 * i)) });
            }
        }
        let mut out = [0f32; 16];
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds 16 values.
            unsafe { vst1q_f32(out.as_mut_ptr().add(4 * i), *a) };
        }
        for (a, &x) in out.iter_mut().zip(chunks.remainder()) {
            *a = step.scalar(*a, x);
        }
        out
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        lanes(row, init, |a, x| step.scalar(a, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step through [`fold16`] gives the generic [`lanes`]' bits, for every tail length
    /// and with NaNs and signed zeros in the data.
    /// A fold of a row into 16 lanes.
    type Fold<'a> = &'a dyn Fn(&[f32]) -> [f32; 16];

    #[test]
    fn fold16_equals_the_generic_lanes() {
        let steps: [(Fold, Fold); 5] = [
            (&|r| fold16(r, 0.0, &Sum), &|r| lanes(r, 0.0, |a, x| a + x)),
            (&|r| fold16(r, 0.0, &SquaredDeviation(0.3)), &|r| lanes(r, 0.0, |a, x| a + (x - 0.3) * (x - 0.3))),
            (&|r| fold16(r, f32::NEG_INFINITY, &MaxSelect), &|r| {
                lanes(r, f32::NEG_INFINITY, |a, x| if x > a { x } else { a })
            }),
            (&|r| fold16(r, 0.0, &MinNum), &|r| lanes(r, 0.0, f32::min)),
            (&|r| fold16(r, 0.0, &MaxNum), &|r| lanes(r, 0.0, f32::max)),
        ];
        for n in [0, 1, 15, 16, 17, 33, 100] {
            let mut row: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
            if n > 5 {
                row[3] = f32::NAN;
                row[5] = -0.0;
            }
            for (i, (fast, generic)) in steps.iter().enumerate() {
                let bits = |v: [f32; 16]| v.map(f32::to_bits);
                assert_eq!(bits(fast(&row)), bits(generic(&row)), "step {i}, {n} values");
            }
        }
    }
}
