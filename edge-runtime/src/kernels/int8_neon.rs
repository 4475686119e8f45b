//! The int8 product on aarch64 without the dot-product extension (Cortex-A53, A72: Raspberry Pi
//! 3 and 4 class): [`rows`] computes [`PackedLinear::run`]'s formula (see `int8_dot`) for a
//! chunk of rows, bit for bit.
//!
//! Two paths, both exact:
//! - Symmetric weights (no -128: every bundle `ckd export` writes): the activations are flipped
//!   to s8 (`x ^ 0x80`, that is `x - 128`, corrected in the epilogue as in `int8_neon_dot`) and
//!   multiplied as bytes, `smull` / `smlal` (8 s8 x s8 products per instruction), two K groups
//!   summed in i16 lanes (|sum| <= 2 * 128 * 127 < 2^15) and added pairwise into i32 lanes by
//!   `sadalp`: 8 multiply-adds per multiply instruction ([`rows_narrow`]).
//! - Any weights: both operands widened to i16 and multiplied with `smlal` / `smlal2` (i16 x i16
//!   summed into i32 lanes), 4 multiply-adds per instruction, as in `int8_avx2`.
//!
//! Activations: each row's K u8 values are widened once per call into a per-thread i16 buffer,
//! zero-padded to whole groups of 4. Weights: the packed layout is read as it is: 8 bytes of a
//! quad are 2 columns x 4 K values; widened, each column's 4 weights meet the row's 4
//! activations of the group lane by lane, so an accumulator holds one column's 4 partial sums,
//! added pairwise (`addp`) in the epilogue.
//!
//! Tile: [`MR`] rows x 8 columns (half a quad), 24 accumulators of 4 i32 (plus 4 weight and 2
//! activation vectors: 30 of the 32 registers). Loop order: panel, 8-column block, rows, K, so
//! a block's weights (8 x K bytes) stay in L1 while the rows stream.

use std::arch::aarch64::*;

use super::int8_dot::{PackedLinear, Quad, NR, VECS, ZERO_QUAD};
use super::int8_tiles::{for_each_tile, pad_rows};

/// Rows of one tile.
pub(super) const MR: usize = 3;
/// Columns of one tile (half a packed quad).
const COLS: usize = 8;

thread_local! {
    /// Each thread's widened activations, kept between calls (see `int8_avx2`'s buffer).
    static WIDE: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's flipped activations for the 8-bit path, kept between calls.
    static FLIPPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// All columns for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
///
/// # Safety
/// The CPU must have NEON (every aarch64 CPU); `a.len() == rows * K`, `out.len() == rows * N`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    if pw.symmetric {
        // SAFETY: as for this function.
        return unsafe { rows_narrow(pw, a, rows, x_scale, x_zp, out) };
    }
    WIDE.with_borrow_mut(|wide| {
        pad_rows(wide, pw, a, rows, pw.groups * 4, i16::from);
        // SAFETY: as for this function; `wide` holds rows x K4 values.
        unsafe { blocks(pw, wide, rows, x_scale, x_zp, out) }
    })
}

/// [`rows`] on the widened activations `wide` ([rows, K4] i16, zero past K).
///
/// # Safety
/// As [`rows`]; `wide.len() == rows * K4`.
#[target_feature(enable = "neon")]
unsafe fn blocks(pw: &PackedLinear, wide: &[i16], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    let n = pw.n;
    let o = out.as_mut_ptr();
    for_each_tile::<i16, MR>(pw, wide, pw.groups * 4, rows, COLS, |p, block, r0, mv, a_rows| {
        // SAFETY: as for this function; every pointer starts a row of `wide` (K4 values).
        unsafe { tile(pw, p, block, a_rows, mv, x_scale, x_zp, o.add(r0 * n)) }
    });
}

/// One MR x 8 tile: panel `p`, 8-column block `block` of it, widened rows `a_rows` (the first
/// `mv` are stored), output row 0 at `out` (row stride N).
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    pw: &PackedLinear,
    p: usize,
    block: usize,
    a_rows: &[*const i16; MR],
    mv: usize,
    x_scale: f32,
    x_zp: u8,
    out: *mut f32,
) {
    let mut acc = [[vdupq_n_s32(0); COLS]; MR];
    // Quad `block / 2` of the panel's first group, its half `block % 2` (32 bytes).
    let mut b = (pw.quads.as_ptr().add(p * pw.groups * VECS + block / 2) as *const i8).add((block % 2) * 32);
    for g in 0..pw.groups {
        let lo = vld1q_s8(b);
        let hi = vld1q_s8(b.add(16));
        // Columns (2c, 2c + 1), 4 K values each.
        let w = [vmovl_s8(vget_low_s8(lo)), vmovl_high_s8(lo), vmovl_s8(vget_low_s8(hi)), vmovl_high_s8(hi)];
        for (row, &a_row) in acc.iter_mut().zip(a_rows) {
            let a4 = vld1_s16(a_row.add(4 * g));
            let a8 = vcombine_s16(a4, a4);
            for (pair, &wv) in w.iter().enumerate() {
                row[2 * pair] = vmlal_s16(row[2 * pair], a4, vget_low_s16(wv));
                row[2 * pair + 1] = vmlal_high_s16(row[2 * pair + 1], a8, wv);
            }
        }
        b = b.add(VECS * 64);
    }
    let col = p * NR + block * COLS;
    let n = pw.n;
    let width = (n - col).min(COLS);
    let zp = vdupq_n_s32(i32::from(x_zp));
    for (i, row) in acc.iter().enumerate().take(mv) {
        let mut y = [0f32; COLS];
        for half in 0..2 {
            let c = &row[4 * half..4 * half + 4];
            let sums = vpaddq_s32(vpaddq_s32(c[0], c[1]), vpaddq_s32(c[2], c[3]));
            let cc = col + 4 * half;
            let centered = vmlsq_s32(sums, zp, vld1q_s32(pw.colsum.as_ptr().add(cc)));
            let scale = vmulq_f32(vdupq_n_f32(x_scale), vld1q_f32(pw.w_scale.as_ptr().add(cc)));
            let yv = vaddq_f32(vmulq_f32(vcvtq_f32_s32(centered), scale), vld1q_f32(pw.bias.as_ptr().add(cc)));
            vst1q_f32(y.as_mut_ptr().add(4 * half), yv);
        }
        std::ptr::copy_nonoverlapping(y.as_ptr(), out.add(i * n + col), width);
    }
}

/// [`rows`] for symmetric weights: the 8-bit path (see the module doc).
///
/// # Safety
/// As [`rows`], and no weight of `pw` is -128 (`pw.symmetric`).
#[target_feature(enable = "neon")]
unsafe fn rows_narrow(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    FLIPPED.with_borrow_mut(|flipped| {
        // Whole pairs of groups (8 bytes), zero past K (a flipped 0 contributes 0).
        let stride = pw.groups.div_ceil(2) * 8;
        pad_rows(flipped, pw, a, rows, stride, |x| x ^ 0x80);
        // SAFETY: as for this function; `flipped` holds rows x stride values.
        unsafe { blocks_narrow(pw, flipped, stride, rows, x_scale, x_zp, out) }
    })
}

/// [`rows_narrow`] on the flipped activations (`stride` bytes per row).
///
/// # Safety
/// As [`rows_narrow`]; `flipped.len() == rows * stride`.
#[target_feature(enable = "neon")]
unsafe fn blocks_narrow(
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
    for_each_tile::<u8, MR>(pw, flipped, stride, rows, COLS, |p, block, r0, mv, a_rows| {
        // SAFETY: as for this function; every pointer starts a row of `stride` bytes.
        unsafe { tile_narrow(pw, p, block, a_rows, mv, x_scale, x_zp, o.add(r0 * n)) }
    });
}

/// The 4 bytes of activations of group `g` of a flipped row, in all 4 lanes of 32 bits.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn group_of(row: *const u8, g: usize) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32(std::ptr::read_unaligned(row.add(4 * g) as *const i32)))
}

/// One MR x 8 tile of the 8-bit path: panel `p`, 8-column block `block` of it, flipped rows
/// `a_rows` (the first `mv` are stored), output row 0 at `out` (row stride N).
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_narrow(
    pw: &PackedLinear,
    p: usize,
    block: usize,
    a_rows: &[*const u8; MR],
    mv: usize,
    x_scale: f32,
    x_zp: u8,
    out: *mut f32,
) {
    // acc[r][j]: columns 2j and 2j + 1 of row r, two partial sums each.
    let mut acc = [[vdupq_n_s32(0); 4]; MR];
    // Quad `block / 2` of the panel's first group, its half `block % 2` (32 bytes).
    let first = pw.quads.as_ptr().add(p * pw.groups * VECS + block / 2);
    let half = (block % 2) * 32;
    let mut g = 0;
    while g < pw.groups {
        let q0 = first.add(g * VECS) as *const i8;
        let q1 = if g + 1 < pw.groups { first.add((g + 1) * VECS) } else { &ZERO_QUAD as *const Quad } as *const i8;
        // Columns 0-3 and 4-7 of the block, 4 K values each, for groups g and g + 1.
        let w0 = [vld1q_s8(q0.add(half)), vld1q_s8(q0.add(half + 16))];
        let w1 = [vld1q_s8(q1.add(half)), vld1q_s8(q1.add(half + 16))];
        for (row, &a_row) in acc.iter_mut().zip(a_rows) {
            let (a0, a1) = (group_of(a_row, g), group_of(a_row, g + 1));
            for v in 0..2 {
                let lo = vmlal_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(w0[v])), vget_low_s8(a1), vget_low_s8(w1[v]));
                let hi = vmlal_high_s8(vmull_high_s8(a0, w0[v]), a1, w1[v]);
                row[2 * v] = vpadalq_s16(row[2 * v], lo);
                row[2 * v + 1] = vpadalq_s16(row[2 * v + 1], hi);
            }
        }
        g += 2;
    }
    let col = p * NR + block * COLS;
    let n = pw.n;
    let width = (n - col).min(COLS);
    let shift = vdupq_n_s32(128 - i32::from(x_zp));
    for (i, row) in acc.iter().enumerate().take(mv) {
        let mut y = [0f32; COLS];
        for h in 0..2 {
            let sums = vpaddq_s32(row[2 * h], row[2 * h + 1]);
            let cc = col + 4 * h;
            let centered = vmlaq_s32(sums, shift, vld1q_s32(pw.colsum.as_ptr().add(cc)));
            let scale = vmulq_f32(vdupq_n_f32(x_scale), vld1q_f32(pw.w_scale.as_ptr().add(cc)));
            let yv = vaddq_f32(vmulq_f32(vcvtq_f32_s32(centered), scale), vld1q_f32(pw.bias.as_ptr().add(cc)));
            vst1q_f32(y.as_mut_ptr().add(4 * h), yv);
        }
        std::ptr::copy_nonoverlapping(y.as_ptr(), out.add(i * n + col), width);
    }
}
