//! AdamW with savable state, global-norm gradient clipping and the warmup + linear-decay
//! learning-rate schedule.
//!
//! Our own AdamW (not `candle_nn::AdamW`) because `--resume` must continue exactly, which needs
//! the moment estimates and the step count saved with the weights.
//!
//! Update for parameter `w` with gradient `g` at step `t` (1-based), learning rate `lr`:
//!
//! ```text
//! m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g²
//! m̂ = m / (1 - b1^t)               v̂ = v / (1 - b2^t)
//! w = w - lr (m̂ / (sqrt(v̂) + eps) + wd w)      (wd = 0 for biases and LayerNorm weights)
//! ```

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// AdamW settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (not applied to biases and LayerNorm weights).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
    /// Multiplies the learning rate of this variable (1 by default; see [`AdamW::scale_lr`]).
    lr_scale: f64,
}

/// AdamW over every variable of a [`VarMap`], in name order (deterministic).
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

/// Whether a parameter gets weight decay (HF convention: not biases nor LayerNorm).
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

impl AdamW {
    /// Optimizer over all variables of `varmap`, moments at zero.
    pub fn new(varmap: &VarMap, cfg: AdamWConfig) -> Result<Self> {
        let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(data);
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = named
            .into_iter()
            .map(|(name, var)| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                let decay = decays(&name);
                Ok(Slot { name, var, m, v, decay, lr_scale: 1.0 })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { cfg, slots, step: 0 })
    }

    /// Multiplies the learning rate of every variable whose name starts with `prefix` by
    /// `scale` (e.g. a freshly initialized head on a slower encoder). Returns how many matched.
    pub fn scale_lr(&mut self, prefix: &str, scale: f64) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.name.starts_with(prefix)) {
            s.lr_scale = scale;
            n += 1;
        }
        n
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The variables, in name order.
    pub fn vars(&self) -> Vec<Var> {
        self.slots.iter().map(|s| s.var.clone()).collect()
    }

    /// One update with learning rate `lr`. A variable without a gradient is an error: the model
    /// must be differentiable end to end (silently skipping it hides broken ops).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                return Err(candle_core::Error::Msg(format!("parameter {} received no gradient", s.name)));
            };
            s.m = ((&s.m * b1)? + (g * (1.0 - b1))?)?;
            s.v = ((&s.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&s.m / bc1)?;
            let v_hat = (&s.v / bc2)?;
            let mut update = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            if s.decay && self.cfg.weight_decay > 0.0 {
                update = (update + (s.var.as_tensor() * self.cfg.weight_decay)?)?;
            }
            s.var.set(&(s.var.as_tensor() - (update * (lr * s.lr_scale))?)?)?;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state`]. Every moment must be
    /// present with its variable's shape.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (kind, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{kind}.{}", s.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state has no {key}")))?;
                if t.dims() != s.var.dims() {
                    return Err(candle_core::Error::Msg(format!(
                        "optimizer state {key}: shape {:?}, parameter has {:?}",
                        t.dims(),
                        s.var.dims()
                    )));
                }
                *slot = t.to_device(s.var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    // Sum of squares accumulated on the device in f32 (whatever the gradient dtype, e.g. bf16),
    // read back once: one host sync per call rather than one per tensor.
    let mut sq: Option<Tensor> = None;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let s = g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all()?;
            sq = Some(match sq {
                Some(acc) => (acc + s)?,
                None => s,
            });
        }
    }
    let norm = match sq {
        Some(s) => (s.to_scalar::<f32>()? as f64).sqrt(),
        None => 0.0,
    };
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// Learning rate at `step` (0-based): linear warmup from 0 to `peak` over `warmup` steps, then
/// linear decay to 0 at `total` steps.
pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let rest = total.saturating_sub(warmup).max(1);
    peak * (total.saturating_sub(step) as f64 / rest as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn one_adamw_step_by_hand() {
        // w = [1, -2], loss = sum(w²) -> g = 2w = [2, -4]. Step 1, lr 0.1, wd 0:
        // m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², update = g / (|g| + eps) ≈ sign(g).
        // w' = w - 0.1 sign(g) = [0.9, -1.9].
        let vm = VarMap::new();
        let w = vm.get((2,), "w", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let var = vm.all_vars().remove(0);
        var.set(&Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(&vm, AdamWConfig { weight_decay: 0.0, ..Default::default() }).unwrap();
        let grads = w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        opt.step(&grads, 0.1).unwrap();
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] + 1.9).abs() < 1e-6, "{got:?}");
        // State round trip.
        let st = opt.state();
        let mut opt2 = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        opt2.load_state(&st, opt.steps()).unwrap();
        assert_eq!(opt2.steps(), 1);
        assert_eq!(opt2.state()["m.w"].to_vec1::<f32>().unwrap(), st["m.w"].to_vec1::<f32>().unwrap());
        assert!(opt2.load_state(&HashMap::new(), 1).is_err());
    }

    #[test]
    fn clipping_and_schedule() {
        let vm = VarMap::new();
        let w = vm.get((2,), "w", candle_nn::Init::Const(3.0), DType::F32, &Device::Cpu).unwrap();
        // loss = 2 * sum(w) -> g = [2, 2], norm = 2√2.
        let mut grads = (w.sum_all().unwrap() * 2.0).unwrap().backward().unwrap();
        let vars = vm.all_vars();
        let n = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((n - 8f64.sqrt()).abs() < 1e-6);
        let g = grads.get(vars[0].as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let clipped = ((g[0] * g[0] + g[1] * g[1]) as f64).sqrt();
        assert!((clipped - 1.0).abs() < 1e-5, "{clipped}");
        assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(100, 100, 10, 1.0), 0.0);
        assert!(decays("encoder.layer.0.output.dense.weight"));
        assert!(!decays("encoder.layer.0.output.LayerNorm.weight") && !decays("classifier.bias"));
    }
}
