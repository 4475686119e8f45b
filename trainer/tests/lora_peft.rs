//! LoRA SFT end to end on a toy frozen model: the adapter learns under AdamW with the
//! answer-token loss, saves as a PEFT adapter, loads back into a fresh VarMap to the same
//! outputs, and merging keeps them.
//!
//! Set `CKD_LORA_PEFT_DIR` to keep the saved adapter there (e.g. to read it from Python).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ckd_trainer::models::common::DropoutRng;
use ckd_trainer::models::lora::{insert_adapter, LoraConfig, LoraLinear};
use ckd_trainer::models::peft::{load_adapter_info, save_adapter, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use ckd_trainer::optim::{AdamW, AdamWConfig};
use ckd_trainer::teacher::sft::answer_token_loss;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const V: usize = 7;
const H: usize = 8;
const LAYERS: usize = 2;

fn randn(shape: (usize, usize), seed: u64, std: f32) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * std).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Frozen toy LM: embeddings E [V, H]; per layer h = h + o_proj(q_proj(h)); logits = h Eᵀ.
struct Toy {
    emb: Tensor,
    layers: Vec<[LoraLinear; 2]>,
}

impl Toy {
    fn new(vb: Option<VarBuilder>, cfg: &LoraConfig) -> Self {
        let emb = randn((V, H), 1, 1.0);
        let layers = (0..LAYERS)
            .map(|i| {
                ["q_proj", "o_proj"].map(|m| {
                    let seed = 100 + 10 * i as u64 + u64::from(m == "o_proj");
                    let l = LoraLinear::frozen(
                        randn((H, H), seed, 0.3),
                        Some(randn((1, H), seed + 5, 0.1).squeeze(0).unwrap()),
                    );
                    match (&vb, cfg.targets(m)) {
                        (Some(vb), true) => l
                            .with_adapter_seeded(
                                vb.pp(format!("model.layers.{i}.self_attn.{m}")),
                                cfg.r,
                                cfg.alpha,
                                cfg.dropout,
                                42,
                            )
                            .unwrap(),
                        _ => l,
                    }
                })
            })
            .collect();
        Toy { emb, layers }
    }

    /// ids [B, T] -> logits [B, T, V].
    fn forward(&self, ids: &Tensor, mut rng: Option<&mut DropoutRng>) -> Tensor {
        let (b, t) = ids.dims2().unwrap();
        let mut h = self.emb.index_select(&ids.flatten_all().unwrap(), 0).unwrap().reshape((b, t, H)).unwrap();
        for [q, o] in &self.layers {
            let x = q.forward_t(&h, rng.as_deref_mut()).unwrap();
            let x = o.forward_t(&x, rng.as_deref_mut()).unwrap();
            h = (h + x).unwrap();
        }
        h.broadcast_matmul(&self.emb.t().unwrap()).unwrap()
    }
}

/// Sequences of 6 tokens; the answer (last 3 positions) continues t -> (3 t + 1) mod V.
fn batch() -> (Tensor, Tensor, Tensor) {
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    let mut mask = Vec::new();
    for start in 0..V as u32 {
        let seq: Vec<u32> = (0..7)
            .scan(start, |s, _| {
                let cur = *s;
                *s = (3 * *s + 1) % V as u32;
                Some(cur)
            })
            .collect();
        ids.extend_from_slice(&seq[..6]);
        targets.extend_from_slice(&seq[1..7]);
        mask.extend_from_slice(&[0f32, 0., 0., 1., 1., 1.]);
    }
    let d = Device::Cpu;
    (
        Tensor::from_vec(ids, (V, 6), &d).unwrap(),
        Tensor::from_vec(targets, (V, 6), &d).unwrap(),
        Tensor::from_vec(mask, (V, 6), &d).unwrap(),
    )
}

#[test]
fn lora_sft_save_load_merge() {
    let cfg = LoraConfig { r: 4, alpha: 8.0, dropout: 0.05, target_modules: vec!["q_proj".into(), "o_proj".into()] };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = Toy::new(Some(vb), &cfg);
    let base = Toy::new(None, &cfg);
    let (ids, targets, mask) = batch();

    // A fresh adapter (B = 0) leaves the frozen model's logits unchanged.
    assert_eq!(
        (model.forward(&ids, None) - base.forward(&ids, None))
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );

    let eval_loss =
        |m: &Toy| answer_token_loss(&m.forward(&ids, None), &targets, &mask).unwrap().to_scalar::<f32>().unwrap();
    let before = eval_loss(&model);
    let mut opt = AdamW::new(&vm, AdamWConfig { weight_decay: 0.0, ..Default::default() }).unwrap();
    assert_eq!(opt.vars().len(), 2 * LAYERS * 2);
    let mut rng = DropoutRng::new(7);
    for _ in 0..80 {
        let loss = answer_token_loss(&model.forward(&ids, Some(&mut rng)), &targets, &mask).unwrap();
        // AdamW errors on any Var without a gradient: every adapter tensor is reached.
        opt.step(&loss.backward().unwrap(), 2e-2).unwrap();
    }
    let after = eval_loss(&model);
    assert!(after < 0.5 * before, "loss {before} -> {after}");

    // Save as PEFT, load into a fresh VarMap: the same logits.
    let keep = std::env::var_os("CKD_LORA_PEFT_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.as_ref().map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let hash = save_adapter(&dir, &vm, &cfg, "toy/frozen-lm").unwrap();
    assert!(dir.join(ADAPTER_WEIGHTS_FILE).is_file() && dir.join(ADAPTER_CONFIG_FILE).is_file());
    let loaded = load_adapter_info(&dir).unwrap();
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.hash, hash);
    let vm2 = VarMap::new();
    insert_adapter(&vm2, &loaded.tensors, DType::F32, &Device::Cpu).unwrap();
    let model2 = Toy::new(Some(VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu)), &cfg);
    let diff = |a: &Toy, b: &Toy| {
        (a.forward(&ids, None) - b.forward(&ids, None))
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(diff(&model, &model2), 0.0);

    // Merged layers give the same logits within 1e-5.
    let mut merged = Toy::new(Some(VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu)), &cfg);
    for l in merged.layers.iter_mut().flatten() {
        l.merge().unwrap();
        assert!(!l.has_adapter());
    }
    assert!(diff(&model, &merged) < 1e-5, "{}", diff(&model, &merged));
    let names: HashMap<_, _> = loaded.tensors.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    assert_eq!(names["model.layers.1.self_attn.o_proj.lora_A.weight"], vec![4, H]);
    assert_eq!(names["model.layers.1.self_attn.o_proj.lora_B.weight"], vec![H, 4]);
}
