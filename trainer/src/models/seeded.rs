//! Deterministic random weights shared by the model files: a tensor's draws come from
//! ChaCha8(seed) on the stream FNV-1a(tensor name), so a weight depends only on the seed and its
//! own name (not on the order in which tensors are created).

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// FNV-1a 64 of `s` (stable across platforms and Rust versions, unlike `DefaultHasher`).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// ChaCha8(`seed`) on the stream of `name`.
pub(crate) fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(name));
    rng
}

/// `n` draws of N(`mean`, `std`²) by Box-Muller: two independent N(0, 1) draws from two
/// uniforms in (0, 1].
pub(crate) fn normal_samples(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut vals = Vec::with_capacity(n);
    while vals.len() < n {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        vals.push((mean + std * r * a.cos()) as f32);
        if vals.len() < n {
            vals.push((mean + std * r * a.sin()) as f32);
        }
    }
    vals
}

/// [`VarBuilder`] backend that creates each requested tensor as a Var in `varmap`, drawn
/// deterministically from (seed, name). Supports the `Init::Const` and `Init::Randn` hints.
pub(crate) struct SeededInit {
    pub(crate) varmap: VarMap,
    pub(crate) seed: u64,
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let tensor = match h {
            Init::Const(v) => Tensor::full(v as f32, s, dev)?,
            Init::Randn { mean, stdev } => {
                let vals = normal_samples(&mut rng_for(self.seed, name), s.elem_count(), mean, stdev);
                Tensor::from_vec(vals, s, dev)?
            }
            other => candle_core::bail!("unsupported init {other:?} for {name}"),
        };
        let var = Var::from_tensor(&tensor.to_dtype(dtype)?)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: tensors of a seeded init must be requested with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn draws_depend_on_seed_and_name_only() {
        let a = normal_samples(&mut rng_for(1, "w"), 5, 0.0, 1.0);
        assert_eq!(a, normal_samples(&mut rng_for(1, "w"), 5, 0.0, 1.0));
        assert_ne!(a, normal_samples(&mut rng_for(1, "v"), 5, 0.0, 1.0));
        assert_ne!(a, normal_samples(&mut rng_for(2, "w"), 5, 0.0, 1.0));
        // An odd count keeps the first draws of a longer run.
        assert_eq!(a[..], normal_samples(&mut rng_for(1, "w"), 6, 0.0, 1.0)[..5]);
    }

    #[test]
    fn moments_are_close() {
        let v = normal_samples(&mut rng_for(7, "x"), 20_000, 1.0, 0.5);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let s = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((m - 1.0).abs() < 0.02 && (s - 0.5).abs() < 0.02, "{m} {s}");
    }
}
