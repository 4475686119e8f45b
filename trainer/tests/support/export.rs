//! Helpers of the ONNX export parity tests (`tests/export_parity.rs`) and of the export study
//! tool (`examples/export_study.rs`), which includes this file with `#[path]`: tiny and MiniLM
//! models, token rows and padding, a tiny student trained on a synthetic cohort, and the
//! environment variables both read.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use ckd_trainer::export::{model_tensors, Int8Form};
use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig, Pooling};
use ckd_trainer::models::checkpoint::read_safetensors;
use ckd_trainer::text::TextEncoder;

pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap();
    data.iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect()
}

/// Right-padded batch of token-id rows: (ids, mask, seq) with ids/mask [B, seq] row-major.
pub fn pad_rows(rows: &[Vec<i64>]) -> (Vec<i64>, Vec<i64>, usize) {
    let t = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (mut ids, mut mask) = (vec![], vec![]);
    for r in rows {
        for i in 0..t {
            ids.push(r.get(i).copied().unwrap_or(0));
            mask.push(i64::from(i < r.len()));
        }
    }
    (ids, mask, t)
}

/// Deterministic token rows of the given lengths, ids in 1..vocab, [CLS]-like id first.
pub fn rows(lens: &[usize], vocab: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    lens.iter()
        .map(|&n| {
            (0..n)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if i == 0 {
                        2
                    } else {
                        1 + (s % (vocab as u64 - 1)) as i64
                    }
                })
                .collect()
        })
        .collect()
}

pub fn tiny(use_pooler: bool, seed: u64) -> (Config, HeadConfig, BertForMultiLabel, HashMap<String, Tensor>) {
    tiny_pooled(use_pooler, Pooling::Cls, seed)
}

pub fn tiny_pooled(
    use_pooler: bool,
    pooling: Pooling,
    seed: u64,
) -> (Config, HeadConfig, BertForMultiLabel, HashMap<String, Tensor>) {
    let cfg = Config::tiny();
    let head = HeadConfig { use_pooler, pooling, ..HeadConfig::default() };
    let (model, varmap) = BertForMultiLabel::init(&cfg, &head, &Device::Cpu, seed).unwrap();
    (cfg, head, model, varmap_tensors(&varmap))
}

/// A tiny student trained on a synthetic cohort and saved like `ckd student train`, with the
/// cohort's test split.
pub struct TrainedStudent {
    _dir: tempfile::TempDir,
    /// The student directory (config.json, model.safetensors, tokenizer.json, thresholds.json).
    pub dir: PathBuf,
    /// The cohort's test-split samples.
    pub test: Vec<ckd_core::Sample>,
}

/// Trains the demo-size student (`Preset::Tiny`, WordPiece vocabulary trained on the training
/// texts, max length 128) for 3 epochs on 640 training samples of a synthetic cohort (hard
/// labels only). Deterministic for the fixed seeds.
pub fn train_tiny_student() -> TrainedStudent {
    use ckd_core::visit::Split;
    use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
    use ckd_trainer::student::{self, Preset, StudentConfig, TokenizedSamples, TrainConfig};
    use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort");
    let synth = SynthConfig { patients: 4000, seed: 21, readmission_scale: 3.0, ..Default::default() };
    write_cohort(&generate(&synth), &cohort).unwrap();
    let ing = ingest_mimic(&cohort, &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let of = |split: Split| ing.file.samples.iter().filter(move |s| s.split == split).cloned();
    let train: Vec<_> = of(Split::Train).take(640).collect();
    let val: Vec<_> = of(Split::Val).take(160).collect();
    let test: Vec<_> = of(Split::Test).collect();
    let texts: Vec<String> = train.iter().map(|s| s.text()).collect();
    let max_len = 128;
    let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 800, max_len).unwrap();
    let bert = Preset::Tiny.config(enc.vocab_size(), max_len);
    // The student as the pipeline trains it: mean pooling, fast head.
    let head = HeadConfig { pooling: Pooling::Mean, ..HeadConfig::default() };
    let (model, varmap) = BertForMultiLabel::init(&bert, &head, &Device::Cpu, 5).unwrap();
    let (tp, vp) = (TokenizedSamples::new(&train, &enc).unwrap(), TokenizedSamples::new(&val, &enc).unwrap());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let distill = ckd_trainer::distill::DistillConfig { hard: 1.0, soft: 0.0, ..Default::default() };
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 2e-3,
        patience: 0,
        seed: 5,
        distill,
        head_lr_scale: 100.0,
        ..Default::default()
    };
    let run = student::TrainLoop {
        model: &model,
        varmap: &varmap,
        encoder: &enc,
        train: &tp,
        val: &vp,
        teacher: None,
        cfg: &cfg,
        dir: &work,
        progress: &indicatif::ProgressBar::hidden(),
    };
    let out = student::train(&run, false).unwrap();
    let student_dir = dir.path().join("student");
    let sc = StudentConfig { bert, head, max_len };
    student::save_student(&student_dir, &sc, &varmap, &enc, &out.thresholds, None, &serde_json::json!({})).unwrap();
    eprintln!(
        "trained tiny student: {} train / {} val / {} test samples, best val macro-F1 {:?}",
        train.len(),
        val.len(),
        test.len(),
        out.best_val_macro_f1
    );
    TrainedStudent { _dir: dir, dir: student_dir, test }
}

/// Probabilities [N * L] of `p`'s samples through `f`, in batches of 16 in length order (as
/// `student::predict`), padded with `pad_id`.
pub fn probs_on(p: &ckd_trainer::student::TokenizedSamples, pad_id: u32, l: usize, f: &LogitsFn) -> Vec<f32> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by_key(|&i| p.enc[i].ids.len());
    let mut probs = vec![0f32; p.len() * l];
    for chunk in order.chunks(16) {
        let rws: Vec<Vec<i64>> = chunk.iter().map(|&i| p.enc[i].ids.iter().map(|&x| i64::from(x)).collect()).collect();
        let (mut ids, mask, t) = pad_rows(&rws);
        for (id, m) in ids.iter_mut().zip(&mask) {
            if *m == 0 {
                *id = i64::from(pad_id);
            }
        }
        let logits = f(&ids, &mask, chunk.len(), t);
        for (r, &i) in chunk.iter().enumerate() {
            for j in 0..l {
                probs[i * l + j] = 1.0 / (1.0 + (-logits[r * l + j]).exp());
            }
        }
    }
    probs
}

/// Whether the environment variable `var` is set to a non-empty value.
pub fn env_flag(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// The path in `var` when set and present.
pub fn required_path_quiet(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists())
}

/// The path in `var`, or `None` (NOT RUN) outside CI; inside CI a missing path fails the test.
pub fn required_path(var: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists());
    if found.is_none() {
        let msg = format!("{var} is unset or does not exist; run scripts/fetch_models.sh and export its output");
        if std::env::var_os("CI").is_some() {
            panic!("CI must run the export parity test: {msg}");
        }
        eprintln!("NOT RUN: {msg}");
    }
    found
}

/// Clinical-style inputs, short to long.
pub const SENTENCES: [&str; 4] = [
    "The patient-acquired disease is Heart failure, Acute kidney failure. The patient had used the following \
     medication: Furosemide, Potassium Chloride, Metoprolol. The surgical operation performed by the patient: \
     None. None.",
    "The patient-acquired disease is Diabetes mellitus, Essential hypertension. The patient had used the \
     following medication: Insulin, Metformin. The surgical operation performed by the patient: None. None.",
    "The patient-acquired disease is Septicemia, Pneumonia, organism unspecified, Acute kidney failure, Other \
     and unspecified disorders of metabolism. The patient had used the following medication: Vancomycin, \
     Piperacillin-Tazobactam, Norepinephrine, Sodium Chloride 0.9%  Flush, Heparin. The surgical operation \
     performed by the patient: Insert endotracheal tube, Cont inv mec ven <96 hrs, Arterial catheterization. \
     The medications that maybe have therapeutic effect on Septicemia (except in labor) are Vancomycin, \
     Piperacillin-Tazobactam, Norepinephrine, Cefepime, Metronidazole.",
    "The patient-acquired disease is Chronic kidney disease, Anemia in chronic kidney disease. The patient had \
     used the following medication: Sevelamer, Calcitriol, Epoetin Alfa. The surgical operation performed by \
     the patient: Hemodialysis. None.",
];

pub struct MiniLm {
    pub cfg: Config,
    pub head: HeadConfig,
    pub model: BertForMultiLabel,
    pub tensors: HashMap<String, Tensor>,
    pub rows: Vec<Vec<i64>>,
}

/// MiniLM with a fresh seeded head whose weights are multiplied by `head_scale`, and the
/// tokenized [`SENTENCES`].
pub fn minilm_with_head(head_scale: f64) -> Option<MiniLm> {
    let dir = required_path("CKD_MINILM_DIR")?;
    let dev = Device::Cpu;
    let cfg = Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let head = HeadConfig::default();
    let ckpt = model_tensors(read_safetensors(&dir.join("model.safetensors"), &dev).unwrap()).unwrap();
    let loaded = BertForMultiLabel::from_checkpoint(&ckpt, &cfg, &head, &dev, 2024).unwrap();
    let mut tensors = varmap_tensors(&loaded.varmap);
    let w = (tensors["classifier.weight"].clone() * head_scale).unwrap();
    tensors.insert("classifier.weight".into(), w);
    let model = BertForMultiLabel::from_checkpoint(&tensors, &cfg, &head, &dev, 0).unwrap().model;
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json"), 512).unwrap();
    let rows =
        SENTENCES.iter().map(|s| enc.encode(s).unwrap().ids.into_iter().map(i64::from).collect::<Vec<_>>()).collect();
    Some(MiniLm { cfg, head, model, tensors, rows })
}

/// A fresh head (std 0.02) gives logits of std about 0.12 on MiniLM: every probability near
/// 0.5. Scaled by [`TRAINED_LIKE_HEAD_SCALE`], the logits have std about 1.2, like the trained
/// demo student's on its test split, and the probabilities spread over (0.03, 0.97).
pub const TRAINED_LIKE_HEAD_SCALE: f64 = 10.0;

/// MiniLM with a trained-like head scale (see [`TRAINED_LIKE_HEAD_SCALE`]).
pub fn minilm() -> Option<MiniLm> {
    minilm_with_head(TRAINED_LIKE_HEAD_SCALE)
}

/// Every int8 graph form of the export.
pub const ALL_FORMS: [Int8Form; 3] =
    [Int8Form::DynamicMatMulInteger, Int8Form::ExpandedPerTensor, Int8Form::ExpandedPerRow];

/// (ids, mask, batch, seq) -> logits [batch * L].
pub type LogitsFn<'a> = dyn Fn(&[i64], &[i64], usize, usize) -> Vec<f32> + 'a;
