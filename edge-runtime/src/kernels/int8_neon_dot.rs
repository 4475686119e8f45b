//! The int8 product on aarch64 with the dot-product extension (Cortex-A55, A76 and later:
//! `sdot`): [`rows`] computes [`PackedLinear::run`]'s formula (see `int8_dot`) for a chunk of
//! rows, bit for bit.
//!
//! `sdot` multiplies s8 by s8, and the activations are u8. Each activation is flipped to s8
//! (`x ^ 0x80`, that is `x - 128`), so the kernel sums `s = sum_k (x_k - 128) * W[k, n]` and the
//! epilogue adds `(128 - x_zp) * colsum_n` back: `s + (128 - x_zp) * colsum_n` is the formula's
//! `sum_k x_k W[k, n] - x_zp * colsum_n` exactly (|s| <= 128 * 128 * K < 2^31 for K <= 2^16).
//!
//! Activations: each row is flipped once per call into a per-thread buffer whose rows are
//! zero-padded to whole 16-byte vectors (4 groups of 4 K values; a flipped 0 contributes 0).
//! Weights: the packed layout is read as it is: 16 bytes of a quad are 4 columns x 4 K values,
//! which is `sdot`'s by-element operand shape: `sdot acc.4s, w.16b, a.4b[l]` adds, to each of the
//! 4 columns, its 4 weights of group `g + l` times the row's 4 activations of that group.
//!
//! Tile: [`MR`] rows x 16 columns (one quad), 16 accumulators of 4 i32 (plus 4 weight vectors
//! and 4 activation vectors: 24 of the 32 registers). Loop order: panel, quad, rows, K in steps
//! of 4 groups (one activation vector per row per step).

use std::arch::aarch64::*;
use std::arch::asm;

use super::int8_dot::{PackedLinear, Quad, LANES, NR, VECS, ZERO_QUAD};
use super::int8_tiles::{for_each_tile, pad_rows};

/// Rows of one tile.
pub(super) const MR: usize = 4;
/// K groups per activation vector (16 bytes).
const STEP: usize = 4;

thread_local! {
    /// Each thread's flipped activations, kept between calls (see `int8_avx2`'s buffer).
    static FLIPPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// All columns for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
///
/// # Safety
/// The CPU must have NEON and the dot-product extension; `a.len() == rows * K`,
/// `out.len() == rows * N`.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    FLIPPED.with_borrow_mut(|flipped| {
        let stride = pw.groups.div_ceil(STEP) * STEP * 4;
        pad_rows(flipped, pw, a, rows, stride, |x| x ^ 0x80);
        // SAFETY: as for this function; `flipped` holds rows x stride values.
        unsafe { blocks(pw, flipped, stride, rows, x_scale, x_zp, out) }
    })
}

/// [`rows`] on the flipped activations (`stride` bytes per row).
///
/// # Safety
/// As [`rows`]; `flipped.len() == rows * stride`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn blocks(
    pw: &PackedLinear,
    flipped: &[u8],
    stride: usize,
    rows: usize,
    x_scale: f32,
    x_zp: u8,
    out: &mut [f32],
) {
    let n = pw.n;
    let o = out.as_mut_ptr();
    for_each_tile::<u8, MR>(pw, flipped, stride, rows, LANES, |p, v, r0, mv, a_rows| {
        // SAFETY: as for this function; every pointer starts a row of `flipped`.
        unsafe { tile(pw, p, v, a_rows, mv, x_scale, x_zp, o.add(r0 * n)) }
    });
}

/// `acc += w * a.4b[L]` for each of the 4 column vectors: `sdot` by element.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: usize>(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: the CPU has the dot-product extension (the caller's contract); registers only.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// One group `L` of a step: the 4 column vectors of `quad` against each row's lane `L`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn group<const L: usize>(acc: &mut [[int32x4_t; 4]; MR], quad: *const Quad, a: &[int8x16_t; MR]) {
    let q = quad as *const i8;
    let w: [int8x16_t; 4] = std::array::from_fn(|c| unsafe { vld1q_s8(q.add(16 * c)) });
    for (row, &av) in acc.iter_mut().zip(a) {
        for (r, &wv) in row.iter_mut().zip(&w) {
            *r = unsafe { sdot_lane::<L>(*r, wv, av) };
        }
    }
}

/// One MR x 16 tile: panel `p`, quad `v` of it, flipped rows `a_rows` (the first `mv` are
/// stored), output row 0 at `out` (row stride N).
#[target_feature(enable = "neon,dotprod")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    pw: &PackedLinear,
    p: usize,
    v: usize,
    a_rows: &[*const u8; MR],
    mv: usize,
    x_scale: f32,
    x_zp: u8,
    out: *mut f32,
) {
    let mut acc = [[vdupq_n_s32(0); 4]; MR];
    // Quad of group g: `first + g * VECS`.
    let first = pw.quads.as_ptr().add(p * pw.groups * VECS + v);
    let mut g = 0;
    while g < pw.groups {
        let a: [int8x16_t; MR] = std::array::from_fn(|i| unsafe { vld1q_s8(a_rows[i].add(4 * g) as *const i8) });
        // Groups past K (in the last step) read zero weights.
        let quad =
            |l: usize| if g + l < pw.groups { unsafe { first.add((g + l) * VECS) } } else { &ZERO_QUAD as *const Quad };
        group::<0>(&mut acc, quad(0), &a);
        group::<1>(&mut acc, quad(1), &a);
        group::<2>(&mut acc, quad(2), &a);
        group::<3>(&mut acc, quad(3), &a);
        g += STEP;
    }
    let col = p * NR + v * LANES;
    let n = pw.n;
    let width = (n - col).min(LANES);
    let shift = vdupq_n_s32(128 - i32::from(x_zp));
    for (i, row) in acc.iter().enumerate().take(mv) {
        let mut y = [0f32; LANES];
        for (c, &s) in row.iter().enumerate() {
            let cc = col + 4 * c;
            let centered = vmlaq_s32(s, shift, vld1q_s32(pw.colsum.as_ptr().add(cc)));
            let scale = vmulq_f32(vdupq_n_f32(x_scale), vld1q_f32(pw.w_scale.as_ptr().add(cc)));
            let yv = vaddq_f32(vmulq_f32(vcvtq_f32_s32(centered), scale), vld1q_f32(pw.bias.as_ptr().add(cc)));
            vst1q_f32(y.as_mut_ptr().add(4 * c), yv);
        }
        std::ptr::copy_nonoverlapping(y.as_ptr(), out.add(i * n + col), width);
    }
}
