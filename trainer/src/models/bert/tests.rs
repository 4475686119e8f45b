use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::models::checkpoint::read_safetensors;
use candle_core::IndexOp;

const TOL: f32 = 1e-5;

fn dev() -> Device {
    Device::Cpu
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// [1, T] inputs for one sequence: ids, mask of ones, token types (second half = 1).
fn single(ids: &[u32]) -> (Tensor, Tensor, Tensor) {
    let t = ids.len();
    let tt: Vec<u32> = (0..t).map(|i| u32::from(i >= t / 2)).collect();
    (
        Tensor::from_slice(ids, (1, t), &dev()).unwrap(),
        Tensor::ones((1, t), DType::U32, &dev()).unwrap(),
        Tensor::from_vec(tt, (1, t), &dev()).unwrap(),
    )
}

/// Right-pads sequences to `t` (pad id 0, mask 0, token type 0): [B, t] each.
fn padded(seqs: &[&[u32]], t: usize) -> (Tensor, Tensor, Tensor) {
    let (mut ids, mut mask, mut tt) = (vec![], vec![], vec![]);
    for s in seqs {
        let n = s.len();
        for i in 0..t {
            ids.push(if i < n { s[i] } else { 0 });
            mask.push(u32::from(i < n));
            tt.push(u32::from(i < n && i >= n / 2));
        }
    }
    let b = seqs.len();
    (
        Tensor::from_vec(ids, (b, t), &dev()).unwrap(),
        Tensor::from_vec(mask, (b, t), &dev()).unwrap(),
        Tensor::from_vec(tt, (b, t), &dev()).unwrap(),
    )
}

const SEQ_A: [u32; 5] = [101, 7, 42, 99, 102];
const SEQ_B: [u32; 9] = [101, 3, 17, 64, 5, 77, 120, 8, 102];

fn tiny_model(use_pooler: bool) -> (BertForMultiLabel, VarMap) {
    let head = HeadConfig { use_pooler, ..HeadConfig::default() };
    BertForMultiLabel::init(&Config::tiny(), &head, &dev(), 1).unwrap()
}

#[test]
fn softmax_layernorm_gelu_match_formulas() {
    // softmax([1, 2, 3]) = e^i / (e + e^2 + e^3).
    let x = Tensor::new(&[[1f32, 2., 3.]], &dev()).unwrap();
    let got: Vec<f32> = softmax_last_dim(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
    let z: f32 = (1..=3).map(|i| (i as f32).exp()).sum();
    for (i, g) in got.iter().enumerate() {
        assert!((g - ((i + 1) as f32).exp() / z).abs() < 1e-6);
    }
    // Fully masked row stays finite (uniform).
    let m = Tensor::new(&[[MASK_NEG, MASK_NEG]], &dev()).unwrap();
    let got: Vec<f32> = softmax_last_dim(&m).unwrap().i(0).unwrap().to_vec1().unwrap();
    assert_eq!(got, vec![0.5, 0.5]);
    // LayerNorm([1, 2, 3, 6]) with weight 2, bias 1: mean 3, var (4+1+0+9)/4 = 3.5.
    let ln = LayerNorm {
        weight: Tensor::full(2f32, 4, &dev()).unwrap(),
        bias: Tensor::ones(4, DType::F32, &dev()).unwrap(),
        eps: 1e-12,
    };
    let x = Tensor::new(&[[1f32, 2., 3., 6.]], &dev()).unwrap();
    let got: Vec<f32> = ln.forward(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
    for (g, xi) in got.iter().zip([1f32, 2., 3., 6.]) {
        assert!((g - ((xi - 3.) / 3.5f32.sqrt() * 2. + 1.)).abs() < 1e-5);
    }
    // GELU(x) = x * Phi(x): Phi(1) = 0.8413447, Phi(-1) = 0.1586553, Phi(2) = 0.9772499.
    let x = Tensor::new(&[1f32, -1., 2.], &dev()).unwrap();
    let got: Vec<f32> = x.gelu_erf().unwrap().to_vec1().unwrap();
    for (g, want) in got.iter().zip([0.841_344_7f32, -0.158_655_3, 1.954_499_8]) {
        assert!((g - want).abs() < 1e-6, "{g} vs {want}");
    }
}

#[test]
fn config_json_roundtrip_and_rejects_unknown_activation() {
    let json = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 384,
        "initializer_range": 0.02, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
        "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#;
    assert_eq!(Config::from_json(json).unwrap(), Config::minilm_l6());
    // Omitted fields take HF defaults.
    assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    let err = Config::from_json(r#"{"hidden_act": "relu"}"#).unwrap_err();
    assert!(err.to_string().contains("relu"), "{err}");
    let err = Config::from_json(r#"{"hidden_size": 30, "num_attention_heads": 4}"#);
    assert!(matches!(err, Err(BertError::InvalidConfig(_))));
    let back: Config = serde_json::from_str(&serde_json::to_string(&Config::tiny()).unwrap()).unwrap();
    assert_eq!(back, Config::tiny());
}

#[test]
fn init_is_seeded_and_follows_hf_convention() {
    let (_, a) = tiny_model(true);
    let (_, b) = tiny_model(true);
    let (_, c) =
        BertForMultiLabel::init(&Config::tiny(), &HeadConfig { use_pooler: true, ..HeadConfig::default() }, &dev(), 2)
            .unwrap();
    let get = |vm: &VarMap, n: &str| vm.data().lock().unwrap()[n].as_tensor().clone();
    let w = "encoder.layer.0.attention.self.query.weight";
    assert_eq!(max_abs_diff(&get(&a, w), &get(&b, w)), 0.0);
    assert!(max_abs_diff(&get(&a, w), &get(&c, w)) > 0.0);
    let wv: Vec<f32> = get(&a, w).flatten_all().unwrap().to_vec1().unwrap();
    let std = (wv.iter().map(|v| v * v).sum::<f32>() / wv.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.004, "std {std}");
    let ones: Vec<f32> = get(&a, "embeddings.LayerNorm.weight").to_vec1().unwrap();
    assert!(ones.iter().all(|&v| v == 1.0));
    let zeros: Vec<f32> = get(&a, "classifier.bias").to_vec1().unwrap();
    assert!(zeros.iter().all(|&v| v == 0.0));
    // The VarMap holds exactly the HF parameter set: 5 embedding tensors, 16 per layer,
    // pooler 2, classifier 2.
    assert_eq!(a.all_vars().len(), 5 + 16 * 2 + 2 + 2);
    let (_, no_pooler) = tiny_model(false);
    assert!(!no_pooler.data().lock().unwrap().keys().any(|k| k.starts_with("pooler.")));
}

/// Every trainable tensor gets a gradient, and all but one a non-zero one. The exception,
/// `attention.self.key.bias`, is exactly zero in exact arithmetic: it adds q . b_k to every
/// score of a query row, and softmax is invariant to a per-row shift.
#[test]
fn every_parameter_receives_a_gradient() {
    let (model, varmap) = tiny_model(true);
    let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
    let mut rng = DropoutRng::new(3);
    let out = model.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), true).unwrap();
    let w = Tensor::randn(0f32, 1., out.logits.shape(), &dev()).unwrap();
    let loss = (out.logits * w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut no_grad = vec![];
    let mut zero_grad = vec![];
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        match grads.get(data[name].as_tensor()) {
            None => no_grad.push(name.clone()),
            Some(g) => {
                let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                if s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                    && !name.ends_with("attention.self.key.bias")
                {
                    zero_grad.push(name.clone());
                }
            }
        }
    }
    assert!(no_grad.is_empty(), "parameters without gradient: {no_grad:?}");
    assert!(zero_grad.is_empty(), "parameters with zero gradient: {zero_grad:?}");
}

#[test]
fn batch_equals_single() {
    let (model, _) = tiny_model(false);
    let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
    let batch = model.forward(&ids, &mask, Some(&tt)).unwrap();
    for (row, seq) in [&SEQ_A[..], &SEQ_B[..]].iter().enumerate() {
        let (ids1, mask1, tt1) = single(seq);
        let one = model.forward(&ids1, &mask1, Some(&tt1)).unwrap();
        let d = max_abs_diff(&batch.logits.i(row..row + 1).unwrap(), &one.logits);
        assert!(d < TOL, "row {row}: logits differ by {d}");
        let n = seq.len();
        let hb = batch.last_hidden_state.i((row..row + 1, 0..n)).unwrap();
        let d = max_abs_diff(&hb, &one.last_hidden_state);
        assert!(d < TOL, "row {row}: hidden differs by {d}");
    }
}

#[test]
fn padding_does_not_change_outputs() {
    let (model, _) = tiny_model(true);
    let (ids, mask, tt) = single(&SEQ_B);
    let plain = model.forward_t(&ids, &mask, Some(&tt), None, true).unwrap();
    let (ids, mask, tt) = padded(&[&SEQ_B], 20);
    let pad = model.forward_t(&ids, &mask, Some(&tt), None, true).unwrap();
    let d = max_abs_diff(&plain.logits, &pad.logits);
    assert!(d < TOL, "logits differ by {d}");
    let n = SEQ_B.len();
    let d = max_abs_diff(&plain.last_hidden_state, &pad.last_hidden_state.i((.., 0..n)).unwrap());
    assert!(d < TOL, "hidden differs by {d}");
    // Attention: real queries put exactly zero weight on padded keys.
    let (pa, pp) = (&plain.attentions.unwrap()[1], &pad.attentions.unwrap()[1]);
    assert_eq!(pp.dims(), &[1, 4, 20, 20]);
    let d = max_abs_diff(pa, &pp.i((.., .., 0..n, 0..n)).unwrap());
    assert!(d < TOL, "attention differs by {d}");
    let leak: f32 = pp.i((.., .., 0..n, n..)).unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert_eq!(leak, 0.0);
}

#[test]
fn dropout_is_seeded_and_eval_ignores_it() {
    let (model, varmap) = tiny_model(false);
    let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
    let run = |seed: u64| {
        let mut rng = DropoutRng::new(seed);
        model.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), false).unwrap().logits
    };
    assert_eq!(max_abs_diff(&run(5), &run(5)), 0.0);
    assert!(max_abs_diff(&run(5), &run(6)) > 1e-4);
    let eval = model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
    assert!(max_abs_diff(&eval, &run(5)) > 1e-4);
    // Eval equals a model with the same weights and all dropout probabilities 0, in eval
    // and in train mode.
    let cfg0 = Config { hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, ..Config::tiny() };
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    let no_drop = BertForMultiLabel::load(vb, &cfg0, &HeadConfig::default()).unwrap();
    let e0 = no_drop.forward(&ids, &mask, Some(&tt)).unwrap().logits;
    assert_eq!(max_abs_diff(&eval, &e0), 0.0);
    let mut rng = DropoutRng::new(5);
    let t0 = no_drop.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), false).unwrap().logits;
    assert_eq!(max_abs_diff(&eval, &t0), 0.0);
}

#[test]
fn rejects_bad_inputs() {
    let (model, _) = tiny_model(false);
    let ids = Tensor::zeros((1, 65), DType::U32, &dev()).unwrap();
    let mask = Tensor::ones((1, 65), DType::U32, &dev()).unwrap();
    assert!(matches!(model.forward(&ids, &mask, None), Err(BertError::SequenceTooLong { len: 65, max: 64 })));
    let ids = Tensor::zeros((1, 4), DType::U32, &dev()).unwrap();
    let mask = Tensor::ones((1, 5), DType::U32, &dev()).unwrap();
    assert!(matches!(model.forward(&ids, &mask, None), Err(BertError::InvalidInput(_))));
}

/// Writes `tensors` to a safetensors file and reads it back through the I/O driver.
fn roundtrip(dir: &Path, file: &str, tensors: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let path = dir.join(file);
    candle_core::safetensors::save(tensors, &path).unwrap();
    read_safetensors(&path, &dev()).unwrap()
}

fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap();
    data.iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect()
}

fn incompatibility(r: Result<LoadedBert, BertError>) -> Incompatibility {
    match r {
        Err(BertError::Incompatible(i)) => i,
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded a bad checkpoint"),
    }
}

#[test]
fn loads_checkpoints_with_and_without_prefix() {
    let cfg = Config::tiny();
    let head = HeadConfig { use_pooler: true, ..HeadConfig::default() };
    let (source, varmap) = BertForMultiLabel::init(&cfg, &head, &dev(), 11).unwrap();
    let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
    let want = source.forward(&ids, &mask, Some(&tt)).unwrap().logits;
    let dir = tempfile::tempdir().unwrap();

    let mut plain = varmap_tensors(&varmap);
    plain.insert("embeddings.position_ids".into(), Tensor::arange(0i64, 64, &dev()).unwrap().reshape((1, 64)).unwrap());
    let prefixed: HashMap<String, Tensor> = plain
        .iter()
        .map(|(k, v)| {
            let k = if k.starts_with("classifier.") { k.clone() } else { format!("bert.{k}") };
            (k, v.clone())
        })
        .collect();
    let plain = roundtrip(dir.path(), "plain.safetensors", &plain);
    let prefixed = roundtrip(dir.path(), "prefixed.safetensors", &prefixed);

    for (tensors, prefix) in [(&plain, CheckpointPrefix::None), (&prefixed, CheckpointPrefix::Bert)] {
        let loaded = BertForMultiLabel::from_checkpoint(tensors, &cfg, &head, &dev(), 99).unwrap();
        assert_eq!(loaded.report.layout.prefix, prefix);
        assert!(loaded.report.layout.has_pooler && loaded.report.layout.has_classifier);
        assert!(loaded.report.fresh_init.is_empty(), "{}", loaded.report);
        assert_eq!(loaded.report.loaded.len(), varmap.all_vars().len());
        let pos_ids = format!("{}embeddings.position_ids", prefix.as_str());
        assert_eq!(loaded.report.ignored, vec![(pos_ids, IgnoreReason::Buffer)]);
        let got = loaded.model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }

    // Base checkpoint (no classifier): the head is freshly initialized and reported.
    let mut base = plain.clone();
    base.retain(|k, _| !k.starts_with("classifier."));
    let loaded = BertForMultiLabel::from_checkpoint(&base, &cfg, &head, &dev(), 99).unwrap();
    assert_eq!(loaded.report.fresh_init, vec!["classifier.bias", "classifier.weight"]);
    assert!(!loaded.report.layout.has_classifier);

    // Head without pooler: the checkpoint's pooler is ignored and reported.
    let loaded = BertForMultiLabel::from_checkpoint(&plain, &cfg, &HeadConfig::default(), &dev(), 99).unwrap();
    let ignored: Vec<&str> = loaded.report.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ignored, vec!["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]);

    // Legacy gamma/beta names are renamed and reported.
    let mut legacy = prefixed.clone();
    let t = legacy.remove("bert.embeddings.LayerNorm.weight").unwrap();
    legacy.insert("bert.embeddings.LayerNorm.gamma".into(), t);
    let loaded = BertForMultiLabel::from_checkpoint(&legacy, &cfg, &head, &dev(), 99).unwrap();
    assert_eq!(
        loaded.report.renamed,
        vec![("bert.embeddings.LayerNorm.gamma".to_string(), "embeddings.LayerNorm.weight".to_string())]
    );
    let got = loaded.model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
    assert_eq!(max_abs_diff(&got, &want), 0.0);
}

#[test]
fn bad_checkpoints_are_errors_that_name_the_tensors() {
    let cfg = Config::tiny();
    let head = HeadConfig::default();
    let (_, varmap) = BertForMultiLabel::init(&cfg, &head, &dev(), 11).unwrap();
    let good = varmap_tensors(&varmap);
    let load = |t: &HashMap<String, Tensor>| BertForMultiLabel::from_checkpoint(t, &cfg, &head, &dev(), 1);

    let mut missing = good.clone();
    missing.remove("encoder.layer.1.output.dense.weight");
    let i = incompatibility(load(&missing));
    assert_eq!(i.missing, vec!["encoder.layer.1.output.dense.weight"]);
    assert!(i.unexpected.is_empty() && i.shape_mismatch.is_empty());
    let msg = BertError::Incompatible(i).to_string();
    assert!(msg.contains("encoder.layer.1.output.dense.weight"), "{msg}");

    let mut extra = good.clone();
    extra.insert("encoder.layer.9.output.dense.weight".into(), Tensor::zeros(3, DType::F32, &dev()).unwrap());
    extra.insert("bert.embeddings.extra".into(), Tensor::zeros(3, DType::F32, &dev()).unwrap());
    let i = incompatibility(load(&extra));
    assert_eq!(i.unexpected, vec!["bert.embeddings.extra", "encoder.layer.9.output.dense.weight"]);
    assert!(i.missing.is_empty());

    let mut shape = good.clone();
    shape.insert("embeddings.LayerNorm.weight".into(), Tensor::ones(33, DType::F32, &dev()).unwrap());
    let i = incompatibility(load(&shape));
    assert_eq!(
        i.shape_mismatch,
        vec![ShapeMismatch { name: "embeddings.LayerNorm.weight".into(), expected: vec![32], found: vec![33] }]
    );
    let msg = BertError::Incompatible(i).to_string();
    assert!(msg.contains("embeddings.LayerNorm.weight") && msg.contains("[32]") && msg.contains("[33]"), "{msg}");

    // A partial head is missing its other half, not freshly initialized.
    let mut partial = good.clone();
    partial.remove("classifier.bias");
    assert_eq!(incompatibility(load(&partial)).missing, vec!["classifier.bias"]);

    // In a `bert.`-prefixed checkpoint, an unprefixed encoder tensor is unexpected and the
    // prefixed one is missing.
    let mut mixed: HashMap<String, Tensor> = good
        .iter()
        .map(|(k, v)| (if k.starts_with("classifier.") { k.clone() } else { format!("bert.{k}") }, v.clone()))
        .collect();
    let t = mixed.remove("bert.encoder.layer.0.intermediate.dense.bias").unwrap();
    mixed.insert("encoder.layer.0.intermediate.dense.bias".into(), t);
    let i = incompatibility(load(&mixed));
    assert_eq!(i.missing, vec!["encoder.layer.0.intermediate.dense.bias"]);
    assert_eq!(i.unexpected, vec!["encoder.layer.0.intermediate.dense.bias"]);

    // Layout errors.
    let mut both = good.clone();
    both.insert("bert.embeddings.word_embeddings.weight".into(), good["embeddings.word_embeddings.weight"].clone());
    assert!(matches!(load(&both), Err(BertError::AmbiguousPrefix)));
    let mut none = good.clone();
    none.remove("embeddings.word_embeddings.weight");
    assert!(matches!(load(&none), Err(BertError::NotBert)));
}
