//! Building blocks shared by the model files ([`super::bert`], [`super::qwen2`], [`super::lora`]):
//! the padded-key mask constant, caller-owned dropout randomness and a softmax with a backward.

use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Value added to attention scores of padded keys. Finite, so a row whose keys are all padding
/// gives uniform weights instead of NaN; `exp(-1e9 + s - max)` underflows to exactly 0 in f32,
/// so padded keys contribute exactly nothing to real rows.
pub const MASK_NEG: f32 = -1.0e9;

/// Caller-owned dropout randomness. Masks are drawn in a fixed order (the order of the forward
/// pass), so the same seed and the same inputs give the same masks on every run.
#[derive(Debug, Clone)]
pub struct DropoutRng {
    rng: ChaCha8Rng,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Inverted dropout: each element is zeroed with probability `p` and the survivors are
    /// scaled by 1 / (1 - p). `p == 0` returns `xs` unchanged. Same shape as `xs`.
    pub fn apply(&mut self, xs: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        let p = p as f32;
        let n = xs.elem_count();
        let mask: Vec<f32> = (0..n).map(|_| if self.rng.random::<f32>() < p { 0.0 } else { scale }).collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
    }
}

/// Applies dropout with probability `p` when a training RNG is given; identity otherwise (and
/// when `p == 0`, which draws nothing).
pub fn dropout(xs: &Tensor, p: f64, rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
    match rng {
        Some(rng) => rng.apply(xs, p),
        None => Ok(xs.clone()),
    }
}

/// Softmax over the last dim as `exp(x - max) / sum(exp(x - max))` (every op has a backward;
/// the max is detached, which leaves the gradient unchanged since softmax is shift invariant).
pub fn softmax_last_dim(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// The config checks both models share: every named size is > 0 and `hidden` is a multiple of
/// `heads`. Returns the first violation as a message (each model wraps it in its own error).
pub fn check_sizes(sizes: &[(&str, usize)], hidden: usize, heads: usize) -> Result<(), String> {
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} must be > 0"));
    }
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_sizes_names_the_first_problem() {
        assert_eq!(check_sizes(&[("a", 1), ("b", 2)], 64, 4), Ok(()));
        assert_eq!(check_sizes(&[("a", 1), ("b", 0), ("c", 0)], 64, 4), Err("b must be > 0".into()));
        assert_eq!(
            check_sizes(&[("a", 1)], 64, 5),
            Err("hidden_size 64 is not a multiple of num_attention_heads 5".into())
        );
        assert!(check_sizes(&[], 64, 0).is_err());
    }

    #[test]
    fn softmax_and_dropout_by_hand() {
        let x = Tensor::new(&[[0f32, 2f32.ln()]], &candle_core::Device::Cpu).unwrap();
        let p = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!((p[0][0] - 1.0 / 3.0).abs() < 1e-6 && (p[0][1] - 2.0 / 3.0).abs() < 1e-6, "{p:?}");
        // Eval mode and p = 0 are the identity; p = 0.5 keeps 0 or 2x each element.
        assert_eq!(dropout(&x, 0.5, None).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        let mut rng = DropoutRng::new(3);
        assert_eq!(rng.apply(&x, 0.0).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        let ones = Tensor::ones((1, 64), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let d = rng.apply(&ones, 0.5).unwrap().to_vec2::<f32>().unwrap();
        assert!(d[0].iter().all(|&v| v == 0.0 || v == 2.0) && d[0].contains(&0.0) && d[0].contains(&2.0));
    }
}
