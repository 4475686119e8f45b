use std::path::Path;

use super::tokenizer::TOKEN_NORMAL;
use super::*;
use crate::models::checkpoint::{read_safetensors, safetensors_files, CheckpointError};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::IndexOp;
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Tolerance of comparisons between two f32 evaluations of the same function (different batch
/// composition, padding, file format or op grouping).
const TOL: f32 = 1e-5;

fn dev() -> Device {
    Device::Cpu
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn tiny_model(cfg: &Config, seed: u64) -> (Qwen2ForCausalLM, HashMap<String, Tensor>) {
    let tensors = init_random(cfg, seed, &dev()).unwrap();
    let model = Qwen2ForCausalLM::from_tensors(tensors.clone(), cfg, DType::F32, &dev()).unwrap();
    (model, tensors)
}

/// Right-pads `seqs` to `t` (pad id 0, mask 0): ids [B, t] u32, mask [B, t] u32.
fn padded(seqs: &[&[u32]], t: usize) -> (Tensor, Tensor) {
    let (mut ids, mut mask) = (vec![], vec![]);
    for s in seqs {
        for i in 0..t {
            ids.push(s.get(i).copied().unwrap_or(0));
            mask.push(u32::from(i < s.len()));
        }
    }
    let b = seqs.len();
    (Tensor::from_vec(ids, (b, t), &dev()).unwrap(), Tensor::from_vec(mask, (b, t), &dev()).unwrap())
}

fn one_row(seq: &[u32]) -> Tensor {
    Tensor::from_slice(seq, (1, seq.len()), &dev()).unwrap()
}

const SEQ_A: [u32; 5] = [3, 17, 200, 42, 9];
const SEQ_B: [u32; 11] = [151, 7, 99, 250, 1, 64, 5, 77, 120, 8, 31];

/// Mean next-token cross entropy over the real positions t < n_b - 1 (position t predicts
/// token t + 1): log-softmax written as lse(x) - x[target], lse = max + log(sum(exp(x - max))).
fn sft_loss(model: &Qwen2ForCausalLM, seqs: &[&[u32]], t: usize, rng: &mut DropoutRng) -> Tensor {
    let (ids, mask) = padded(seqs, t);
    let out = model.forward_t(&ids, Some(&mask), Some(rng), false).unwrap();
    let mut pos = vec![];
    let mut targets = vec![];
    for (row, s) in seqs.iter().enumerate() {
        for i in 0..s.len() - 1 {
            pos.push((row, i));
            targets.push(s[i + 1] as usize);
        }
    }
    let logits = model.logits_at(&out.hidden, &pos).unwrap();
    let v = model.config().vocab_size;
    let mut onehot = vec![0f32; pos.len() * v];
    for (k, &tg) in targets.iter().enumerate() {
        onehot[k * v + tg] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (pos.len(), v), &dev()).unwrap();
    let max = logits.max_keepdim(1).unwrap().detach();
    let lse = (logits.broadcast_sub(&max).unwrap().exp().unwrap().sum_keepdim(1).unwrap().log().unwrap() + &max)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let picked = (logits * onehot).unwrap().sum(1).unwrap();
    (lse - picked).unwrap().mean_all().unwrap()
}

#[test]
fn config_json_roundtrip_and_rejects_unsupported_features() {
    // Qwen2.5-0.5B-Instruct config.json.
    let json = r#"{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896,
        "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
        "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14,
        "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
        "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
        "use_sliding_window": false, "vocab_size": 151936}"#;
    assert_eq!(Config::from_json(json).unwrap(), Config::qwen2_5_0_5b());
    let cfg = Config::from_json(r#"{"eos_token_id": [151645, 151643]}"#).unwrap();
    assert_eq!(cfg.eos_token_id.unwrap().to_vec(), vec![151645, 151643]);
    assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    let err = Config::from_json(r#"{"hidden_act": "gelu"}"#).unwrap_err();
    assert!(err.to_string().contains("gelu"), "{err}");
    for bad in [
        r#"{"rope_scaling": {"type": "yarn", "factor": 4.0}}"#,
        r#"{"use_sliding_window": true}"#,
        r#"{"num_attention_heads": 32, "num_key_value_heads": 5}"#,
    ] {
        assert!(matches!(Config::from_json(bad), Err(Qwen2Error::InvalidConfig(_))), "{bad}");
    }
    assert!(Config::from_json(r#"{"rope_scaling": null}"#).is_ok());
    for cfg in [Config::tiny(), Config::qwen2_5_7b(), Config::qwen2_5_0_5b()] {
        cfg.validate().unwrap();
        let back: Config = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
    assert_eq!(Config::qwen2_5_7b().head_dim(), 128);
    assert_eq!(Config::qwen2_5_0_5b().head_dim(), 64);
    // 0.5B: 290 tensors with tied embeddings (2 + 12 per layer).
    assert_eq!(Config::qwen2_5_0_5b().expected_shapes().len(), 2 + 12 * 24);
}

#[test]
fn rmsnorm_and_rope_match_formulas() {
    // RMSNorm([1, 2, 3, 6]) with weight 2: mean of squares (1 + 4 + 9 + 36) / 4 = 12.5.
    let norm = RmsNorm::new(Tensor::full(2f32, 4, &dev()).unwrap(), 1e-6);
    let x = Tensor::new(&[[1f32, 2., 3., 6.]], &dev()).unwrap();
    let got: Vec<f32> = norm.forward(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
    for (g, xi) in got.iter().zip([1f32, 2., 3., 6.]) {
        assert!((g - xi / (12.5f32 + 1e-6).sqrt() * 2.).abs() < 1e-6);
    }
    // RoPE equals candle's fused rotate-half `rope` (forward only) with the half tables, and
    // the score between a rotated query at position p and key at position s depends on p - s only.
    let (b, n, t, d) = (2, 3, 7, 8);
    let x = Tensor::randn(0f32, 1., (b, n, t, d), &dev()).unwrap();
    let (cos, sin) = rope_tables(10000.0, d, 0, t, DType::F32, &dev()).unwrap();
    let ours = apply_rope(&x, &cos, &sin).unwrap();
    let fused = candle_nn::rotary_emb::rope(
        &x,
        &cos.narrow(1, 0, d / 2).unwrap().contiguous().unwrap(),
        &sin.narrow(1, 0, d / 2).unwrap().contiguous().unwrap(),
    )
    .unwrap();
    assert!(max_abs_diff(&ours, &fused) < 1e-6);
    // Position 0 is the identity.
    assert!(max_abs_diff(&ours.i((.., .., 0..1)).unwrap(), &x.i((.., .., 0..1)).unwrap()) < 1e-7);
    let q = Tensor::randn(0f32, 1., (1, 1, 1, d), &dev()).unwrap();
    let k = Tensor::randn(0f32, 1., (1, 1, 1, d), &dev()).unwrap();
    let score = |p: usize, s: usize| -> f32 {
        let (cp, sp) = rope_tables(10000.0, d, p, 1, DType::F32, &dev()).unwrap();
        let (cs, ss) = rope_tables(10000.0, d, s, 1, DType::F32, &dev()).unwrap();
        let qr = apply_rope(&q, &cp, &sp).unwrap();
        let kr = apply_rope(&k, &cs, &ss).unwrap();
        (qr * kr).unwrap().sum_all().unwrap().to_scalar().unwrap()
    };
    assert!((score(5, 2) - score(13, 10)).abs() < 1e-5);
    assert!((score(5, 2) - score(5, 3)).abs() > 1e-4);
}

/// With LoRA on all seven projections, one backward of an SFT loss reaches every adapter.
/// B starts at 0, which makes dL/dA = scale * (dL/dy)^T-weighted products with B exactly 0 at
/// step 0 (A only influences the output through B). So: step 0 checks B gradients non-zero and
/// A gradients present; after setting every B to non-zero values, all A gradients are non-zero.
/// The base weights are not Vars and get no gradient.
#[test]
fn every_lora_parameter_receives_a_gradient() {
    let cfg = Config::tiny();
    let (model, _) = tiny_model(&cfg, 1);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    let lora = LoraConfig { r: 4, alpha: 8.0, dropout: 0.1, ..LoraConfig::default() };
    let model = model.with_lora(vb, &lora, 7).unwrap();
    assert_eq!(model.lora_modules().len(), 7 * cfg.num_hidden_layers);
    assert_eq!(varmap.all_vars().len(), 2 * 7 * cfg.num_hidden_layers);
    let names: Vec<String> = {
        let mut n: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        n.sort();
        n
    };
    assert!(names.contains(&"model.layers.1.mlp.down_proj.lora_A.weight".to_string()), "{names:?}");
    assert!(names.contains(&"model.layers.0.self_attn.q_proj.lora_B.weight".to_string()), "{names:?}");

    let grad_sums = |seed: u64| -> Vec<(String, Option<f32>)> {
        let mut rng = DropoutRng::new(seed);
        let loss = sft_loss(&model, &[&SEQ_A, &SEQ_B], 12, &mut rng);
        let grads = loss.backward().unwrap();
        let layer0 = &model.model.layers[0];
        let TokenTable::Dense(embed) = &model.model.embed_tokens else { panic!("dense embeddings expected") };
        for base in [layer0.self_attn.q_proj.weight().unwrap(), layer0.mlp.down_proj.weight().unwrap(), embed] {
            assert!(!base.is_variable());
            assert!(grads.get(base).is_none());
        }
        let data = varmap.data().lock().unwrap();
        names
            .iter()
            .map(|n| {
                let g = grads.get(data[n].as_tensor());
                (n.clone(), g.map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()))
            })
            .collect()
    };
    for (name, g) in grad_sums(3) {
        let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
        if name.ends_with("lora_B.weight") {
            assert!(g > 0.0, "{name}: zero gradient");
        } else {
            assert_eq!(g, 0.0, "{name}: A's gradient must be exactly 0 while B = 0");
        }
    }
    {
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter().filter(|(n, _)| n.ends_with("lora_B.weight")) {
            let vals =
                seeded::normal_samples(&mut ChaCha8Rng::seed_from_u64(seeded::fnv1a(name)), var.elem_count(), 0.0, 0.1);
            var.set(&Tensor::from_vec(vals, var.shape(), &dev()).unwrap()).unwrap();
        }
    }
    for (name, g) in grad_sums(4) {
        let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(g > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn lora_starts_as_identity_and_merge_preserves_outputs() {
    let cfg = Config::tiny();
    let (base, _) = tiny_model(&cfg, 1);
    let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
    let want = base.forward(&ids, Some(&mask)).unwrap().last_hidden;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    let lora = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "up_proj".into()] };
    let mut model = base.clone().with_lora(vb.clone(), &lora, 1).unwrap();
    assert_eq!(model.lora_modules().len(), 2 * cfg.num_hidden_layers);
    assert_eq!(max_abs_diff(&model.forward(&ids, Some(&mask)).unwrap().last_hidden, &want), 0.0);
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let vals =
            seeded::normal_samples(&mut ChaCha8Rng::seed_from_u64(seeded::fnv1a(name)), var.elem_count(), 0.0, 0.2);
        var.set(&Tensor::from_vec(vals, var.shape(), &dev()).unwrap()).unwrap();
    }
    let adapted = model.forward(&ids, Some(&mask)).unwrap().last_hidden;
    assert!(max_abs_diff(&adapted, &want) > 1e-3);
    model.merge_lora().unwrap();
    assert!(model.lora_modules().is_empty());
    let merged = model.forward(&ids, Some(&mask)).unwrap().last_hidden;
    assert!(max_abs_diff(&adapted, &merged) < TOL);
    // Attaching twice, or an unknown module, is an error.
    let twice = base.clone().with_lora(vb.clone(), &lora, 1).unwrap().with_lora(vb.clone(), &lora, 1);
    assert!(matches!(twice, Err(Qwen2Error::InvalidConfig(m)) if m.contains("already has")));
    let unknown = LoraConfig { target_modules: vec!["qkv".into()], ..LoraConfig::default() };
    assert!(matches!(base.with_lora(vb, &unknown, 1), Err(Qwen2Error::Lora(_))));
}

#[test]
fn batch_equals_single() {
    let cfg = Config::tiny();
    let (model, _) = tiny_model(&cfg, 2);
    let t = 14;
    let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], t);
    let batch = model.forward_t(&ids, Some(&mask), None, true).unwrap();
    assert_eq!(batch.last_index, vec![SEQ_A.len() - 1, SEQ_B.len() - 1]);
    let batch_att = batch.last_token_attentions.unwrap();
    assert_eq!(batch_att.len(), cfg.num_hidden_layers);
    assert_eq!(batch_att[0].dims(), &[2, cfg.num_attention_heads, t]);
    for (row, seq) in [&SEQ_A[..], &SEQ_B[..]].iter().enumerate() {
        let one = model.forward_t(&one_row(seq), None, None, true).unwrap();
        let n = seq.len();
        assert_eq!(one.last_index, vec![n - 1]);
        let d = max_abs_diff(&batch.last_hidden.i(row..row + 1).unwrap(), &one.last_hidden);
        assert!(d < TOL, "row {row}: last hidden differs by {d}");
        let d = max_abs_diff(&batch.hidden.i((row..row + 1, 0..n)).unwrap(), &one.hidden);
        assert!(d < TOL, "row {row}: hidden differs by {d}");
        for (layer, (ba, oa)) in batch_att.iter().zip(one.last_token_attentions.unwrap()).enumerate() {
            let d = max_abs_diff(&ba.i((row..row + 1, .., 0..n)).unwrap(), &oa);
            assert!(d < TOL, "row {row} layer {layer}: attention differs by {d}");
            let leak: f32 = ba.i((row, .., n..)).unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert_eq!(leak, 0.0, "attention on padding");
            let sums: Vec<f32> = oa.sum(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        }
        // The row's last hidden state is the hidden state at its last real position.
        let d = max_abs_diff(&one.last_hidden, &one.hidden.i((.., n - 1)).unwrap());
        assert_eq!(d, 0.0);
    }
}

#[test]
fn causal_positions_ignore_later_tokens() {
    let (model, _) = tiny_model(&Config::tiny(), 3);
    let a = model.forward(&one_row(&SEQ_B), None).unwrap().hidden;
    for t in [0, 4, 9] {
        let mut changed = SEQ_B;
        for v in changed.iter_mut().skip(t + 1) {
            *v = (*v + 101) % 256;
        }
        let b = model.forward(&one_row(&changed), None).unwrap().hidden;
        let d = max_abs_diff(&a.i((.., 0..=t)).unwrap(), &b.i((.., 0..=t)).unwrap());
        assert!(d < 1e-6, "t = {t}: prefix changed by {d}");
        let d = max_abs_diff(&a.i((.., t + 1..)).unwrap(), &b.i((.., t + 1..)).unwrap());
        assert!(d > 1e-4, "t = {t}: later positions did not change");
    }
}

#[test]
fn kv_cache_and_greedy_generation_match_full_forward() {
    let (model, _) = tiny_model(&Config::tiny(), 4);
    let full = model.forward(&one_row(&SEQ_B), None).unwrap().hidden;
    let mut cache = KvCache::new();
    let first = model.forward_cached(&one_row(&SEQ_B[..6]), &mut cache).unwrap();
    let mut parts = vec![first];
    for &tok in &SEQ_B[6..] {
        parts.push(model.forward_cached(&one_row(&[tok]), &mut cache).unwrap());
    }
    assert_eq!(cache.len(), SEQ_B.len());
    let inc = Tensor::cat(&parts, 1).unwrap();
    assert!(max_abs_diff(&full, &inc) < TOL);
    // Greedy decoding with the cache equals argmax over full recomputation at every step.
    let got = model.greedy_generate(&SEQ_A, 6, &[]).unwrap();
    let mut seq = SEQ_A.to_vec();
    for _ in 0..6 {
        let out = model.forward(&one_row(&seq), None).unwrap();
        let logits = model.logits_at(&out.hidden, &[(0, seq.len() - 1)]).unwrap();
        seq.push(logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    assert_eq!(got, seq[SEQ_A.len()..]);
    // Stop tokens end generation and are not returned.
    let stopped = model.greedy_generate(&SEQ_A, 6, &[got[2]]).unwrap();
    assert_eq!(stopped, got[..got.iter().position(|&x| x == got[2]).unwrap()]);
}

/// Segments packed in one row on a shared cache give each segment's hidden states as if it ran
/// alone on its own copy of the cache; the cache is left as it was; bad layouts are refused.
#[test]
fn packed_segments_equal_separate_continuations_of_the_cache() {
    let (model, _) = tiny_model(&Config::tiny(), 4);
    let mut cache = KvCache::new();
    model.forward_cached(&one_row(&SEQ_B[..5]), &mut cache).unwrap();
    let segs: [&[u32]; 3] = [&SEQ_A[..3], &SEQ_B[7..8], &SEQ_B[5..9]];
    let ids: Vec<u32> = segs.concat();
    let seg_of: Vec<usize> = segs.iter().enumerate().flat_map(|(r, s)| std::iter::repeat_n(r, s.len())).collect();
    let packed = model.forward_packed(&one_row(&ids), &seg_of, &cache).unwrap();
    assert_eq!(cache.len(), 5);
    let mut start = 0;
    for s in segs {
        let alone = model.forward_cached(&one_row(s), &mut cache.clone()).unwrap();
        let got = packed.i((.., start..start + s.len())).unwrap();
        assert!(max_abs_diff(&alone, &got) < TOL, "segment at {start}");
        start += s.len();
    }
    // On an empty cache, segments are independent sequences from position 0.
    let fresh = model.forward_packed(&one_row(&ids), &seg_of, &KvCache::new()).unwrap();
    let alone = model.forward(&one_row(segs[2]), None).unwrap().hidden;
    assert!(max_abs_diff(&alone, &fresh.i((.., 4..8)).unwrap()) < TOL);
    for (bad, why) in [(vec![0, 1, 0, 2, 2, 2, 2, 2], "not contiguous"), (vec![0; 3], "segment ids")] {
        let e = model.forward_packed(&one_row(&ids), &bad, &cache).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn logits_at_selects_rows_of_the_full_logits() {
    for tie in [false, true] {
        let cfg = Config { tie_word_embeddings: tie, ..Config::tiny() };
        let (model, tensors) = tiny_model(&cfg, 5);
        assert_eq!(tensors.contains_key("lm_head.weight"), !tie);
        let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
        let out = model.forward(&ids, Some(&mask)).unwrap();
        let all = model.lm_logits(&out.hidden).unwrap();
        assert_eq!(all.dims(), &[2, 11, 256]);
        let sel = model.logits_at(&out.hidden, &[(1, 10), (0, 2)]).unwrap();
        assert_eq!(max_abs_diff(&sel.i(0).unwrap(), &all.i((1, 10)).unwrap()), 0.0);
        assert_eq!(max_abs_diff(&sel.i(1).unwrap(), &all.i((0, 2)).unwrap()), 0.0);
        assert!(matches!(model.logits_at(&out.hidden, &[(2, 0)]), Err(Qwen2Error::InvalidInput(_))));
    }
}

/// A bf16 model (norms and softmax in f32 inside) stays close to the f32 one: bf16 keeps 8
/// mantissa bits, so hidden states agree to a few 1e-2 at this size.
#[test]
fn bf16_model_is_close_to_f32() {
    let cfg = Config::tiny();
    let tensors = init_random(&cfg, 9, &dev()).unwrap();
    let f32m = Qwen2ForCausalLM::from_tensors(tensors.clone(), &cfg, DType::F32, &dev()).unwrap();
    let bf16m = Qwen2ForCausalLM::from_tensors(tensors, &cfg, DType::BF16, &dev()).unwrap();
    assert_eq!(bf16m.dtype(), DType::BF16);
    let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
    let a = f32m.forward_t(&ids, Some(&mask), None, true).unwrap();
    let b = bf16m.forward_t(&ids, Some(&mask), None, true).unwrap();
    assert_eq!(b.last_hidden.dtype(), DType::BF16);
    let d = max_abs_diff(&a.last_hidden, &b.last_hidden.to_dtype(DType::F32).unwrap());
    assert!(d < 0.1, "bf16 last hidden differs by {d}");
    let att = &b.last_token_attentions.unwrap()[1];
    assert_eq!(att.dtype(), DType::F32);
    assert!(max_abs_diff(&a.last_token_attentions.unwrap()[1], att) < 0.02);
}

#[test]
fn rejects_bad_inputs() {
    let (model, _) = tiny_model(&Config::tiny(), 1);
    let (ids4, _) = padded(&[&SEQ_A[..4]], 4);
    let left = Tensor::new(&[[0u32, 1, 1, 1]], &dev()).unwrap();
    assert!(
        matches!(model.forward(&ids4, Some(&left)), Err(Qwen2Error::InvalidInput(m)) if m.contains("right-padded") || m.contains("position 0"))
    );
    let holes = Tensor::new(&[[1u32, 0, 1, 0]], &dev()).unwrap();
    assert!(matches!(model.forward(&ids4, Some(&holes)), Err(Qwen2Error::InvalidInput(_))));
    let short = Tensor::new(&[[1u32, 1, 1]], &dev()).unwrap();
    assert!(matches!(model.forward(&ids4, Some(&short)), Err(Qwen2Error::InvalidInput(_))));
    let long = Tensor::zeros((1, 129), DType::U32, &dev()).unwrap();
    assert!(matches!(model.forward(&long, None), Err(Qwen2Error::SequenceTooLong { len: 129, max: 128 })));
    let oov = Tensor::new(&[[1u32, 256]], &dev()).unwrap();
    assert!(matches!(model.forward(&oov, None), Err(Qwen2Error::InvalidInput(m)) if m.contains("256")));
    let i64_ids = Tensor::new(&[[1i64, 2]], &dev()).unwrap();
    assert!(matches!(model.forward(&i64_ids, None), Err(Qwen2Error::InvalidInput(_))));
}

fn incompatibility<T>(r: Result<T, Qwen2Error>) -> Incompatibility {
    match r {
        Err(Qwen2Error::Incompatible(i)) => i,
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded a bad checkpoint"),
    }
}

#[test]
fn bad_checkpoints_are_errors_that_name_the_tensors() {
    let cfg = Config::tiny();
    let good = init_random(&cfg, 1, &dev()).unwrap();
    let load = |t: &HashMap<String, Tensor>, cfg: &Config| {
        Qwen2ForCausalLM::from_tensors(t.clone(), cfg, DType::F32, &dev()).map(|_| ())
    };
    let mut missing = good.clone();
    missing.remove("model.layers.1.self_attn.k_proj.bias");
    let i = incompatibility(load(&missing, &cfg));
    assert_eq!(i.missing, vec!["model.layers.1.self_attn.k_proj.bias"]);
    assert!(Qwen2Error::Incompatible(i).to_string().contains("model.layers.1.self_attn.k_proj.bias"));

    let mut extra = good.clone();
    extra.insert("model.layers.1.self_attn.o_proj.bias".into(), Tensor::zeros(64, DType::F32, &dev()).unwrap());
    let i = incompatibility(load(&extra, &cfg));
    assert_eq!(i.unexpected, vec!["model.layers.1.self_attn.o_proj.bias"]);
    assert!(i.missing.is_empty());

    // Tied config: lm_head.weight is unexpected; untied config without it: missing.
    let tied = Config { tie_word_embeddings: true, ..cfg.clone() };
    assert_eq!(incompatibility(load(&good, &tied)).unexpected, vec!["lm_head.weight"]);
    let mut no_head = good.clone();
    no_head.remove("lm_head.weight");
    assert_eq!(incompatibility(load(&no_head, &cfg)).missing, vec!["lm_head.weight"]);
    load(&no_head, &tied).unwrap();

    let mut shape = good.clone();
    shape.insert("model.norm.weight".into(), Tensor::ones(65, DType::F32, &dev()).unwrap());
    let i = incompatibility(load(&shape, &cfg));
    assert_eq!(
        i.shape_mismatch,
        vec![ShapeMismatch { name: "model.norm.weight".into(), expected: vec![64], found: vec![65] }]
    );
    let mut ints = good.clone();
    ints.insert("model.norm.weight".into(), Tensor::ones(64, DType::U32, &dev()).unwrap());
    assert_eq!(incompatibility(load(&ints, &cfg)).bad_dtype, vec![("model.norm.weight".to_string(), DType::U32)]);

    // A bf16 checkpoint loads and runs in f32 (converted).
    let bf16: HashMap<String, Tensor> =
        good.iter().map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap())).collect();
    let m = Qwen2ForCausalLM::from_tensors(bf16, &cfg, DType::F32, &dev()).unwrap();
    assert_eq!(m.dtype(), DType::F32);
    m.forward(&one_row(&SEQ_A), None).unwrap();
}

#[test]
fn sharded_safetensors_load_like_a_single_file() {
    let cfg = Config::tiny();
    let tensors = init_random(&cfg, 6, &dev()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.safetensors");
    candle_core::safetensors::save(&tensors, &single).unwrap();

    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    let write_shards = |drop_from_shard: Option<&str>, drop_from_index: Option<&str>| {
        let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
        let mut map = serde_json::Map::new();
        for (name, t) in &tensors {
            let k = usize::from(name.starts_with("model.layers.1") || name == "lm_head.weight");
            let file = format!("model-0000{}-of-00002.safetensors", k + 1);
            if Some(name.as_str()) != drop_from_index {
                map.insert(name.clone(), file.clone().into());
            }
            if Some(name.as_str()) != drop_from_shard {
                shards[k].insert(name.clone(), t.clone());
            }
        }
        for (k, shard) in shards.iter().enumerate() {
            let path = sharded.join(format!("model-0000{}-of-00002.safetensors", k + 1));
            candle_core::safetensors::save(shard, path).unwrap();
        }
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    };
    write_shards(None, None);
    let found = safetensors_files(&sharded).unwrap();
    assert_eq!(found.files.len(), 2);
    assert_eq!(found.weight_map.unwrap().len(), tensors.len());
    let a = read_safetensors(&single, &dev()).unwrap();
    let b = read_safetensors(&sharded, &dev()).unwrap();
    let c = read_safetensors(&sharded.join("model.safetensors.index.json"), &dev()).unwrap();
    assert_eq!(a.len(), tensors.len());
    for (name, t) in &a {
        assert_eq!(max_abs_diff(t, &b[name]), 0.0, "{name}");
        assert_eq!(max_abs_diff(t, &c[name]), 0.0, "{name}");
    }
    let ma = Qwen2ForCausalLM::from_tensors(a, &cfg, DType::F32, &dev()).unwrap();
    let mb = Qwen2ForCausalLM::from_tensors(b, &cfg, DType::F32, &dev()).unwrap();
    let x = one_row(&SEQ_B);
    assert_eq!(max_abs_diff(&ma.forward(&x, None).unwrap().hidden, &mb.forward(&x, None).unwrap().hidden), 0.0);

    // Listed in the index but absent from its shard: an error naming the tensor and shard.
    let gone = "model.layers.1.mlp.up_proj.weight";
    write_shards(Some(gone), None);
    match read_safetensors(&sharded, &dev()) {
        Err(e @ CheckpointError::ShardMissingTensor { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(gone) && msg.contains("model-00002-of-00002.safetensors"), "{msg}");
        }
        other => panic!("expected ShardMissingTensor, got {:?}", other.map(|m| m.len())),
    }
    // Absent from index and shards: the model reports it missing.
    write_shards(Some(gone), Some(gone));
    let partial = read_safetensors(&sharded, &dev()).unwrap();
    let i = incompatibility(Qwen2ForCausalLM::from_tensors(partial, &cfg, DType::F32, &dev()));
    assert_eq!(i.missing, vec![gone]);
    // A broken index is a typed error.
    std::fs::write(sharded.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
    assert!(matches!(read_safetensors(&sharded, &dev()), Err(CheckpointError::ShardIndex { .. })));
}

#[test]
fn gguf_names_map_both_ways() {
    let cfg = Config::tiny();
    for name in cfg.expected_shapes().keys() {
        let g = hf_to_gguf_name(name).unwrap_or_else(|| panic!("{name} has no GGUF name"));
        assert_eq!(gguf_to_hf_name(&g).as_deref(), Some(name.as_str()));
    }
    assert_eq!(gguf_to_hf_name("blk.3.attn_q.bias").unwrap(), "model.layers.3.self_attn.q_proj.bias");
    assert_eq!(gguf_to_hf_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(gguf_to_hf_name("output.weight").unwrap(), "lm_head.weight");
    for bad in ["rope_freqs.weight", "blk.x.attn_q.weight", "blk.0.attn_q.scale", "blk.0.attn_qkv.weight"] {
        assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
    }
}

/// Writes a GGUF v2 file (F32 tensors under GGUF names, qwen2 metadata) for `tensors`.
fn write_gguf(path: &Path, cfg: &Config, tensors: &HashMap<String, Tensor>, extra: &[(&str, gguf_file::Value)]) {
    write_gguf_typed(path, cfg, tensors, extra, |_| GgmlDType::F32);
}

/// [`write_gguf`] with each tensor stored as `dtype(hf_name)`.
fn write_gguf_typed(
    path: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    extra: &[(&str, gguf_file::Value)],
    dtype: impl Fn(&str) -> GgmlDType,
) {
    use gguf_file::Value as V;
    let u = |x: usize| V::U32(x as u32);
    let mut md: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("qwen2".into())),
        ("qwen2.block_count", u(cfg.num_hidden_layers)),
        ("qwen2.context_length", u(cfg.max_position_embeddings)),
        ("qwen2.embedding_length", u(cfg.hidden_size)),
        ("qwen2.feed_forward_length", u(cfg.intermediate_size)),
        ("qwen2.attention.head_count", u(cfg.num_attention_heads)),
        ("qwen2.attention.head_count_kv", u(cfg.num_key_value_heads)),
        ("qwen2.rope.freq_base", V::F32(cfg.rope_theta as f32)),
        ("qwen2.attention.layer_norm_rms_epsilon", V::F32(cfg.rms_norm_eps as f32)),
    ];
    md.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let q: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| (hf_to_gguf_name(n).unwrap(), QTensor::quantize(&tensors[*n], dtype(n)).unwrap()))
        .collect();
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
}

#[test]
fn gguf_gives_the_same_logits_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for tie in [false, true] {
        let cfg = Config { tie_word_embeddings: tie, rope_theta: 1_000_000.0, ..Config::tiny() };
        let tensors = init_random(&cfg, 8, &dev()).unwrap();
        let st = dir.path().join(format!("m{tie}.safetensors"));
        candle_core::safetensors::save(&tensors, &st).unwrap();
        let gg = dir.path().join(format!("m{tie}.gguf"));
        let extra = [("tokenizer.ggml.eos_token_id", gguf_file::Value::U32(7))];
        write_gguf(&gg, &cfg, &tensors, &extra);

        let from_st =
            Qwen2ForCausalLM::from_tensors(read_safetensors(&st, &dev()).unwrap(), &cfg, DType::F32, &dev()).unwrap();
        let loaded = load_gguf(&gg, DType::F32, &dev()).unwrap();
        assert!(loaded.tokenizer.is_none());
        // rms_norm_eps goes through f32 in GGUF; everything else round-trips exactly.
        let want_cfg = Config {
            rms_norm_eps: f64::from(cfg.rms_norm_eps as f32),
            eos_token_id: Some(TokenIds::One(7)),
            ..cfg.clone()
        };
        assert_eq!(loaded.config, want_cfg);
        let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
        let a = from_st.forward(&ids, Some(&mask)).unwrap();
        let b = loaded.model.forward(&ids, Some(&mask)).unwrap();
        let la = from_st.lm_logits(&a.hidden).unwrap();
        let lb = loaded.model.lm_logits(&b.hidden).unwrap();
        let d = max_abs_diff(&la, &lb);
        assert!(d < TOL, "tie = {tie}: logits differ by {d}");
    }
    // Wrong architecture and missing metadata are typed errors that name the key.
    let cfg = Config::tiny();
    let tensors = init_random(&cfg, 8, &dev()).unwrap();
    let gg = dir.path().join("llama.gguf");
    write_gguf(&gg, &cfg, &tensors, &[("general.architecture", gguf_file::Value::String("llama".into()))]);
    // The later duplicate key wins on read.
    assert!(matches!(load_gguf(&gg, DType::F32, &dev()), Err(Qwen2Error::Gguf(m)) if m.contains("llama")));
    let mut f = std::fs::File::open(dir.path().join("mfalse.gguf")).unwrap();
    let mut content = gguf_file::Content::read(&mut f).unwrap();
    content.metadata.remove("qwen2.attention.head_count_kv");
    assert!(matches!(gguf_config(&content), Err(Qwen2Error::Gguf(m)) if m.contains("head_count_kv")));
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The model on a GGUF's quantized weights computes what the same file dequantized to f32
/// computes: a tiny random model stored with q8_0 projections and token tables, q5_0 gate
/// projections and f32 norms and biases, run on a padded batch of two prompts, with both
/// packings (the tiles layout re-quantizes q5_0 to q8_0 and pads `in` to 256). The
/// last-token states agree to cosine >= 0.999 (activations are quantized to 8 bits per row
/// inside the kernels), the logits within 0.05, and each layer's last-token attention within
/// 0.02 with the same most-attended key per head.
#[test]
fn quantized_gguf_matches_its_dequantized_weights() {
    use crate::models::qlinear::Packing;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { tie_word_embeddings: false, ..Config::tiny() };
    let tensors = init_random(&cfg, 21, &dev()).unwrap();
    let gg = dir.path().join("q.gguf");
    write_gguf_typed(&gg, &cfg, &tensors, &[], |n| {
        if n.ends_with("norm.weight") || n.ends_with(".bias") {
            GgmlDType::F32
        } else if n.contains("gate_proj") {
            GgmlDType::Q5_0
        } else {
            GgmlDType::Q8_0
        }
    });
    let dense = load_gguf(&gg, DType::F32, &dev()).unwrap().model;
    let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
    let want = dense.forward_t(&ids, Some(&mask), None, true).unwrap();
    for packing in [Packing::Native, Packing::Tiles] {
        let mut f = std::fs::File::open(&gg).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let q = quantized_model(&content, &mut f, &cfg, packing, &dev()).unwrap();
        let got = q.forward_t(&ids, Some(&mask), None, true).unwrap();
        assert_eq!(got.last_index, want.last_index);
        for row in 0..2 {
            let a = want.last_hidden.get(row).unwrap().to_vec1::<f32>().unwrap();
            let b = got.last_hidden.get(row).unwrap().to_vec1::<f32>().unwrap();
            let c = cosine(&a, &b);
            assert!(c >= 0.999, "{packing:?} row {row}: cosine {c}");
        }
        let d = max_abs_diff(&dense.lm_logits(&want.last_hidden).unwrap(), &q.lm_logits(&got.last_hidden).unwrap());
        assert!(d < 0.05, "{packing:?}: logits differ by {d}");
        let (wa, ga) = (want.last_token_attentions.as_ref().unwrap(), got.last_token_attentions.as_ref().unwrap());
        for (w, g) in wa.iter().zip(ga) {
            assert!(max_abs_diff(w, g) < 0.02, "{packing:?}: attention differs by {}", max_abs_diff(w, g));
            assert_eq!(w.argmax(2).unwrap().to_vec2::<u32>().unwrap(), g.argmax(2).unwrap().to_vec2::<u32>().unwrap());
        }
    }
    // A quantized layer takes no adapter merge: the error says to load the base in f32.
    let mut f = std::fs::File::open(&gg).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut q = quantized_model(&content, &mut f, &cfg, Packing::Native, &dev()).unwrap();
    let vm = VarMap::new();
    let lora = crate::models::lora::LoraConfig { target_modules: vec!["q_proj".into()], ..Default::default() };
    q = q.with_lora(VarBuilder::from_varmap(&vm, DType::F32, &dev()), &lora, 1).unwrap();
    let e = q.merge_lora().unwrap_err().to_string();
    assert!(e.contains("quantized") && e.contains("f32"), "{e}");
}

/// A GGUF whose tensors do not fit the config is refused before anything is built, with every
/// problem named (HF names), as the f32 loader does.
#[test]
fn quantized_gguf_with_a_wrong_shape_is_refused() {
    use crate::models::qlinear::Packing;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::tiny();
    let mut tensors = init_random(&cfg, 3, &dev()).unwrap();
    tensors.insert("model.norm.weight".into(), Tensor::ones(32, DType::F32, &dev()).unwrap());
    let gg = dir.path().join("bad.gguf");
    write_gguf(&gg, &cfg, &tensors, &[]);
    let mut f = std::fs::File::open(&gg).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let e = quantized_model(&content, &mut f, &cfg, Packing::Tiles, &dev()).unwrap_err();
    assert!(matches!(&e, Qwen2Error::Incompatible(i) if i.shape_mismatch.len() == 1), "{e}");
    assert!(e.to_string().contains("model.norm.weight"), "{e}");
}

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onward.
fn byte_chars() -> Vec<char> {
    let mut direct: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut table = vec!['\0'; 256];
    for &b in &direct {
        table[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !direct.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
            direct.push(b);
        }
    }
    table
}

#[test]
fn gguf_tokenizer_is_byte_level_bpe_with_special_tokens() {
    use gguf_file::Value as V;
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![TOKEN_NORMAL as i32; tokens.len()];
    for (tok, ty) in [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4), ("[PAD300]", 5)]
    {
        tokens.push(tok.into());
        types.push(ty);
    }
    let strs = |v: &[String]| V::Array(v.iter().map(|s| V::String(s.clone())).collect());
    let md = [
        ("tokenizer.ggml.model", V::String("gpt2".into())),
        ("tokenizer.ggml.pre", V::String("qwen2".into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", V::Array(types.iter().map(|&t| V::I32(t)).collect())),
        ("tokenizer.ggml.merges", strs(&merges.map(String::from))),
    ];
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md_refs, &[]).unwrap();
    buf.set_position(0);
    let content = gguf_file::Content::read(&mut buf).unwrap();
    let tok = gguf_tokenizer(&content).unwrap();

    let id = |s: &str| tok.token_to_id(s).unwrap();
    let text = "<|im_start|>hello world<|im_end|>\n";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(enc.get_tokens(), &["<|im_start|>", "hello", "Ġworld", "<|im_end|>", "Ċ"]);
    assert_eq!(enc.get_ids(), &[id("<|im_start|>"), 256 + 3, 256 + 8, id("<|im_end|>"), u32::from(b'\n')]);
    // Offsets are byte offsets into the original text.
    assert_eq!(enc.get_offsets()[2], (17, 23));
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello world\n");
    // Non-ASCII text goes through bytes; the unused placeholder is not a token.
    let enc = tok.encode("héllo <tool_call>", false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "héllo <tool_call>");
    assert_eq!(tok.token_to_id("[PAD300]"), None);
    assert_eq!(id("<|im_end|>"), 256 + 9 + 2);

    let mut bad = content;
    bad.metadata.insert("tokenizer.ggml.pre".into(), V::String("llama-bpe".into()));
    assert!(matches!(gguf_tokenizer(&bad), Err(Qwen2Error::Tokenizer(m)) if m.contains("llama-bpe")));
}
