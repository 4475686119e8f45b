//! The int8 product on x86_64 with AVX2 and no VNNI: [`rows`] computes [`PackedLinear::run`]'s
//! formula (see `int8_dot`) for a chunk of rows, bit for bit.
//!
//! Why not `vpmaddubsw`: it sums two u8 x s8 products into a saturating i16, and 255 x -128
//! twice is -65,280, far below -32,768 (onnxruntime's AVX2 u8s8 path saturates there, which is
//! why its docs advise 7-bit weights). Here both operands are widened to i16 and multiplied
//! with `vpmaddwd`, which sums two i16 x i16 products into an i32: exact for every u8 x s8 pair.
//!
//! Activations: each row's K u8 values are widened once per call into a per-thread i16 buffer,
//! zero-padded to whole groups of 4 (widening them in the inner loop instead measured 2x
//! slower). Weights: the packed layout is read as it is (a quad holds 16 columns x 4 K values);
//! 16 bytes (4 columns x 4 K values) are sign-extended to 16 i16 and `vpmaddwd` against a
//! row's 4 activations (broadcast as one 64-bit pattern) gives 8 i32 lanes: columns
//! c0 c0 c1 c1 | c2 c2 c3 c3, each column's 4 products in two partial sums.
//! The epilogue adds the pairs (`vphaddd`), puts the columns in order and applies the zero
//! point, rescale and bias as the other kernels do.
//!
//! Tile: [`MR`] rows x 8 columns, 12 i32 accumulators in ymm registers (plus two weight vectors
//! and one broadcast: 15 of the 16). Loop order: panel, 8-column block, rows, K, so a block's
//! weights (8 x K bytes) stay in L1 while the rows stream.

use std::arch::x86_64::*;

use super::int8_dot::{PackedLinear, NR, VECS};
use super::int8_tiles::{for_each_tile, pad_rows};

/// Rows of one tile.
pub(super) const MR: usize = 6;
/// Columns of one tile (half a packed quad).
const COLS: usize = 8;

/// All columns for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
///
/// # Safety
/// The CPU must have AVX2; `a.len() == rows * K`, `out.len() == rows * N`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
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
#[target_feature(enable = "avx2")]
unsafe fn blocks(pw: &PackedLinear, wide: &[i16], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    let n = pw.n;
    let o = out.as_mut_ptr();
    for_each_tile::<i16, MR>(pw, wide, pw.groups * 4, rows, COLS, |p, block, r0, mv, a_rows| {
        // SAFETY: as for this function; every pointer starts a row of `wide` (K4 values).
        unsafe { tile(pw, p, block, a_rows, mv, x_scale, x_zp, o.add(r0 * n)) }
    });
}

thread_local! {
    /// Each thread's widened activations, kept between calls: a fresh buffer of a few hundred
    /// KB per call is an mmap and its page faults each time. At most rows x K4 x 2 bytes per
    /// thread (1.5 MB for 512 rows of K = 1536).
    static WIDE: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One MR x 8 tile: panel `p`, 8-column block `block` of it, widened rows `a_rows` (the first
/// `mv` are stored), output row 0 at `out` (row stride N).
#[target_feature(enable = "avx2")]
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
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    // Quad `block / 2` of the panel's first group, its half `block % 2` (32 bytes).
    let mut b = (pw.quads.as_ptr().add(p * pw.groups * VECS + block / 2) as *const u8).add((block % 2) * 32);
    for g in 0..pw.groups {
        let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b as *const __m128i));
        let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16) as *const __m128i));
        for i in 0..MR {
            let av = _mm256_set1_epi64x(std::ptr::read_unaligned(a_rows[i].add(4 * g) as *const i64));
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, w0));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, w1));
        }
        b = b.add(VECS * 64);
    }
    let col = p * NR + block * COLS;
    let n = pw.n;
    let zc = _mm256_mullo_epi32(
        _mm256_set1_epi32(i32::from(x_zp)),
        _mm256_loadu_si256(pw.colsum.as_ptr().add(col) as *const __m256i),
    );
    let scale = _mm256_mul_ps(_mm256_set1_ps(x_scale), _mm256_loadu_ps(pw.w_scale.as_ptr().add(col)));
    let bias = _mm256_loadu_ps(pw.bias.as_ptr().add(col));
    let width = (n - col).min(COLS);
    for (i, row) in acc.iter().enumerate().take(mv) {
        // [c0 c1 c4 c5 | c2 c3 c6 c7] -> [c0 .. c7].
        let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[0], row[1]));
        let y = _mm256_cvtepi32_ps(_mm256_sub_epi32(sums, zc));
        let y = _mm256_add_ps(_mm256_mul_ps(y, scale), bias);
        if width == COLS {
            _mm256_storeu_ps(out.add(i * n + col), y);
        } else {
            let mut last = [0f32; COLS];
            _mm256_storeu_ps(last.as_mut_ptr(), y);
            std::ptr::copy_nonoverlapping(last.as_ptr(), out.add(i * n + col), width);
        }
    }
}
