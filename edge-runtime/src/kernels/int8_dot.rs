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
//! Kernels ([`Int8Kernel`], chosen when the layer is packed: the best this CPU has, or the one
//! [`KERNEL_ENV`] names): on x86_64 AVX-512 VNNI (`int8_avx512`) and AVX2 (`int8_avx2`), on
//! aarch64 NEON with the dot-product extension (`int8_neon_dot`) and without it (`int8_neon`),
//! on 32-bit ARM NEON (`int8_armv7`), each with its tile and loop order described there. Rows are split over the engine's thread pool, one
//! chunk per thread ([`super::parallel`]; inline with one thread). Elsewhere a portable loop
//! computes the same values (slowly), so a graph holding the op runs anywhere; the engine only
//! fuses int8 linears where a fast kernel exists.

use tract_onnx::tract_hir::internal::*;

use super::gelu::gelu_in_place;
use super::parallel::for_row_chunks;

/// How the errors below name the op these kernels compute: the fused node's ONNX type
/// (`ops::qlinear::OP_TYPE`; a test there checks that the two agree).
pub(crate) const OP_TYPE: &str = "CkdQLinear";

/// Rows of one AVX-512 kernel tile (the row granule of the thread split).
pub const MR: usize = 8;
/// Columns of one weight panel (three 16-column quads; one AVX-512 tile).
pub const NR: usize = 48;
/// Columns per 64-byte weight quad.
pub(super) const LANES: usize = 16;
/// Weight quads per panel and K group.
pub(super) const VECS: usize = NR / LANES;
/// Largest K accepted: the i32 accumulator cannot overflow below it (255 * 128 * 2^16 < 2^31).
pub const MAX_K: usize = 1 << 16;

/// Environment variable that picks the int8 kernel for engines opened after it is set:
/// `auto` (or unset: the best this CPU has), a kernel's [`Int8Kernel::name`], or `tract` (no
/// fused int8 linears: tract's own int8 path). A kernel this CPU lacks is an error.
pub const KERNEL_ENV: &str = "CKD_EDGE_INT8_KERNEL";

/// A fast kernel of the int8 product, for one CPU family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// x86_64 with AVX-512F, AVX-512BW and AVX-512 VNNI: `vpdpbusd` on 512-bit vectors.
    Avx512Vnni,
    /// x86_64 with AVX2: both operands widened to i16, `vpmaddwd` (exact, no i16 saturation).
    Avx2,
    /// aarch64 with the dot-product extension: `sdot` on activations flipped to s8.
    NeonDotprod,
    /// aarch64 (NEON is part of the base architecture): both operands widened to i16, `smlal`.
    Neon,
    /// 32-bit ARM with NEON (detected at run time): both operands widened to i16, `vmlal.s16`.
    Armv7Neon,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 5] =
        [Int8Kernel::Avx512Vnni, Int8Kernel::Avx2, Int8Kernel::NeonDotprod, Int8Kernel::Neon, Int8Kernel::Armv7Neon];

    /// The kernel's name, as [`KERNEL_ENV`] takes it and `ckd-edge info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::NeonDotprod => "neon-dotprod",
            Int8Kernel::Neon => "neon",
            Int8Kernel::Armv7Neon => "armv7-neon",
        }
    }

    /// Whether this CPU has the instructions the kernel uses.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Int8Kernel::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Int8Kernel::Avx2 => has!("avx2"),
                Int8Kernel::NeonDotprod | Int8Kernel::Neon | Int8Kernel::Armv7Neon => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected as has;
            match self {
                Int8Kernel::NeonDotprod => has!("neon") && has!("dotprod"),
                Int8Kernel::Neon => has!("neon"),
                Int8Kernel::Avx512Vnni | Int8Kernel::Avx2 | Int8Kernel::Armv7Neon => false,
            }
        }
        #[cfg(target_arch = "arm")]
        {
            self == Int8Kernel::Armv7Neon && super::int8_armv7::has_neon()
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
        {
            false
        }
    }

    /// The fastest kernel this CPU has, if any.
    pub fn best() -> Option<Int8Kernel> {
        Int8Kernel::ALL.into_iter().find(|k| k.available())
    }

    /// The kernel [`KERNEL_ENV`] asks for (see there); `Ok(None)` means tract's own int8 path.
    /// Errors name the variable, the value and what is wrong with it.
    pub fn from_env() -> Result<Option<Int8Kernel>, String> {
        match std::env::var(KERNEL_ENV) {
            Ok(v) => Int8Kernel::choose(Some(&v)),
            Err(std::env::VarError::NotPresent) => Int8Kernel::choose(None),
            Err(e) => Err(format!("{KERNEL_ENV}: {e}")),
        }
    }

    /// [`Int8Kernel::from_env`] for the variable's value `value` (`None`: unset).
    pub fn choose(value: Option<&str>) -> Result<Option<Int8Kernel>, String> {
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(Int8Kernel::best()),
            Some("tract") => Ok(None),
            Some(name) => {
                let names: Vec<&str> = Int8Kernel::ALL.iter().map(|k| k.name()).collect();
                let kernel = Int8Kernel::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
                    format!("{KERNEL_ENV}={name:?}: expected auto, tract or one of {}", names.join(", "))
                })?;
                if !kernel.available() {
                    return Err(format!("{KERNEL_ENV}={name}: this CPU lacks the instructions of that kernel"));
                }
                Ok(Some(kernel))
            }
        }
    }
}

/// Whether this CPU has a fast kernel ([`Int8Kernel::best`]).
pub fn fast_kernel_available() -> bool {
    Int8Kernel::best().is_some()
}

/// 16 columns x 4 K values of s8 weights: byte `4 * j + t` is `W[4 g + t, col0 + j]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub(super) struct Quad(pub(super) [i8; 64]);

/// A quad of zero weights: what the ARM kernels read in place of the K group past the last
/// when they step over groups in pairs or fours.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub(super) static ZERO_QUAD: Quad = Quad([0; 64]);

/// One int8 linear's constants, packed for the kernel.
///
/// Layout: panel `p` (columns `p * NR ..`), K group `g` (K values `4 g .. 4 g + 4`), vector `v`
/// is `quads[(p * groups + g) * VECS + v]`. Columns past N and K values past K are zeros, and
/// so are `colsum`, `w_scale` and `bias` past N (length `panels * NR`).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) groups: usize,
    // Read by the x86_64 and ARM kernels only.
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")), allow(dead_code))]
    pub(super) panels: usize,
    pub(super) quads: Vec<Quad>,
    pub(super) colsum: Vec<i32>,
    pub(super) w_scale: Vec<f32>,
    pub(super) bias: Vec<f32>,
    /// No weight is -128 (the exporter's symmetric range): two s8 x s8 products of flipped
    /// activations then fit an i16 sum, which the `neon` kernel's 8-bit path needs.
    #[cfg_attr(not(any(target_arch = "aarch64", target_arch = "arm")), allow(dead_code))]
    pub(super) symmetric: bool,
    gelu: bool,
    kernel: Option<Int8Kernel>,
}

/// Equal when every value is (floats compared by their bits, so that `Eq` holds).
impl PartialEq for PackedLinear {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (self.k, self.n, self.gelu, self.kernel, &self.quads, &self.colsum)
            == (other.k, other.n, other.gelu, other.kernel, &other.quads, &other.colsum)
            && bits(&self.w_scale) == bits(&other.w_scale)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for PackedLinear {}

impl PackedLinear {
    /// Packs `w` ([k, n] row-major s8), `w_scale` [n] and `bias` [n], to run on
    /// [`Int8Kernel::best`] ([`PackedLinear::with_kernel`] picks another).
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
        Ok(PackedLinear {
            k,
            n,
            groups,
            panels,
            quads,
            colsum,
            w_scale: pad(w_scale),
            bias: pad(bias),
            symmetric: !w.contains(&i8::MIN),
            gelu: false,
            kernel: Int8Kernel::best(),
        })
    }

    /// The same layer followed by GELU (erf form), `y = (y * 0.5) * (1 + erf(y / sqrt 2))`,
    /// computed as tract's `GeluExact` does (its erf kernel, the same products), so the same
    /// bits as the unfused plan.
    pub fn with_gelu(mut self) -> Self {
        self.gelu = true;
        self
    }

    /// The same layer on `kernel` (`None`: the portable loop). A kernel this CPU lacks runs
    /// the portable loop too.
    pub fn with_kernel(mut self, kernel: Option<Int8Kernel>) -> Self {
        self.kernel = kernel.filter(|k| k.available());
        self
    }

    /// The kernel [`PackedLinear::run`] uses (`None`: the portable loop).
    pub fn kernel(&self) -> Option<Int8Kernel> {
        self.kernel
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
    /// GELU when [`PackedLinear::with_gelu`]), on [`PackedLinear::kernel`]. Rows are split over
    /// the current tract executor.
    pub fn run(&self, x_q: &[u8], m: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) -> TractResult<()> {
        self.run_with(x_q, m, x_scale, x_zp, out, self.kernel)
    }

    /// [`PackedLinear::run`] on `kernel` (`None`, or a kernel this CPU lacks: the portable loop).
    pub fn run_with(
        &self,
        x_q: &[u8],
        m: usize,
        x_scale: f32,
        x_zp: u8,
        out: &mut [f32],
        kernel: Option<Int8Kernel>,
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
        let kernel = kernel.filter(|k| k.available());
        for_row_chunks(out, n, MR, 2 * MR, |first_row, chunk| {
            let rows = chunk.len() / n;
            let a = &x_q[first_row * k..(first_row + rows) * k];
            match kernel {
                // SAFETY (every kernel): the CPU has the kernel's features (checked above); `a`
                // holds rows x K and `chunk` rows x N values.
                #[cfg(target_arch = "x86_64")]
                Some(Int8Kernel::Avx512Vnni) => unsafe {
                    super::int8_avx512::rows(self, a, rows, x_scale, x_zp, chunk)
                },
                #[cfg(target_arch = "x86_64")]
                Some(Int8Kernel::Avx2) => unsafe { super::int8_avx2::rows(self, a, rows, x_scale, x_zp, chunk) },
                #[cfg(target_arch = "aarch64")]
                Some(Int8Kernel::NeonDotprod) => unsafe {
                    super::int8_neon_dot::rows(self, a, rows, x_scale, x_zp, chunk)
                },
                #[cfg(target_arch = "aarch64")]
                Some(Int8Kernel::Neon) => unsafe { super::int8_neon::rows(self, a, rows, x_scale, x_zp, chunk) },
                #[cfg(target_arch = "arm")]
                Some(Int8Kernel::Armv7Neon) => unsafe { super::int8_armv7::rows(self, a, rows, x_scale, x_zp, chunk) },
                _ => self.rows_portable(a, rows, x_scale, x_zp, chunk),
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

    /// Every kernel this CPU has, and the portable loop (`None`); the others are named as skipped.
    fn kernels_here() -> Vec<Option<Int8Kernel>> {
        let mut here = vec![None];
        for k in Int8Kernel::ALL {
            if k.available() {
                here.push(Some(k));
            } else {
                eprintln!("this CPU lacks the {} kernel: not checked here", k.name());
            }
        }
        here
    }

    /// `out` equals `expected` bit for bit on every kernel here.
    #[allow(clippy::too_many_arguments)]
    fn check_kernels(a: &[u8], w: &[i8], m: usize, k: usize, n: usize, xs: f32, zp: u8, ws: &[f32], b: &[f32]) {
        let packed = PackedLinear::new(w, k, n, ws, b).unwrap();
        let expected = reference(a, w, m, k, n, xs, zp, ws, b);
        for kernel in kernels_here() {
            let mut out = vec![f32::NAN; m * n];
            packed.run_with(a, m, xs, zp, &mut out, kernel).unwrap();
            let same = out.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
            let name = kernel.map_or("portable", |k| k.name());
            assert!(same, "m {m} k {k} n {n} {name}: {:?} vs {:?}", &out[..n.min(4)], &expected[..n.min(4)]);
        }
    }

    #[test]
    fn every_kernel_equals_the_formula_bit_for_bit() {
        // Tails in every direction: K not a multiple of 4, N not of 8, 16 or 48, rows not of
        // either kernel's tile.
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 17), (8, 4, 48), (9, 37, 49), (17, 64, 100), (20, 384, 96), (5, 3, 130)] {
            let a = bytes(m * k, 1 + k as u64);
            // Full range of s8, including -128, and the exporter's symmetric range [-127, 127]
            // (which the `neon` kernel runs on 8-bit products).
            let w: Vec<i8> = bytes(k * n, 2 + n as u64).into_iter().map(|x| x as i8).collect();
            let symmetric: Vec<i8> = w.iter().map(|&x| x.max(-127)).collect();
            let ws: Vec<f32> = (0..n).map(|c| 0.001 + c as f32 * 1e-4).collect();
            let b: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 3.0).collect();
            check_kernels(&a, &w, m, k, n, 0.0123, 117, &ws, &b);
            check_kernels(&a, &symmetric, m, k, n, 0.0123, 117, &ws, &b);
        }
    }

    /// The products that overflow an i16 pair sum (255 x -128 twice is -65,280; 255 x 127 twice
    /// 64,770), over a K long enough that only an exact i32 sum gets them right.
    #[test]
    fn extreme_values_do_not_saturate() {
        let (m, k, n) = (7, 4099, 53);
        let a = vec![255u8; m * k];
        let ws = vec![1.0f32; n];
        let b = vec![0.0f32; n];
        for (w_value, zp) in [(-128i8, 0u8), (127, 0), (-128, 255), (127, 1), (-127, 0)] {
            let w = vec![w_value; k * n];
            check_kernels(&a, &w, m, k, n, 1.0, zp, &ws, &b);
        }
        // Activations 0, which the 8-bit paths flip to -128: with symmetric weights the largest
        // i16 pair sum, 2 x 128 x 127.
        let zeros = vec![0u8; m * k];
        for w_value in [-127i8, 127] {
            check_kernels(&zeros, &vec![w_value; k * n], m, k, n, 1.0, 3, &ws, &b);
        }
        // Alternating signs along K and down the columns.
        let w: Vec<i8> = (0..k * n).map(|i| if (i / n + i % n) % 2 == 0 { -128 } else { 127 }).collect();
        check_kernels(&a, &w, m, k, n, 1.0, 0, &ws, &b);
    }

    #[test]
    fn the_environment_variable_picks_or_refuses_a_kernel() {
        assert_eq!(Int8Kernel::choose(None), Ok(Int8Kernel::best()));
        assert_eq!(Int8Kernel::choose(Some(" auto ")), Ok(Int8Kernel::best()));
        assert_eq!(Int8Kernel::choose(Some("tract")), Ok(None));
        for k in Int8Kernel::ALL {
            let chosen = Int8Kernel::choose(Some(k.name()));
            if k.available() {
                assert_eq!(chosen, Ok(Some(k)));
            } else {
                assert!(chosen.unwrap_err().contains("lacks"));
            }
        }
        let err = Int8Kernel::choose(Some("sse9")).unwrap_err();
        assert!(err.contains(KERNEL_ENV) && err.contains("\"sse9\"") && err.contains("avx2"), "{err}");
        // A kernel this CPU lacks runs the portable loop rather than faulting.
        let p = PackedLinear::new(&[1; 8], 2, 4, &[1.0; 4], &[0.5; 4]).unwrap();
        for k in Int8Kernel::ALL {
            assert_eq!(p.clone().with_kernel(Some(k)).kernel(), Some(k).filter(|k| k.available()));
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
