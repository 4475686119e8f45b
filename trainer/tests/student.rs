//! Student training end to end on a small synthetic cohort: learning happens, resuming is
//! exact, a saved student loads back to the same predictions.

use ckd_core::visit::{Sample, Split};
use ckd_trainer::distill::DistillConfig;
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::models::bert::{BertForMultiLabel, HeadConfig};
use ckd_trainer::student::{self, Preset, SoftTargets, StudentConfig, TokenizedSamples, TrainConfig};
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
use ckd_trainer::text::TextEncoder;
use indicatif::ProgressBar;

fn cohort() -> (Vec<Sample>, Vec<Sample>, SoftTargets) {
    let d = tempfile::tempdir().unwrap();
    let c = generate(&SynthConfig { patients: 1500, seed: 3, ..Default::default() });
    write_cohort(&c, d.path()).unwrap();
    let ing = ingest_mimic(d.path(), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let oracle = std::fs::read_to_string(d.path().join("oracle.jsonl")).unwrap();
    let teacher = SoftTargets::from_jsonl(&oracle, &d.path().join("oracle.jsonl")).unwrap();
    let s = ing.file.samples;
    let train: Vec<Sample> = s.iter().filter(|x| x.split == Split::Train).take(96).cloned().collect();
    let val: Vec<Sample> = s.iter().filter(|x| x.split != Split::Train).take(32).cloned().collect();
    (train, val, teacher)
}

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 8,
        lr: 2e-3,
        patience: 0,
        checkpoint_every: 5,
        log_every: 2,
        distill: DistillConfig { hard: 0.9, soft: 0.1, ..Default::default() },
        ..Default::default()
    }
}

struct Setup {
    enc: TextEncoder,
    train: TokenizedSamples,
    val: TokenizedSamples,
    teacher: SoftTargets,
    bert: ckd_trainer::models::bert::Config,
}

fn setup() -> Setup {
    let (train, val, teacher) = cohort();
    let texts: Vec<String> = train.iter().map(|s| s.text()).collect();
    let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 600, 96).unwrap();
    let tp = TokenizedSamples::new(&train, &enc).unwrap();
    let vp = TokenizedSamples::new(&val, &enc).unwrap();
    let bert = Preset::Tiny.config(enc.vocab_size(), 96);
    Setup { enc, train: tp, val: vp, teacher, bert }
}

fn run_in(s: &Setup, dir: &std::path::Path, cfg: &TrainConfig, resume: bool) -> (student::TrainOutcome, Vec<f32>) {
    let (out, probs) = try_run_in(s, dir, cfg, resume).unwrap();
    (out, probs)
}

fn try_run_in(
    s: &Setup,
    dir: &std::path::Path,
    cfg: &TrainConfig,
    resume: bool,
) -> Result<(student::TrainOutcome, Vec<f32>), student::StudentError> {
    let (model, varmap) =
        BertForMultiLabel::init(&s.bert, &HeadConfig::default(), &candle_core::Device::Cpu, 1).unwrap();
    let run = student::TrainLoop {
        model: &model,
        varmap: &varmap,
        encoder: &s.enc,
        train: &s.train,
        val: &s.val,
        teacher: Some(&s.teacher),
        cfg,
        dir,
        progress: &ProgressBar::hidden(),
    };
    let out = student::train(&run, resume)?;
    let probs = if out.finished { student::predict(&model, &s.val, s.enc.pad_id, 16).unwrap() } else { Vec::new() };
    Ok((out, probs))
}

/// A checkpoint file with one flipped bit, or truncated, is refused on resume with the file
/// named; a non-finite loss stops training with a clear error.
#[test]
fn corrupt_checkpoints_and_non_finite_losses_stop_training() {
    let s = setup();
    let part = tempfile::tempdir().unwrap();
    let (b, _) = run_in(&s, part.path(), &TrainConfig { max_steps: Some(3), ..cfg() }, false);
    assert!(!b.finished && b.steps == 3);
    let ck = part.path().join("checkpoint/step-3");
    for name in ["model.safetensors", "optim.safetensors", "state.json"] {
        let p = ck.join(name);
        let good = std::fs::read(&p).unwrap();
        let mut bad = good.clone();
        let i = bad.len() - 2; // a high byte of the last f32 (or the JSON's last brace)
        bad[i] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        let Err(e) = try_run_in(&s, part.path(), &cfg(), true) else { panic!("flipped bit accepted") };
        assert!(e.to_string().contains(name) && e.to_string().contains("sha256"), "{name}: {e}");
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        let Err(e) = try_run_in(&s, part.path(), &cfg(), true) else { panic!("truncated file accepted") };
        assert!(e.to_string().contains(name), "{name}: {e}");
        std::fs::write(&p, &good).unwrap();
    }
    // Restored, the checkpoint resumes.
    let (c, _) = try_run_in(&s, part.path(), &TrainConfig { max_steps: Some(4), ..cfg() }, true).unwrap();
    assert_eq!(c.steps, 4);

    let nan = tempfile::tempdir().unwrap();
    let Err(e) = try_run_in(&s, nan.path(), &TrainConfig { lr: 1e38, ..cfg() }, false) else {
        panic!("diverged run finished")
    };
    assert!(e.to_string().contains("not finite"), "{e}");
}

#[test]
fn trains_resumes_exactly_and_round_trips() {
    let s = setup();
    let full = tempfile::tempdir().unwrap();
    let (a, pa) = run_in(&s, full.path(), &cfg(), false);
    assert!(a.finished && a.steps == 24, "{a:?}");
    assert_eq!(a.thresholds.len(), 25);

    // The loss curve goes down: mean of the last points below the first point.
    let curve = std::fs::read_to_string(full.path().join("curves.jsonl")).unwrap();
    let losses: Vec<f64> = curve
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 10);
    let tail = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(tail < losses[0], "loss did not decrease: {losses:?}");

    // Interrupted after 7 steps (mid-epoch, between checkpoints), then resumed: identical result.
    let part = tempfile::tempdir().unwrap();
    let (b, _) = run_in(&s, part.path(), &TrainConfig { max_steps: Some(7), ..cfg() }, false);
    assert!(!b.finished && b.steps == 7);
    let (c, pc) = run_in(&s, part.path(), &cfg(), true);
    assert!(c.finished && c.steps == 24);
    assert_eq!(pa, pc, "resumed run differs from the uninterrupted one");
    assert_eq!(a.thresholds, c.thresholds);

    // Save and load back: same predictions.
    let (model, varmap) =
        BertForMultiLabel::init(&s.bert, &HeadConfig::default(), &candle_core::Device::Cpu, 1).unwrap();
    let best = candle_core::safetensors::load(full.path().join("best.safetensors"), &candle_core::Device::Cpu).unwrap();
    student::set_vars(&varmap, &best).unwrap();
    let sc = StudentConfig { bert: s.bert.clone(), head: HeadConfig::default(), max_len: 96 };
    let out = tempfile::tempdir().unwrap();
    student::save_student(out.path(), &sc, &varmap, &s.enc, &a.thresholds, None, &serde_json::json!({})).unwrap();
    let loaded = student::load_student(out.path()).unwrap();
    assert_eq!(loaded.thresholds, a.thresholds);
    let p1 = student::predict(&model, &s.val, s.enc.pad_id, 16).unwrap();
    let p2 = student::predict(&loaded.model, &s.val, loaded.encoder.pad_id, 16).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(p1, pa);
}

#[test]
fn soft_loss_without_teacher_is_an_error() {
    let s = setup();
    let (model, varmap) =
        BertForMultiLabel::init(&s.bert, &HeadConfig::default(), &candle_core::Device::Cpu, 1).unwrap();
    let d = tempfile::tempdir().unwrap();
    let cfg = cfg();
    let run = student::TrainLoop {
        model: &model,
        varmap: &varmap,
        encoder: &s.enc,
        train: &s.train,
        val: &s.val,
        teacher: None,
        cfg: &cfg,
        dir: d.path(),
        progress: &ProgressBar::hidden(),
    };
    let e = student::train(&run, false).unwrap_err();
    assert!(e.to_string().contains("teacher"), "{e}");
}

#[test]
fn label_fraction_is_stable_and_proportional() {
    let kept = (0..10_000).filter(|i| student::keeps_label(5, &format!("id{i}"), 0.1)).count();
    assert!((900..1100).contains(&kept), "{kept}");
    assert!(student::keeps_label(5, "x", 1.0));
    assert_eq!(student::keeps_label(5, "id7", 0.3), student::keeps_label(5, "id7", 0.3));
}

/// Attention distillation runs end to end through the loop: teacher evidence made with a
/// different tokenization (character-level spans of each word) is aligned to the student's
/// WordPiece tokens, and every attention term is reported.
#[test]
fn attention_distillation_runs_with_a_foreign_tokenization() {
    use ckd_core::evidence::{word_spans, EvidenceFile, SampleEvidence, TeacherIdentity};
    let s = setup();
    let records: Vec<SampleEvidence> = (0..s.train.len())
        .map(|i| {
            let text = &s.train.texts[i];
            // Units as the real teacher takes them: the rendered spans (a title containing
            // ", " is one concept), not the text parsed back.
            let r = s.train.spans[i].clone().unwrap();
            // The "teacher" tokenizes every word into 2-byte pieces and attends to drug names.
            let mut spans = Vec::new();
            let mut weights = Vec::new();
            for (a, b) in word_spans(text) {
                let mut x = a;
                while x < b {
                    let y = (x + 2).min(b);
                    spans.push((x, y));
                    let in_meds = x >= r.fields[1].0 && y <= r.fields[1].1;
                    weights.push(if in_meds { 5.0 } else { 1.0 });
                    x = y;
                }
            }
            SampleEvidence::from_tokens(s.train.ids[i].clone(), vec![0.2; 25], &r, &spans, &weights)
        })
        .collect();
    let file = EvidenceFile {
        teacher: TeacherIdentity {
            model: "test".into(),
            config_hash: "0".into(),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: 1,
        },
        shard: None,
        records,
        data: None,
    };
    file.validate().unwrap();
    let teacher = SoftTargets::from_evidence(EvidenceFile::from_bytes(&file.to_bytes().unwrap()).unwrap());
    let (model, varmap) =
        BertForMultiLabel::init(&s.bert, &HeadConfig::default(), &candle_core::Device::Cpu, 1).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        distill: DistillConfig {
            attn_word: 0.1,
            attn_concept: 0.1,
            attn_field: 0.1,
            last_k_layers: 1,
            ..cfg().distill
        },
        ..cfg()
    };
    let d = tempfile::tempdir().unwrap();
    let run = student::TrainLoop {
        model: &model,
        varmap: &varmap,
        encoder: &s.enc,
        train: &s.train,
        val: &s.val,
        teacher: Some(&teacher),
        cfg: &cfg,
        dir: d.path(),
        progress: &ProgressBar::hidden(),
    };
    let out = student::train(&run, false).unwrap();
    assert!(out.finished);
    let curve = std::fs::read_to_string(d.path().join("curves.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(curve.lines().next().unwrap()).unwrap();
    for k in 0..3 {
        let v = first["attn"][k].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "attention term {k}: {v}");
    }
}

/// At a label fraction, the labels of the unlabelled patients reach no part of the
/// student: replacing every one of them leaves the trained weights' predictions bit-identical,
/// while changing one labelled row's label changes them. (One setup for all three runs: the
/// same vocabulary and tokenization.)
#[test]
fn unlabelled_patients_labels_never_reach_the_student() {
    let mut s = setup();
    let fraction = 0.3;
    let c = TrainConfig { label_fraction: fraction, seed: 4, ..cfg() };
    let keeps = |i: usize, p: &TokenizedSamples| student::keeps_label(c.seed, &p.subjects[i].to_string(), fraction);
    let d = tempfile::tempdir().unwrap();
    let (_, base) = run_in(&s, &d.path().join("a"), &c, false);
    let original = s.train.labels.clone();

    let mut replaced = 0;
    for i in 0..s.train.labels.len() {
        if !keeps(i, &s.train) {
            s.train.labels[i] = ckd_core::LabelSet::from_labels(vec![(i % 25) as u8, 24]);
            replaced += 1;
        }
    }
    assert!(replaced > 30, "{replaced} unlabelled rows");
    let (_, same) = run_in(&s, &d.path().join("b"), &c, false);
    assert_eq!(base, same, "an unlabelled patient's label changed the student");

    s.train.labels = original;
    let i = (0..s.train.labels.len()).find(|&i| keeps(i, &s.train)).unwrap();
    s.train.labels[i] = ckd_core::LabelSet::from_labels(vec![0, 1, 2, 3, 4, 5, 6, 7]);
    let (_, changed) = run_in(&s, &d.path().join("c"), &c, false);
    assert_ne!(base, changed, "a labelled row's label must be used");
}
