//! Teacher end to end on a tiny demo model: train (fine-tune + head), label with and without
//! shards (same records), resume, merge, explain, the authors' soft-label format both ways, an
//! old (v1) teacher directory still loads, and a tampered teacher directory is refused.

use std::path::Path;

use ckd_core::visit::{Sample, Split};
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::soft_labels;
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
use ckd_trainer::teacher::demo::DemoConfig;
use ckd_trainer::teacher::head::HeadConfig;
use ckd_trainer::teacher::label::{self, LabelConfig};
use ckd_trainer::teacher::sft::SftConfig;
use ckd_trainer::teacher::train::{train_teacher, BaseChoice, Hidden, TrainTeacherConfig};
use ckd_trainer::teacher::{explain, load_teacher, DeviceSpec};
use indicatif::ProgressBar;

fn cohort() -> (Vec<Sample>, Vec<Sample>) {
    let d = tempfile::tempdir().unwrap();
    let c = generate(&SynthConfig { patients: 800, seed: 5, ..Default::default() });
    write_cohort(&c, d.path()).unwrap();
    let ing = ingest_mimic(d.path(), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let s = ing.file.samples;
    let train: Vec<Sample> = s.iter().filter(|x| x.split == Split::Train).take(40).cloned().collect();
    let val: Vec<Sample> = s.iter().filter(|x| x.split != Split::Train).take(16).cloned().collect();
    (train, val)
}

fn cfg() -> TrainTeacherConfig {
    TrainTeacherConfig {
        base: BaseChoice::Demo(DemoConfig {
            vocab_size: 400,
            hidden_size: 32,
            intermediate_size: 64,
            layers: 2,
            heads: 4,
            seed: 1,
        }),
        lora: Default::default(),
        sft: SftConfig { epochs: 1, batch_size: 8, lr: 1e-3, max_steps: Some(3), log_every: 1, ..Default::default() },
        head: HeadConfig { epochs: 5, ..Default::default() },
        max_len: 1024,
        device: DeviceSpec::Cpu,
        feature_batch: 8,
        sft_val_limit: 8,
    }
}

fn read(p: &Path) -> ckd_core::evidence::EvidenceFile {
    label::read_evidence(p).unwrap()
}

#[test]
fn demo_teacher_trains_labels_shards_merges_and_explains() {
    let (train, val) = cohort();
    let d = tempfile::tempdir().unwrap();
    let teacher_dir = d.path().join("teacher");
    let (manifest, report) = train_teacher(&train, &val, &cfg(), &teacher_dir, &Hidden).unwrap();
    assert_eq!(report.sft.steps, 3);
    assert_eq!(report.features_cached, [false, false]);
    assert_eq!(manifest.thresholds.len(), 25);
    assert!(teacher_dir.join("curves.jsonl").is_file());
    // The features were cached under the key of this model and these samples: asking again with
    // the same key reads them back without computing (the closure would fail the test).
    let cached: Vec<_> = std::fs::read_dir(teacher_dir.join("features")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(cached.len(), 2, "{cached:?}");
    let train_file = cached.iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with("train-")).unwrap();
    let key = train_file.file_stem().unwrap().to_string_lossy().trim_start_matches("train-").to_string();
    let (f, hit) = ckd_trainer::teacher::head::cached_features(
        &teacher_dir.join("features"),
        "train",
        &key,
        || panic!("cached features were recomputed"),
        train.len(),
        32,
    )
    .unwrap();
    assert!(hit);
    assert_eq!(f.len(), train.len() * 32);
    // A different key (other samples or model) is not served from the cache.
    let (_, hit) = ckd_trainer::teacher::head::cached_features(
        &teacher_dir.join("features"),
        "train",
        "other",
        || Ok(vec![0.0; 32]),
        1,
        32,
    )
    .unwrap();
    assert!(!hit);

    let t = load_teacher(&teacher_dir, None, DeviceSpec::Cpu).unwrap();
    // Format v2: prompted (and fine-tuned) with the authors' instruction and its label list.
    assert_eq!(t.manifest.version, 2);
    assert_eq!(t.manifest.instruction.as_deref(), Some(ckd_core::jsonl::INSTRUCTION));
    assert_eq!(t.prompts.instruction(&train[0]), ckd_core::jsonl::INSTRUCTION);
    let lc = LabelConfig { batch_size: 4, save_every: 1, ..Default::default() };
    let all = d.path().join("all.bin");
    let o = label::label(&t, &train, &lc, &all, &ProgressBar::hidden()).unwrap();
    assert_eq!((o.in_shard, o.labelled, o.resumed), (train.len(), train.len(), 0));
    let full = read(&all);
    assert_eq!(full.records.len(), train.len());

    // The authors' soft-label format, both ways: `--format hands` writes one object per sample
    // in the samples' order, and reading it back pairs the same probabilities with the samples.
    let authors_file = d.path().join("hands_name_train.json");
    let o = soft_labels::label_to_authors_file(&t, &train, &lc, &authors_file, &ProgressBar::hidden()).unwrap();
    assert_eq!(o.labelled, train.len());
    assert!(soft_labels::evidence_beside(&authors_file).is_file());
    let back = soft_labels::read_authors_file(&authors_file, &train).unwrap();
    for s in &train {
        assert_eq!(back.probs[&s.id], full.by_id()[s.id.as_str()].probs, "{}", s.id);
    }
    assert_eq!(std::fs::read_to_string(&authors_file).unwrap(), soft_labels::authors_file_text(&full, &train).unwrap());
    let sharded = LabelConfig { shard: Some((0, 2)), ..lc.clone() };
    let e =
        soft_labels::label_to_authors_file(&t, &train, &sharded, &authors_file, &ProgressBar::hidden()).err().unwrap();
    assert!(e.to_string().contains("by position"), "{e}");

    // A teacher directory of format v1 (no `instruction`) still loads, and is prompted with
    // the instruction it was trained with.
    let mpath = teacher_dir.join("teacher.json");
    let v2_text = std::fs::read_to_string(&mpath).unwrap();
    let mut v1: serde_json::Value = serde_json::from_str(&v2_text).unwrap();
    v1["version"] = 1.into();
    v1.as_object_mut().unwrap().remove("instruction");
    std::fs::write(&mpath, serde_json::to_string_pretty(&v1).unwrap()).unwrap();
    let old = load_teacher(&teacher_dir, None, DeviceSpec::Cpu).unwrap();
    assert_eq!(old.prompts.instruction(&train[0]), ckd_core::jsonl::LEGACY_INSTRUCTION);
    assert_ne!(old.prompts.encode(&train[0]).unwrap().ids, t.prompts.encode(&train[0]).unwrap().ids);
    std::fs::write(&mpath, v2_text).unwrap();

    // Two shards, merged, give the same records.
    let mut parts = Vec::new();
    for i in 0..2 {
        let p = d.path().join(format!("shard-{i}.bin"));
        let c = LabelConfig { shard: Some((i, 2)), ..lc.clone() };
        label::label(&t, &train, &c, &p, &ProgressBar::hidden()).unwrap();
        parts.push((p.clone(), read(&p)));
    }
    let ids: Vec<String> = train.iter().map(|s| s.id.clone()).collect();
    let merged = label::merge(&parts, Some(&ids)).unwrap();
    let by = full.by_id();
    for r in &merged.records {
        let f = by[r.id.as_str()];
        for (a, b) in r.probs.iter().zip(&f.probs) {
            assert!((a - b).abs() < 1e-5, "{}: batch composition changed a probability: {a} vs {b}", r.id);
        }
        for (a, b) in r.concepts.iter().zip(&f.concepts) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    // Merging without one shard fails and names it.
    let e = label::merge(&parts[..1], Some(&ids)).unwrap_err().to_string();
    assert!(e.contains("missing shard(s) 1 of 2"), "{e}");

    // Re-running a finished shard labels nothing.
    let c = LabelConfig { shard: Some((0, 2)), ..lc.clone() };
    let o = label::label(&t, &train, &c, &parts[0].0, &ProgressBar::hidden()).unwrap();
    assert_eq!(o.labelled, 0);
    assert_eq!(o.resumed, o.in_shard);
    // An output written by another configuration is refused, not overwritten.
    let c = LabelConfig { temperature: 2.0, ..c };
    let e = label::label(&t, &train, &c, &parts[0].0, &ProgressBar::hidden()).err().unwrap().to_string();
    assert!(e.contains("another teacher"), "{e}");

    // An output made for other samples (another split, or the same ids with other contents) is
    // refused and left as it was, never resumed into.
    let before = std::fs::read(&all).unwrap();
    let e = label::label(&t, &val, &lc, &all, &ProgressBar::hidden()).err().unwrap().to_string();
    assert!(e.contains("other samples") && e.contains("all.bin"), "{e}");
    let mut edited = train.clone();
    edited[0].visit.medications.push("Drug-not-in-the-cohort".into());
    let e = label::label(&t, &edited, &lc, &all, &ProgressBar::hidden()).err().unwrap().to_string();
    assert!(e.contains("other samples"), "{e}");
    assert_eq!(std::fs::read(&all).unwrap(), before);
    // A version-1 file (no record of its samples) is checked by its ids: foreign records refuse.
    let mut v1 = read(&all);
    v1.data = None;
    let v1_path = d.path().join("v1.bin");
    std::fs::write(&v1_path, v1.to_bytes().unwrap()).unwrap();
    let e = label::label(&t, &val, &lc, &v1_path, &ProgressBar::hidden()).err().unwrap().to_string();
    assert!(e.contains(&format!("{} of its {} records are not among", train.len(), train.len())), "{e}");
    assert!(e.contains(&train[0].id), "{e}");
    // Shards of other samples do not merge.
    let mut other = parts.clone();
    other[1].1.data = Some(ckd_core::evidence::DataIdentity::of(&val));
    let e = label::merge(&other, Some(&ids)).unwrap_err().to_string();
    assert!(e.contains("shard-1.bin: made for"), "{e}");

    // Explanations list real concepts of the sample.
    let s = &train[0];
    let ex = explain::explain(s, by[s.id.as_str()], &t.manifest.thresholds, 3).unwrap();
    assert!(!ex.phenotypes.is_empty());
    assert!(ex.concepts.len() <= 3);
    for c in &ex.concepts {
        assert!(s.text().contains(&c.text), "{} not in the text", c.text);
    }
    for p in &ex.phenotypes {
        assert!(p.linked_concepts.iter().all(|t| ex.concepts.iter().any(|c| &c.text == t)));
    }
    assert!(explain::format(&ex).contains(&s.id));

    // A tampered head is refused with the file named.
    std::fs::write(teacher_dir.join("head.safetensors"), b"not a head").unwrap();
    let e = load_teacher(&teacher_dir, None, DeviceSpec::Cpu).err().unwrap().to_string();
    assert!(e.contains("head.safetensors") && e.contains("sha256"), "{e}");
}

#[test]
fn long_prompts_are_cut_inside_the_input_and_spans_point_into_it() {
    let (train, _) = cohort();
    let tok = ckd_trainer::teacher::demo::train_tokenizer(&train, 400).unwrap();
    let enc = ckd_trainer::teacher::PromptEncoder::new(tok.clone(), 4096).unwrap();
    let s = &train[0];
    let full = enc.encode(s).unwrap();
    assert!(!full.truncated);
    let text = s.text();
    // Every input token's span is inside the text, in order, and covers its characters.
    let spans: Vec<(usize, usize)> = full.input_spans.iter().flatten().copied().collect();
    assert!(!spans.is_empty());
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    assert!(spans.iter().all(|&(a, b)| a < b && b <= text.len()));
    // Cut to 30 tokens fewer: the template tail (ending the prompt) is kept.
    let short = ckd_trainer::teacher::PromptEncoder::new(tok, full.ids.len() - 30).unwrap();
    let cut = short.encode(s).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.ids.len(), full.ids.len() - 30);
    assert_eq!(cut.ids[cut.ids.len() - 5..], full.ids[full.ids.len() - 5..]);
    assert_eq!(cut.input_spans.iter().flatten().count(), spans.len() - 30);
    // The answer always fits whole in a fine-tuning sequence.
    let (ids, start, _) = short.encode_sft(s).unwrap();
    assert!(ids.len() <= full.ids.len() - 30);
    assert!(start < ids.len());
}

/// The demo teacher's byte-level BPE is the same in every training (hash-map orders vary between
/// maps and runs): same merges, same ids, so a seed gives the same teacher.
#[test]
fn demo_tokenizer_is_the_same_in_every_training() {
    let (train, _) = cohort();
    let json = || ckd_trainer::teacher::demo::train_tokenizer(&train, 400).unwrap().to_string(false).unwrap();
    let first = json();
    for _ in 0..4 {
        assert!(json() == first, "the demo tokenizer changed between two trainings");
    }
}
