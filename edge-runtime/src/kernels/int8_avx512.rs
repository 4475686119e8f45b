//! The int8 product on x86_64 with AVX-512F, AVX-512BW and AVX-512 VNNI (`vpdpbusd` on
//! 512-bit vectors): [`rows`] computes [`PackedLinear::run`]'s formula (see `int8_dot`) for a
//! chunk of rows.
//!
//! Tile: [`MR`] rows x [`NR`] columns keep 24 i32 accumulators in zmm registers; per 4 values
//! of K it loads three 64-byte weight vectors (16 columns x 4 K values each, the packed layout)
//! and broadcasts 4 activation bytes per row, straight from the row-major u8 activations (no
//! activation packing). The epilogue (zero point, convert, rescale, bias) runs on the tile in
//! registers and stores the f32 outputs.

use std::arch::x86_64::*;

use super::int8_dot::{PackedLinear, LANES, MR, NR, VECS};

/// All panels for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; `a.len() == rows * K`,
/// `out.len() == rows * N`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
    let k = pw.k;
    for p in 0..pw.panels {
        let mut r0 = 0;
        while r0 < rows {
            let mv = MR.min(rows - r0);
            // Rows past the last one read the last one again (their results are dropped).
            let a_rows: [*const u8; MR] = std::array::from_fn(|i| a.as_ptr().add((r0 + i.min(mv - 1)) * k));
            // SAFETY: as for this function; row r0 + i < rows for every pointer.
            unsafe { tile(pw, p, &a_rows, mv, x_scale, x_zp, out.as_mut_ptr().add(r0 * pw.n)) };
            r0 += mv;
        }
    }
}

/// One MR x NR tile: panel `p`, rows `a_rows` (the first `mv` are stored), output row 0
/// at `out` (row stride N).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile(
    pw: &PackedLinear,
    p: usize,
    a_rows: &[*const u8; MR],
    mv: usize,
    x_scale: f32,
    x_zp: u8,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_si512(); VECS]; MR];
    let full = pw.k / 4;
    let mut b = pw.quads.as_ptr().add(p * pw.groups * VECS) as *const __m512i;
    for g in 0..full {
        let b0 = _mm512_load_si512(b);
        let b1 = _mm512_load_si512(b.add(1));
        let b2 = _mm512_load_si512(b.add(2));
        for i in 0..MR {
            let av = _mm512_set1_epi32(std::ptr::read_unaligned(a_rows[i].add(4 * g) as *const i32));
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
            acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], av, b2);
        }
        b = b.add(VECS);
    }
    let rest = pw.k % 4;
    if rest != 0 {
        // The last K group: missing bytes are 0 (as are their packed weights).
        let bv: [__m512i; VECS] = std::array::from_fn(|v| _mm512_load_si512(b.add(v)));
        for i in 0..MR {
            let mut bytes = [0u8; 4];
            std::ptr::copy_nonoverlapping(a_rows[i].add(4 * full), bytes.as_mut_ptr(), rest);
            let av = _mm512_set1_epi32(i32::from_le_bytes(bytes));
            for v in 0..VECS {
                acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], av, bv[v]);
            }
        }
    }
    let zp = _mm512_set1_epi32(i32::from(x_zp));
    let xs = _mm512_set1_ps(x_scale);
    let n = pw.n;
    for v in 0..VECS {
        let col = p * NR + v * LANES;
        if col >= n {
            break;
        }
        let mask: __mmask16 = if n - col >= LANES { 0xffff } else { (1u16 << (n - col)) - 1 };
        let zc = _mm512_mullo_epi32(zp, _mm512_loadu_si512(pw.colsum.as_ptr().add(col) as *const __m512i));
        let scale = _mm512_mul_ps(xs, _mm512_loadu_ps(pw.w_scale.as_ptr().add(col)));
        let bias = _mm512_loadu_ps(pw.bias.as_ptr().add(col));
        for (i, row) in acc.iter().enumerate().take(mv) {
            let y = _mm512_cvtepi32_ps(_mm512_sub_epi32(row[v], zc));
            let y = _mm512_add_ps(_mm512_mul_ps(y, scale), bias);
            _mm512_mask_storeu_ps(out.add(i * n + col), mask, y);
        }
    }
}
