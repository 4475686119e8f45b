//! The int8 product on 32-bit ARM (armv7) with NEON: [`rows`] computes [`PackedLinear::run`]'s
//! formula (see `int8_dot`) for a chunk of rows, bit for bit.
//!
//! Stable Rust has neither NEON intrinsics nor `#[target_feature(enable = "neon")]` for 32-bit
//! ARM, and the usual hard-float target (`armv7-unknown-linux-gnueabihf`) does not assume NEON,
//! so the inner loop is inline assembly (`.fpu neon`), run only where the kernel reports NEON
//! at run time (`HWCAP_NEON` in the auxiliary vector).
//!
//! Weights: the packed layout is read as it is: 16 bytes of a quad are 4 columns x 4 K values.
//! Two paths, both exact, as in `int8_neon`:
//! - Symmetric weights (no -128: every bundle `ckd export` writes, [`tile_narrow`]): the
//!   activations are flipped to s8 (`x ^ 0x80`, corrected in the epilogue by
//!   `(128 - x_zp) * colsum`) and multiplied as bytes, `vmull.s8` / `vmlal.s8` (8 products per
//!   instruction; two K groups summed in i16 lanes, |sum| <= 2 * 128 * 127 < 2^15), then added
//!   pairwise into i32 lanes by `vpadal.s16`. Tile [`MR`] rows x 4 columns.
//! - Any weights ([`tile_wide`]): both operands widened to i16, `vmlal.s16` (4 products per
//!   instruction); each column's 4 weights (one d register) meet the row's 4 activations of the
//!   group lane by lane. Tile [`MR`] rows x 4 columns: 12 accumulators (q4-q15), 2 weight
//!   registers (q0, q1) and 3 activation d registers (d4-d6): all 16 q registers.
//!
//! Activations are converted once per call into a per-thread buffer (flipped bytes, or i16),
//! zero-padded to whole K groups. Loop order: panel, 4-column block, rows, K. An accumulator
//! holds partial sums of its columns, added in the epilogue, which is scalar Rust (pair sums,
//! zero point, rescale, bias: the same expression as the portable loop's).

use std::arch::asm;

use super::int8_dot::{PackedLinear, NR, VECS, ZERO_QUAD};
use super::int8_tiles::{for_each_tile, pad_rows};

/// Rows of one tile.
pub(super) const MR: usize = 3;
/// Columns of one tile (a quarter of a packed quad).
const COLS: usize = 4;

thread_local! {
    /// Each thread's widened activations, kept between calls (see `int8_avx2`'s buffer).
    static WIDE: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's flipped activations for the 8-bit path, kept between calls.
    static FLIPPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether this CPU has NEON: the build assumes it, or the kernel reports it (Linux, glibc).
pub(super) fn has_neon() -> bool {
    if cfg!(target_feature = "neon") {
        return true;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// `HWCAP_NEON` of the 32-bit ARM Linux ABI (`asm/hwcap.h`).
        const HWCAP_NEON: libc::c_ulong = 1 << 12;
        // SAFETY: getauxval reads the process's auxiliary vector; no pointers.
        return unsafe { libc::getauxval(libc::AT_HWCAP) } & HWCAP_NEON != 0;
    }
    #[allow(unreachable_code)]
    false
}

/// All columns for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
///
/// # Safety
/// The CPU must have NEON ([`has_neon`]); `a.len() == rows * K`, `out.len() == rows * N`.
pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    if pw.symmetric {
        // Flipped bytes, whole pairs of groups (8 bytes) per row.
        let stride = pw.groups.div_ceil(2) * 8;
        FLIPPED.with_borrow_mut(|flipped| {
            pad_rows(flipped, pw, a, rows, stride, |x| x ^ 0x80);
            let shift = 128 - i32::from(x_zp);
            for_each_tile::<u8, MR>(pw, flipped, stride, rows, COLS, |p, block, r0, mv, a_rows| {
                // SAFETY: NEON (this function's contract); each row holds `stride` bytes, whole
                // pairs of groups; no weight is -128 (`pw.symmetric`).
                let sums = unsafe { tile_narrow(pw, p, block, a_rows) };
                let centre = |acc: i32, colsum: i32| acc.wrapping_add(shift.wrapping_mul(colsum));
                epilogue(pw, p, block, r0, mv, &sums, centre, x_scale, out);
            });
        })
    } else {
        let k4 = pw.groups * 4;
        WIDE.with_borrow_mut(|wide| {
            pad_rows(wide, pw, a, rows, k4, i16::from);
            for_each_tile::<i16, MR>(pw, wide, k4, rows, COLS, |p, block, r0, mv, a_rows| {
                // SAFETY: NEON (this function's contract); each row holds K4 i16 values.
                let sums = unsafe { tile_wide(pw, p, block, a_rows) };
                let centre = |acc: i32, colsum: i32| acc.wrapping_sub(i32::from(x_zp).wrapping_mul(colsum));
                epilogue(pw, p, block, r0, mv, &sums, centre, x_scale, out);
            });
        })
    }
}

/// A tile's outputs: `sums` for its first `mv` rows (from row `r0`) and the columns of block
/// `block` of panel `p` that exist, through `centre` (the zero point, given a sum and its
/// column's weight sum), the rescale and the bias.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    pw: &PackedLinear,
    p: usize,
    block: usize,
    r0: usize,
    mv: usize,
    sums: &[[i32; COLS]; MR],
    centre: impl Fn(i32, i32) -> i32,
    x_scale: f32,
    out: &mut [f32],
) {
    let (n, col) = (pw.n, p * NR + block * COLS);
    for (i, row) in sums.iter().enumerate().take(mv) {
        for (j, &acc) in row.iter().enumerate().take((n - col).min(COLS)) {
            let c = col + j;
            out[(r0 + i) * n + c] = centre(acc, pw.colsum[c]) as f32 * (x_scale * pw.w_scale[c]) + pw.bias[c];
        }
    }
}

/// One MR x 4 tile of the i16 path: `sum_k x[k] * W[k, c]` for panel `p`, 4-column block
/// `block` of it and the widened rows `a_rows`.
///
/// # Safety
/// The CPU must have NEON; each of `a_rows` points at K4 readable i16 values.
unsafe fn tile_wide(pw: &PackedLinear, p: usize, block: usize, a_rows: &[*const i16; MR]) -> [[i32; COLS]; MR] {
    let mut partial = [[0i32; 4 * COLS]; MR];
    if pw.groups == 0 {
        return [[0; COLS]; MR];
    }
    // 16 bytes at `block % 4` of quad `block / 4` of the panel's first group; then one group on.
    let w = unsafe { (pw.quads.as_ptr().add(p * pw.groups * VECS + block / 4) as *const i8).add((block % 4) * 16) };
    let w_stride = VECS * 64;
    // SAFETY: NEON (the caller's contract); `w` walks `groups` groups of the packed quads
    // (16 bytes each), each row pointer K4 = 4 * groups i16 values, `partial` takes 48 i32.
    unsafe {
        asm!(
            ".fpu neon",
            "vmov.i32 q4, #0", "vmov.i32 q5, #0", "vmov.i32 q6, #0", "vmov.i32 q7, #0",
            "vmov.i32 q8, #0", "vmov.i32 q9, #0", "vmov.i32 q10, #0", "vmov.i32 q11, #0",
            "vmov.i32 q12, #0", "vmov.i32 q13, #0", "vmov.i32 q14, #0", "vmov.i32 q15, #0",
            "2:",
            "vld1.8 {{d2, d3}}, [{w}], {ws}",
            "vmovl.s8 q0, d2",
            "vmovl.s8 q1, d3",
            "vld1.16 {{d4}}, [{a0}]!",
            "vld1.16 {{d5}}, [{a1}]!",
            "vld1.16 {{d6}}, [{a2}]!",
            "vmlal.s16 q4, d0, d4", "vmlal.s16 q5, d1, d4", "vmlal.s16 q6, d2, d4", "vmlal.s16 q7, d3, d4",
            "vmlal.s16 q8, d0, d5", "vmlal.s16 q9, d1, d5", "vmlal.s16 q10, d2, d5", "vmlal.s16 q11, d3, d5",
            "vmlal.s16 q12, d0, d6", "vmlal.s16 q13, d1, d6", "vmlal.s16 q14, d2, d6", "vmlal.s16 q15, d3, d6",
            "subs {g}, {g}, #1",
            "bne 2b",
            "vst1.32 {{d8-d11}}, [{out}]!", "vst1.32 {{d12-d15}}, [{out}]!",
            "vst1.32 {{d16-d19}}, [{out}]!", "vst1.32 {{d20-d23}}, [{out}]!",
            "vst1.32 {{d24-d27}}, [{out}]!", "vst1.32 {{d28-d31}}, [{out}]!",
            w = inout(reg) w => _,
            ws = in(reg) w_stride,
            a0 = inout(reg) a_rows[0] => _,
            a1 = inout(reg) a_rows[1] => _,
            a2 = inout(reg) a_rows[2] => _,
            g = inout(reg) pw.groups => _,
            out = inout(reg) partial.as_mut_ptr() => _,
            // d0-d15 by name: on a target without NEON (armv7-unknown-linux-gnueabihf) the compiler
            // ignores q-register clobbers, and d8-d15 (q4-q7) hold its callee-saved values; q8-q15
            // (d16-d31) are caller-saved, and the compiler allocates them only on NEON targets.
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _, out("q12") _, out("q13") _, out("q14") _, out("q15") _,
            options(nostack)
        );
    }
    // Row r's column c: lanes 4c .. 4c + 4 of `partial[r]`.
    partial.map(|row| std::array::from_fn(|c| row[4 * c..4 * c + 4].iter().fold(0i32, |s, &x| s.wrapping_add(x))))
}

/// One MR x 4 tile of the 8-bit path: `sum_k (x[k] - 128) * W[k, c]` for panel `p`, 4-column
/// block `block` of it and the flipped rows `a_rows`.
///
/// # Safety
/// The CPU must have NEON; each of `a_rows` points at `groups.div_ceil(2) * 8` readable bytes;
/// no weight of `pw` is -128.
unsafe fn tile_narrow(pw: &PackedLinear, p: usize, block: usize, a_rows: &[*const u8; MR]) -> [[i32; COLS]; MR] {
    // Row r: columns (0, 1) in lanes 0-3 and (2, 3) in lanes 4-7, two partial sums each.
    let mut partial = [[0i32; 2 * COLS]; MR];
    let w_stride = VECS * 64;
    let w = unsafe { (pw.quads.as_ptr().add(p * pw.groups * VECS + block / 4) as *const i8).add((block % 4) * 16) };
    let pairs = pw.groups / 2;
    let mut a = *a_rows;
    if pairs > 0 {
        // SAFETY: as for this function; groups 2i and 2i + 1 for i < pairs.
        unsafe { pair_steps(&mut partial, w, w.add(w_stride), 2 * w_stride, &mut a, pairs) };
    }
    if pw.groups % 2 == 1 {
        // The last group, paired with zero weights (and the rows' zero padding).
        // SAFETY: as for this function; the last group's 16 bytes and 16 zero bytes.
        unsafe { pair_steps(&mut partial, w.add((pw.groups - 1) * w_stride), ZERO_QUAD.0.as_ptr(), 0, &mut a, 1) };
    }
    partial.map(|row| std::array::from_fn(|c| row[2 * c].wrapping_add(row[2 * c + 1])))
}

/// `steps` pairs of K groups of the 8-bit path, added to `partial`: each step reads 16 weight
/// bytes at `w0` (the first group) and at `w1` (the second), moving both by `w_stride`, and 8
/// flipped bytes of each row of `a` (which move on).
///
/// # Safety
/// NEON; the reads above are in bounds; `steps >= 1`.
unsafe fn pair_steps(
    partial: &mut [[i32; 2 * COLS]; MR],
    w0: *const i8,
    w1: *const i8,
    w_stride: usize,
    a: &mut [*const u8; MR],
    steps: usize,
) {
    // SAFETY: the caller's contract; `partial` is 24 i32 (read, then written back).
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8-d11}}, [{acc}]!",
            "vld1.32 {{d12-d15}}, [{acc}]!",
            "vld1.32 {{d16-d19}}, [{acc}]",
            "sub {acc}, {acc}, #64",
            "2:",
            "vld1.8 {{d0, d1}}, [{w0}], {ws}",
            "vld1.8 {{d2, d3}}, [{w1}], {ws}",
            "vld1.32 {{d4[]}}, [{a0}]!", "vld1.32 {{d5[]}}, [{a0}]!",
            "vld1.32 {{d6[]}}, [{a1}]!", "vld1.32 {{d7[]}}, [{a1}]!",
            "vld1.32 {{d20[]}}, [{a2}]!", "vld1.32 {{d21[]}}, [{a2}]!",
            "vmull.s8 q11, d4, d0", "vmlal.s8 q11, d5, d2", "vmull.s8 q12, d4, d1", "vmlal.s8 q12, d5, d3",
            "vpadal.s16 q4, q11", "vpadal.s16 q5, q12",
            "vmull.s8 q13, d6, d0", "vmlal.s8 q13, d7, d2", "vmull.s8 q14, d6, d1", "vmlal.s8 q14, d7, d3",
            "vpadal.s16 q6, q13", "vpadal.s16 q7, q14",
            "vmull.s8 q11, d20, d0", "vmlal.s8 q11, d21, d2", "vmull.s8 q12, d20, d1", "vmlal.s8 q12, d21, d3",
            "vpadal.s16 q8, q11", "vpadal.s16 q9, q12",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vst1.32 {{d8-d11}}, [{acc}]!",
            "vst1.32 {{d12-d15}}, [{acc}]!",
            "vst1.32 {{d16-d19}}, [{acc}]",
            acc = inout(reg) partial.as_mut_ptr() => _,
            w0 = inout(reg) w0 => _,
            w1 = inout(reg) w1 => _,
            ws = in(reg) w_stride,
            a0 = inout(reg) a[0],
            a1 = inout(reg) a[1],
            a2 = inout(reg) a[2],
            n = inout(reg) steps => _,
            // d0-d15 by name: on a target without NEON (armv7-unknown-linux-gnueabihf) the compiler
            // ignores q-register clobbers, and d8-d15 (q4-q7) hold its callee-saved values; q8-q15
            // (d16-d31) are caller-saved, and the compiler allocates them only on NEON targets.
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            out("q8") _, out("q9") _, out("q10") _, out("q11") _, out("q12") _, out("q13") _, out("q14") _,
            options(nostack)
        );
    }
}
