//! Unit tests of the teacher's pure parts (prompts, sharding, merging, evidence weights, head).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ckd_core::evidence::{EvidenceFile, SampleEvidence, TeacherIdentity};

use super::label::{merge, parse_shard, shard_of, MergeError};
use super::*;

#[test]
fn device_spec_parses() {
    assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
    assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
    assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
    assert!("gpu".parse::<DeviceSpec>().is_err());
    assert!("cuda:x".parse::<DeviceSpec>().is_err());
    if !cfg!(feature = "cuda") {
        let e = DeviceSpec::Cuda(0).open().err().unwrap().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}

#[test]
fn shards_partition_ids_stably() {
    assert_eq!(parse_shard("1/4"), Ok((1, 4)));
    for bad in ["4/4", "1/0", "a/2", "1", "-1/2"] {
        assert!(parse_shard(bad).is_err(), "{bad}");
    }
    let ids: Vec<String> = (0..400).map(|i| format!("s{i}")).collect();
    let mut counts = [0usize; 4];
    for id in &ids {
        let k = shard_of(id, 4);
        assert_eq!(k, shard_of(id, 4));
        counts[k as usize] += 1;
    }
    // Every shard gets a fair share (binomial(400, 1/4): 100 +- 3 sd ~ 26).
    assert!(counts.iter().all(|&c| (70..=130).contains(&c)), "{counts:?}");
    assert_eq!(shard_of("anything", 1), 0);
}

fn identity(model: &str) -> TeacherIdentity {
    TeacherIdentity {
        model: model.into(),
        config_hash: "c".repeat(64),
        adapter_hash: Some("a".repeat(64)),
        temperature: 1.0,
        last_k_layers: 4,
    }
}

fn record(id: &str) -> SampleEvidence {
    SampleEvidence {
        id: id.into(),
        probs: vec![0.5; NUM_LABELS],
        words: vec![0.25; 4],
        concepts: vec![1.0],
        fields: [0.25; 4],
    }
}

fn shard_files(ids: &[String], n: u32, model: &str) -> Vec<(PathBuf, EvidenceFile)> {
    (0..n)
        .map(|i| {
            let records = ids.iter().filter(|id| shard_of(id, n) == i).map(|id| record(id)).collect();
            (
                PathBuf::from(format!("shard-{i}.bin")),
                EvidenceFile { teacher: identity(model), shard: Some((i, n)), records, data: None },
            )
        })
        .collect()
}

use ckd_core::NUM_LABELS;

#[test]
fn merge_accepts_complete_shards_in_expected_order() {
    let ids: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    let files = shard_files(&ids, 3, "m");
    let merged = merge(&files, Some(&ids)).unwrap();
    assert_eq!(merged.shard, None);
    assert_eq!(merged.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    merged.validate().unwrap();
}

#[test]
fn merge_reports_every_problem() {
    let ids: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    // Missing shard.
    let mut files = shard_files(&ids, 3, "m");
    files.remove(1);
    let MergeError { problems } = merge(&files, Some(&ids)).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("missing shard(s) 1 of 3")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("expected sample(s) have no record")), "{problems:?}");
    // Duplicate shard and duplicate ids.
    let mut files = shard_files(&ids, 3, "m");
    files.push(files[0].clone());
    let MergeError { problems } = merge(&files, None).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("shard 0 given twice")), "{problems:?}");
    // One line for all repeated samples (the count and the first five), not one per sample.
    let repeated: Vec<&String> = problems.iter().filter(|p| p.contains("appear more than once")).collect();
    let n0 = files[0].1.records.len();
    assert_eq!(repeated.len(), 1, "{problems:?}");
    assert!(repeated[0].starts_with(&format!("{n0} sample(s) appear more than once: ")), "{problems:?}");
    assert_eq!(repeated[0].matches(" and ").count(), 5, "{problems:?}");
    assert!(repeated[0].ends_with(", ..."), "{problems:?}");
    assert_eq!(problems.len(), 2, "{problems:?}");
    // Another teacher.
    let mut files = shard_files(&ids, 2, "m");
    files[1].1.teacher = identity("other");
    let MergeError { problems } = merge(&files, None).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("differs from")), "{problems:?}");
    // A record in the wrong shard, and an unexpected id.
    let mut files = shard_files(&ids, 2, "m");
    let stray = (0..).map(|i| format!("x{i}")).find(|id| shard_of(id, 2) == 1).unwrap();
    files[0].1.records.push(record(&stray));
    let MergeError { problems } = merge(&files, Some(&ids)).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p
                .contains(&format!("1 record(s) are in the wrong shard: {stray} in shard-0.bin belongs to shard 1/2"))),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("not among the expected samples")), "{problems:?}");
    // Different shard counts.
    let mut files = shard_files(&ids, 2, "m");
    files.extend(shard_files(&ids, 3, "m").into_iter().skip(2));
    let MergeError { problems } = merge(&files, None).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("shard count 3")), "{problems:?}");
    assert!(merge(&[], None).is_err());
}

#[test]
fn last_token_weights_average_heads_then_last_layers() {
    let dev = Device::Cpu;
    // 3 layers, B 1, N 2 heads, T 2.
    let l0 = Tensor::new(&[[[1f32, 0.], [1., 0.]]], &dev).unwrap();
    let l1 = Tensor::new(&[[[0.5f32, 0.5], [0.1, 0.9]]], &dev).unwrap();
    let l2 = Tensor::new(&[[[0.0f32, 1.0], [0.2, 0.8]]], &dev).unwrap();
    let w = label::last_token_weights(&[l0, l1, l2], 2).unwrap();
    // heads: l1 -> [0.3, 0.7], l2 -> [0.1, 0.9]; layers: [0.2, 0.8].
    assert!((w[0][0] - 0.2).abs() < 1e-6 && (w[0][1] - 0.8).abs() < 1e-6, "{w:?}");
    assert!(label::last_token_weights(&[], 1).is_err());
}

#[test]
fn head_learns_a_separable_problem_and_folds_standardization() {
    // Label l is on iff feature (l mod 4) > 0, features with large offsets and scales.
    let h = 4;
    let make = |n: usize, seed: u64| {
        let mut s = seed;
        let mut f = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let mut row = Vec::new();
            for j in 0..h {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
                row.push(u * 10.0 * (j + 1) as f32 + 100.0);
            }
            let mut ls = ckd_core::LabelSet::EMPTY;
            for l in 0..NUM_LABELS {
                if row[l % h] > 100.0 {
                    ls.insert(l as ckd_core::Label);
                }
            }
            f.extend(row);
            labels.push(ls);
        }
        (f, labels)
    };
    let (ft, lt) = make(400, 1);
    let (fv, lv) = make(100, 2);
    let cfg = head::HeadConfig { epochs: 40, ..Default::default() };
    let (hd, out) = head::train_head(&ft, &lt, &fv, &lv, h, &cfg).unwrap();
    assert!(out.val_macro_auc.unwrap() > 0.97, "{:?}", out.val_macro_auc);
    // The saved head applies to raw features: same probabilities as the report's.
    let p = head::probabilities(&hd, &fv, h, 1.0).unwrap();
    let rep = ckd_core::metrics::evaluate_label_sets(&p, &lv, &out.thresholds, 10).unwrap();
    assert!((rep.macro_f1 - out.val_macro_f1).abs() < 1e-9);
    // Temperature flattens.
    let p2 = head::probabilities(&hd, &fv, h, 4.0).unwrap();
    assert!(p.iter().zip(&p2).all(|(a, b)| (a - 0.5).abs() + 1e-6 >= (b - 0.5).abs()));
    assert!(head::train_head(&ft, &lt, &[], &[], h, &cfg).is_err());
    // An L2 penalty shrinks the weights (on standardized features, so compare scaled norms);
    // a zero penalty is the plain head, and stays out of the serialized settings (stage keys).
    let norm = |c: &head::HeadConfig| {
        let (hd, _) = head::train_head(&ft, &lt, &fv, &lv, h, c).unwrap();
        hd.weight.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
    };
    let strong = head::HeadConfig { l2: 10.0, ..cfg.clone() };
    assert!(norm(&strong) < 0.5 * norm(&cfg), "{} vs {}", norm(&strong), norm(&cfg));
    assert!(!serde_json::to_string(&cfg).unwrap().contains("l2"));
}

/// `teacher.json` as format v1 wrote it (no `instruction` field), with `extra` fields spliced in.
fn v1_manifest(version: u32, extra: &str) -> String {
    format!(
        r#"{{
  "format": "ckd-teacher",
  "version": {version},
  "label_space_hash": "{}",
  "model_name": "demo-qwen2-h32-l2",
  "base": {{"kind": "demo"}},
  "lora": null,
  "max_len": 384,{extra}
  "thresholds": [0.5],
  "files": [["head.safetensors", "00"]],
  "training": {{}}
}}"#,
        label_space_hex()
    )
}

#[test]
fn manifests_v1_and_v2_load_with_the_instruction_they_were_trained_with() {
    let p = Path::new("teacher.json");
    let v1 = TeacherManifest::parse(&v1_manifest(1, ""), p).unwrap();
    assert_eq!((v1.version, v1.instruction.as_deref()), (1, None));
    assert_eq!(v1.prompt_instruction(), ckd_core::jsonl::LEGACY_INSTRUCTION);
    let v2 = TeacherManifest::parse(
        &v1_manifest(2, &format!("\n  \"instruction\": {:?},", ckd_core::jsonl::INSTRUCTION)),
        p,
    )
    .unwrap();
    assert_eq!(v2.prompt_instruction(), ckd_core::jsonl::INSTRUCTION);
    // What this build writes reads back the same.
    assert_eq!(TeacherManifest::parse(&crate::io::pretty_json(&v2), p).unwrap(), v2);
    assert!(!crate::io::pretty_json(&v1).contains("instruction"));
    for (text, want) in [
        (v1_manifest(2, ""), "v2 manifest without `instruction`"),
        (v1_manifest(1, "\n  \"instruction\": \"x\","), "v1 manifest has no `instruction`"),
        (v1_manifest(3, ""), "reads ckd-teacher v1 to v2"),
        (v1_manifest(1, "").replace(&label_space_hex(), "0123456789abcdef"), "label space 0123456789abcdef"),
    ] {
        let e = TeacherManifest::parse(&text, p).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("teacher.json"), "{e}");
    }
}
