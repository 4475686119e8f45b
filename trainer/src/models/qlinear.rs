//! Frozen linear layers and token tables on quantized (GGUF) weights, for inference on the CPU.
//!
//! A [`QuantWeight`] holds W [out, in] as a candle `QTensor` and computes x Wᵀ with candle's
//! `QMatMul` (no f32 copy of W; candle quantizes the activations per row itself). On x86 with
//! AVX-512 VNNI or AVX-VNNI, candle 0.11 packs q8_0 / q4_K / q6_K weights into 16-row tiles and
//! runs `vpdpbusd` over them (its `repack_x86` path), but only when `in` is a multiple of 256 and
//! `out` a multiple of 16; every other weight runs one dot product per output element.
//! [`QuantWeight::prepare`] with [`Packing::Tiles`] makes a weight meet those conditions:
//! types the tiles cannot run (q4_0, q5_0, q5_1, q8_1, q2_K..q5_K) are re-quantized to q8_0
//! (per block of 32, an error of at most half a q8_0 step, 1/254 of the block's largest
//! magnitude), and `in` is zero-padded to the next multiple of 256 (zero columns add nothing;
//! the input is padded to match in [`QuantWeight::forward`]).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

/// The inner-dimension granule of candle's x86 tiles (its `QK_K`).
const TILE_K: usize = 256;
/// The output-row granule of candle's x86 tiles.
const TILE_N: usize = 16;

/// How quantized weights are laid out for the matmul kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// The file's own types and shapes (candle's generic per-element dot products, except for
    /// weights that already fit its tiles).
    Native,
    /// Re-quantized and padded so every matmul with `out % 16 == 0` runs candle's VNNI tiles.
    Tiles,
}

impl Packing {
    /// [`Packing::Tiles`] where the CPU has the int8 dot-product instructions candle's tiles use
    /// for q8_0 (AVX-512 VNNI or AVX-VNNI), else [`Packing::Native`].
    pub fn detect() -> Self {
        if vnni_level().is_some() {
            Packing::Tiles
        } else {
            Packing::Native
        }
    }
}

/// The x86 int8 dot-product level candle's q8_0 tiles run on, named for log lines; `None`
/// elsewhere (other CPUs run candle's generic quantized dot products).
pub fn vnni_level() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var("MISTRALRS_FORCE_AVX2").as_deref() == Ok("1") {
            return None;
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            return Some("AVX-512 VNNI");
        }
        if is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") {
            return Some("AVX-VNNI");
        }
    }
    None
}

/// One line naming the kernels a model loaded with `packing` runs on this CPU.
pub fn kernel_description(packing: Packing) -> String {
    match (packing, vnni_level()) {
        (Packing::Tiles, Some(level)) => format!("candle q8_0/q4_K/q6_K tiles ({level}), inputs padded to 256"),
        (Packing::Tiles, None) => "candle generic quantized dot products (no VNNI on this CPU)".into(),
        (Packing::Native, _) => "candle generic quantized dot products (the file's own types)".into(),
    }
}

/// W [out, in] quantized; see the module docs.
#[derive(Debug, Clone)]
pub struct QuantWeight {
    matmul: QMatMul,
    out_dim: usize,
    in_dim: usize,
    /// `in_dim` rounded up to what the kernel needs (== `in_dim` without padding).
    padded_in: usize,
    dtype: GgmlDType,
}

impl QuantWeight {
    /// Takes `w` [out, in] as it is (no re-quantization, no padding).
    pub fn new(w: QTensor) -> candle_core::Result<Self> {
        let (out_dim, in_dim) = w.shape().dims2()?;
        let dtype = w.dtype();
        Ok(Self { matmul: QMatMul::from_qtensor(w)?, out_dim, in_dim, padded_in: in_dim, dtype })
    }

    /// Lays `w` [out, in] out for `packing` (see the module docs).
    pub fn prepare(w: QTensor, packing: Packing) -> candle_core::Result<Self> {
        let (out_dim, in_dim) = w.shape().dims2()?;
        let fits = matches!(w.dtype(), GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K)
            && in_dim.is_multiple_of(TILE_K)
            && out_dim.is_multiple_of(TILE_N);
        let float = matches!(w.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if packing == Packing::Native || fits || float || !out_dim.is_multiple_of(TILE_N) {
            // candle's q4_1 / q5_0 / q5_1 dot products take blocks in pairs (and panic on an odd
            // count): such a weight runs as q8_0 instead.
            let paired = matches!(w.dtype(), GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
            if paired && (in_dim / w.dtype().block_size()) % 2 == 1 {
                let q = QTensor::quantize(&w.dequantize(&w.device())?, GgmlDType::Q8_0)?;
                return Self::new(q);
            }
            return Self::new(w);
        }
        let padded_in = in_dim.div_ceil(TILE_K) * TILE_K;
        let dense = w.dequantize(&w.device())?;
        let dense = if padded_in > in_dim { dense.pad_with_zeros(1, 0, padded_in - in_dim)? } else { dense };
        let q = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
        Ok(Self { matmul: QMatMul::from_qtensor(q)?, out_dim, in_dim, padded_in, dtype: GgmlDType::Q8_0 })
    }

    /// (out, in) of the unpadded weight.
    pub fn dims(&self) -> (usize, usize) {
        (self.out_dim, self.in_dim)
    }

    /// The quantized type the kernel runs.
    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// x [n, in] f32 -> x Wᵀ [n, out] f32.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, k) = x.dims2()?;
        if k != self.in_dim {
            candle_core::bail!("quantized linear: input has {k} features, expected {}", self.in_dim)
        }
        let x = if x.dtype() == DType::F32 { x.contiguous()? } else { x.to_dtype(DType::F32)? };
        let x = if self.padded_in > k { x.pad_with_zeros(1, 0, self.padded_in - k)? } else { x };
        self.matmul.forward(&x)
    }

    /// W as f32 [out, in] (for tests and for merging).
    pub fn dequantize(&self) -> candle_core::Result<Tensor> {
        let w = match &self.matmul {
            QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?,
            QMatMul::Tensor(t) => t.to_dtype(DType::F32)?,
            QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
        };
        if self.padded_in > self.in_dim {
            w.narrow(1, 0, self.in_dim)
        } else {
            Ok(w)
        }
    }
}

/// A token table [V, H]: the input embedding and, tied or not, the LM head's weight.
#[derive(Debug, Clone)]
pub enum TokenTable {
    /// Plain tensor in the model dtype.
    Dense(Tensor),
    /// Quantized rows, looked up without an f32 copy of the table; the LM head runs on the same
    /// quantized weight.
    Quantized { table: std::sync::Arc<QTensor>, head: QuantWeight, device: Device },
}

impl TokenTable {
    pub fn quantized(table: QTensor) -> candle_core::Result<Self> {
        let table = std::sync::Arc::new(table);
        let (out_dim, in_dim) = table.shape().dims2()?;
        let dtype = table.dtype();
        let head = QuantWeight { matmul: QMatMul::from_arc(table.clone())?, out_dim, in_dim, padded_in: in_dim, dtype };
        let device = table.device();
        Ok(Self::Quantized { table, head, device })
    }

    /// Rows for `ids` (flat u32 [N]) -> [N, H] f32 (Dense: the table's dtype).
    pub fn rows(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TokenTable::Dense(w) => w.index_select(ids, 0),
            TokenTable::Quantized { table, .. } => table.embedding(ids),
        }
    }

    /// hidden [n, H] -> logits [n, V] = hidden Wᵀ.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TokenTable::Dense(w) => hidden.matmul(&w.t()?),
            TokenTable::Quantized { head, .. } => head.forward(hidden),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            TokenTable::Dense(w) => w.dtype(),
            TokenTable::Quantized { .. } => DType::F32,
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            TokenTable::Dense(w) => w.device(),
            TokenTable::Quantized { device, .. } => device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(rows: usize, cols: usize, seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// rms(a - b) / rms(b).
    fn rel_rms(a: &Tensor, b: &Tensor) -> f32 {
        let rms = |t: &Tensor| t.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        rms(&(a - b).unwrap()) / rms(b)
    }

    /// Padding and re-quantizing change the layout, not the product: both packings of a q5_0
    /// weight whose `in` (128) is not a multiple of 256 give x Wᵀ within the quantization noise of
    /// the dense product, and the padded weight dequantizes to the unpadded shape. A q5_0 weight
    /// with an odd number of blocks (candle's q5_0 dot product takes them in pairs) runs as q8_0.
    #[test]
    fn tiles_and_native_packings_compute_the_same_product() {
        let w = seeded(32, 128, 1);
        let x = seeded(5, 128, 2);
        let exact = x.matmul(&w.t().unwrap()).unwrap();
        let q5 = || QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let native = QuantWeight::prepare(q5(), Packing::Native).unwrap();
        let tiles = QuantWeight::prepare(q5(), Packing::Tiles).unwrap();
        assert_eq!(native.dtype(), GgmlDType::Q5_0);
        assert_eq!(tiles.dtype(), GgmlDType::Q8_0);
        assert_eq!(tiles.padded_in, 256);
        assert_eq!(tiles.dims(), (32, 128));
        assert_eq!(tiles.dequantize().unwrap().dims(), &[32, 128]);
        let (yn, yt) = (native.forward(&x).unwrap(), tiles.forward(&x).unwrap());
        // q5_0 rounds each weight by at most 1/32 of its block's max (here <= 1), uniformly: an
        // error of rms 1/(32 sqrt 3) per weight against weights of rms 1/sqrt 3, so about 3% of the
        // product's rms; the activations' 8-bit quantization adds far less.
        assert!(rel_rms(&yn, &exact) < 0.06, "native {}", rel_rms(&yn, &exact));
        assert!(rel_rms(&yt, &exact) < 0.06, "tiles {}", rel_rms(&yt, &exact));
        assert!(rel_rms(&yt, &yn) < 0.03, "tiles vs native {}", rel_rms(&yt, &yn));
        assert!(native.forward(&seeded(2, 96, 3)).is_err());

        let odd = seeded(16, 96, 4);
        let q = QuantWeight::prepare(QTensor::quantize(&odd, GgmlDType::Q5_0).unwrap(), Packing::Native).unwrap();
        assert_eq!(q.dtype(), GgmlDType::Q8_0);
        let x = seeded(3, 96, 5);
        assert!(rel_rms(&q.forward(&x).unwrap(), &x.matmul(&odd.t().unwrap()).unwrap()) < 0.06);
    }

    /// A quantized token table looks rows up as the dequantized table would, and its logits are
    /// the product with the same weight.
    #[test]
    fn quantized_token_table_matches_its_dequantized_table() {
        let w = seeded(40, 64, 4);
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let dense = q.dequantize(&Device::Cpu).unwrap();
        let table = TokenTable::quantized(q).unwrap();
        let ids = Tensor::new(&[3u32, 0, 39, 3], &Device::Cpu).unwrap();
        let got = table.rows(&ids).unwrap();
        assert_eq!(max_abs(&got, &dense.index_select(&ids, 0).unwrap()), 0.0);
        let h = seeded(3, 64, 5);
        let logits = table.logits(&h).unwrap();
        assert_eq!(logits.dims(), &[3, 40]);
        assert!(max_abs(&logits, &h.matmul(&dense.t().unwrap()).unwrap()) < 0.1);
    }
}
