//! The int8 linear's arithmetic on slices: u8 activations x_q [m, K] times s8 weights W [K, N]
//! packed once ([`PackedLinear`]), with the zero point, the rescale, the bias and, where the
//! layer has one, the GELU after it.
//!
//! Arithmetic (per output element, the graph's order, no fused multiply-add):
//! `y = f32(sum_k x_q[k] * W[k, n] - x_zp * colsum_n) * (x_scale * w_scale[n]) + b[n]`, where
//! `colsum_n = sum_k W[k, n]`; the i32 sum is exact (|x_q * W| <= 255 * 128, K < 2^16 in
//! practice, checked at packing), so results are bit-identical to tract's unfused plan (tested
//! below, in `ops::qlinear` and on a whole bundle).
//!
//! Kernel (x86_64 with AVX-512F/BW/VNNI, detected at run time): a tile of [`MR`] rows x
//! [`NR`] columns keeps 24 i32 accumulators in zmm registers; per 4 values of K it loads
//! three 64-byte weight vectors (16 columns x 4 K values each, the packed layout) and
//! broadcasts 4 activation bytes per row, straight from the row-major u8 activations (no
//! activation packing). The epilogue (zero point, convert, rescale, bias) runs on the tile in
//! registers and stores the f32 outputs. Rows are split over the engine's thread pool, one
//! chunk per thread ([`super::parallel`]; inline with one thread). Elsewhere a portable loop
//! computes the same values (slowly), so a graph holding the op runs anywhere.

use tract_onnx::tract_hir::internal::*;

use super::gelu::gelu_in_place;
use super::parallel::for_row_chunks;

/// How the errors below name the op these kernels compute: the fused node's ONNX type
/// (`ops::qlinear::OP_TYPE`; a test there checks that the two agree).
pub(crate) const OP_TYPE: &str = "CkdQLinear";

/// Rows of one kernel tile.
pub const MR: usize = 8;
/// Columns of one kernel tile (three 16-lane vectors): the width of a weight panel.
pub const NR: usize = 48;
/// Columns per 64-byte weight vector.
const LANES: usize = 16;
/// Weight vectors per panel and K group.
const VECS: usize = NR / LANES;
/// Largest K accepted: the i32 accumulator cannot overflow below it (255 * 128 * 2^16 < 2^31).
pub const MAX_K: usize = 1 << 16;

/// Whether this CPU runs the fast kernel (x86_64 with AVX-512F, AVX-512BW and AVX-512 VNNI).
pub fn fast_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 16 columns x 4 K values of s8 weights: byte `4 * j + t` is `W[4 g + t, col0 + j]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
struct Quad([i8; 64]);

/// One int8 linear's constants, packed for the kernel.
///
/// Layout: panel `p` (columns `p * NR ..`), K group `g` (K values `4 g .. 4 g + 4`), vector `v`
/// is `quads[(p * groups + g) * VECS + v]`. Columns past N and K values past K are zeros, and
/// so are `colsum`, `w_scale` and `bias` past N (length `panels * NR`).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    k: usize,
    n: usize,
    groups: usize,
    panels: usize,
    quads: Vec<Quad>,
    colsum: Vec<i32>,
    w_scale: Vec<f32>,
    bias: Vec<f32>,
    gelu: bool,
}

/// Equal when every value is (floats compared by their bits, so that `Eq` holds).
impl PartialEq for PackedLinear {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (self.k, self.n, self.gelu, &self.quads, &self.colsum)
            == (other.k, other.n, other.gelu, &other.quads, &other.colsum)
            && bits(&self.w_scale) == bits(&other.w_scale)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for PackedLinear {}

impl PackedLinear {
    /// Packs `w` ([k, n] row-major s8), `w_scale` [n] and `bias` [n].
    pub fn new(w: &[i8], k: usize, n: usize, w_scale: &[f32], bias: &[f32]) -> TractResult<Self> {
        ensure!(k <= MAX_K, "{OP_TYPE}: K = {k} is over {MAX_K}");
        ensure!(
            k.checked_mul(n) == Some(w.len()) && w_scale.len() == n && bias.len() == n,
            "{OP_TYPE}: weights of {} for [{k}, {n}], {} scales, {} biases",
            w.len(),
            w_scale.len(),
            bias.len()
        );
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(NR);
        let mut quads = vec![Quad([0; 64]); panels * groups * VECS];
        for (kk, row) in w.chunks_exact(n.max(1)).enumerate().take(k) {
            let (g, t) = (kk / 4, kk % 4);
            for (col, &x) in row.iter().enumerate() {
                let (p, v, j) = (col / NR, (col % NR) / LANES, col % LANES);
                quads[(p * groups + g) * VECS + v].0[4 * j + t] = x;
            }
        }
        let padded = panels * NR;
        let mut colsum = vec![0i32; padded];
        for row in w.chunks_exact(n.max(1)).take(k) {
            for (s, &x) in colsum.iter_mut().zip(row) {
                *s += i32::from(x);
            }
        }
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(padded, 0.0);
            p
        };
        Ok(PackedLinear { k, n, groups, panels, quads, colsum, w_scale: pad(w_scale), bias: pad(bias), gelu: false })
    }

    /// The same layer followed by GELU (erf form), `y = (y * 0.5) * (1 + erf(y / sqrt 2))`,
    /// computed as tract's `GeluExact` does (its erf kernel, the same products), so the same
    /// bits as the unfused plan.
    pub fn with_gelu(mut self) -> Self {
        self.gelu = true;
        self
    }

    /// Whether GELU follows the product ([`PackedLinear::with_gelu`]).
    pub fn gelu(&self) -> bool {
        self.gelu
    }

    /// K, the input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// N, the output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `out [m, N] = f32(x_q [m, K] . W - x_zp * colsum) * (x_scale * w_scale) + bias` (then
    /// GELU when [`PackedLinear::with_gelu`]), with the fast kernel where the CPU has it. Rows are split over the current tract executor.
    pub fn run(&self, x_q: &[u8], m: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) -> TractResult<()> {
        self.run_with(x_q, m, x_scale, x_zp, out, fast_kernel_available())
    }

    /// [`PackedLinear::run`], choosing the kernel (`fast` is ignored where the CPU lacks it).
    pub fn run_with(
        &self,
        x_q: &[u8],
        m: usize,
        x_scale: f32,
        x_zp: u8,
        out: &mut [f32],
        fast: bool,
    ) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        ensure!(
            m.checked_mul(k) == Some(x_q.len()) && m.checked_mul(n) == Some(out.len()),
            "{OP_TYPE}: {} activations and {} outputs for {m} rows of [{k}] -> [{n}]",
            x_q.len(),
            out.len()
        );
        if out.is_empty() {
            return Ok(());
        }
        let fast = fast && fast_kernel_available();
        for_row_chunks(out, n, MR, 2 * MR, |first_row, chunk| {
            let rows = chunk.len() / n;
            let a = &x_q[first_row * k..(first_row + rows) * k];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the CPU has the kernel's features (checked just above); `a` holds
                // rows x K and `chunk` rows x N values.
                unsafe { vnni::rows(self, a, rows, x_scale, x_zp, chunk) };
            } else {
                self.rows_portable(a, rows, x_scale, x_zp, chunk);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = fast;
                self.rows_portable(a, rows, x_scale, x_zp, chunk);
            }
            if self.gelu {
                gelu_in_place(chunk)?;
            }
            Ok(())
        })
    }

    /// The same arithmetic as the kernel, one output at a time.
    fn rows_portable(&self, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        for r in 0..rows {
            let a_row = &a[r * k..(r + 1) * k];
            for col in 0..n {
                let (p, v, j) = (col / NR, (col % NR) / LANES, col % LANES);
                let mut acc = 0i32;
                for (kk, &x) in a_row.iter().enumerate() {
                    let q = &self.quads[(p * self.groups + kk / 4) * VECS + v];
                    acc += i32::from(x) * i32::from(q.0[4 * j + kk % 4]);
                }
                let centered = acc - i32::from(x_zp) * self.colsum[col];
                out[r * n + col] = centered as f32 * (x_scale * self.w_scale[col]) + self.bias[col];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{PackedLinear, LANES, MR, NR, VECS};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::bytes;

    /// The module doc's formula on the unpacked weights, one output at a time.
    #[allow(clippy::too_many_arguments)]
    fn reference(a: &[u8], w: &[i8], m: usize, k: usize, n: usize, xs: f32, zp: u8, ws: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let acc: i32 =
                    (0..k).map(|i| (i32::from(a[r * k + i]) - i32::from(zp)) * i32::from(w[i * n + c])).sum();
                out[r * n + c] = acc as f32 * (xs * ws[c]) + b[c];
            }
        }
        out
    }

    #[test]
    fn both_kernels_equal_the_formula_bit_for_bit() {
        if !fast_kernel_available() {
            eprintln!("this CPU has no AVX-512 VNNI: only the portable path is checked");
        }
        // Tails in every direction: K not a multiple of 4, N not of 16 or 48, rows not of MR.
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 17), (8, 4, 48), (9, 37, 49), (17, 64, 100), (20, 384, 96), (5, 3, 130)] {
            let a = bytes(m * k, 1 + k as u64);
            // Full range of s8, including -128 (the exporter's weights stay in [-127, 127]).
            let w: Vec<i8> = bytes(k * n, 2 + n as u64).into_iter().map(|x| x as i8).collect();
            let ws: Vec<f32> = (0..n).map(|c| 0.001 + c as f32 * 1e-4).collect();
            let b: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 3.0).collect();
            let (xs, zp) = (0.0123f32, 117u8);
            let packed = PackedLinear::new(&w, k, n, &ws, &b).unwrap();
            let expected = reference(&a, &w, m, k, n, xs, zp, &ws, &b);
            for fast in [false, true] {
                let mut out = vec![f32::NAN; m * n];
                packed.run_with(&a, m, xs, zp, &mut out, fast).unwrap();
                let same = out.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "m {m} k {k} n {n} fast {fast}: {:?} vs {:?}", &out[..n.min(4)], &expected[..n.min(4)]);
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(PackedLinear::new(&[0; 6], 2, 4, &[1.0; 4], &[0.0; 4]).is_err());
        assert!(PackedLinear::new(&[0; 8], 2, 4, &[1.0; 3], &[0.0; 4]).is_err());
        assert!(PackedLinear::new(&[0; 8], 2, 4, &[1.0; 4], &[0.0; 5]).is_err());
        let p = PackedLinear::new(&[1; 8], 2, 4, &[1.0; 4], &[0.5; 4]).unwrap();
        assert!(p.run(&[1; 5], 3, 1.0, 0, &mut [0.0; 12]).is_err());
        assert!(p.run(&[1; 6], 3, 1.0, 0, &mut [0.0; 11]).is_err());
        let mut none: [f32; 0] = [];
        p.run(&[], 0, 1.0, 0, &mut none).unwrap();
    }
}
