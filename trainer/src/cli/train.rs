//! Commands that train or package models: `ckd student train`, `ckd teacher train|label|merge`,
//! `ckd export`, `ckd pack`.

use std::path::PathBuf;

use anyhow::Result;
use ckd_core::visit::Split;
use ckd_trainer::progress;
use ckd_trainer::soft_labels;
use ckd_trainer::student::{self, TrainConfig};
use ckd_trainer::teacher::label as teacher_label;

use super::args::{ExportArgs, LabelArgs, MergeArgs, PackArgs, SoftFormat, StatesArgs, TeacherTrainArgs, TrainArgs};
use super::data::{load_samples, read_soft_labels};

pub fn student_train(a: &TrainArgs) -> Result<()> {
    let (train, train_hash, knowledge) = load_samples(&a.train, Split::Train)?;
    let (val, val_hash, _) = load_samples(&a.val, Split::Val)?;
    anyhow::ensure!(!train.is_empty(), "{}: no training samples", a.train.display());
    anyhow::ensure!(!val.is_empty(), "{}: no validation samples", a.val.display());
    let teacher = a.soft_labels.as_deref().map(|p| read_soft_labels(p, &train)).transpose()?;
    let uses_attn = a.attn_word > 0.0 || a.attn_concept > 0.0 || a.attn_field > 0.0;
    anyhow::ensure!(teacher.is_some() || !uses_attn, "attention distillation needs --soft-labels (an evidence file)");
    let distill = ckd_trainer::distill::DistillConfig {
        hard: a.hard_weight,
        soft: if teacher.is_some() { a.soft_weight } else { 0.0 },
        temperature: a.temperature,
        attn_word: a.attn_word,
        attn_concept: a.attn_concept,
        attn_field: a.attn_field,
        ..Default::default()
    };
    if a.init.is_some() && a.config.is_some() {
        anyhow::bail!("--init and --config exclude each other");
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        patience: a.patience,
        distill,
        label_fraction: a.label_fraction,
        max_steps: a.max_steps,
        head_lr_scale: a.head_lr_scale,
        ..Default::default()
    };
    let bar = progress::auto().bar("student");
    let job = student::job::StudentJob {
        train: &train,
        val: &val,
        teacher: teacher.as_ref(),
        init: a.init.as_deref(),
        preset: a.config.unwrap_or(student::Preset::Tiny),
        pooling: a.pooling,
        vocab_size: a.vocab_size,
        max_len: a.max_len,
        cfg,
        resume: a.resume,
        out: &a.out,
        knowledge: knowledge.as_ref(),
        provenance: serde_json::json!({
            "train": {"path": a.train, "source_hash": train_hash},
            "val": {"path": a.val, "source_hash": val_hash},
        }),
    };
    let outcome = student::job::train_student(&job, &bar)?;
    bar.finish_and_clear();
    if !outcome.finished {
        note!(
            "student: stopped at step {} (--max-steps) with a checkpoint in {}; rerun with --resume to finish",
            outcome.steps,
            a.out.display()
        );
        return Ok(());
    }
    note!(
        "student: {} steps, best val macro-F1 {:.4} (epoch {}), {:.1} samples/s, {} train texts truncated{} -> {}",
        outcome.steps,
        outcome.best_val_macro_f1.unwrap_or(f64::NAN),
        outcome.best_epoch.map_or(0, |e| e + 1),
        outcome.samples_per_sec,
        outcome.truncated_train,
        if outcome.stopped_early { ", stopped early" } else { "" },
        a.out.display()
    );
    Ok(())
}

pub fn teacher_train(a: &TeacherTrainArgs) -> Result<()> {
    use ckd_trainer::teacher::{demo::DemoConfig, head::HeadConfig, sft::SftConfig, train};
    let (train_s, _, _) = load_samples(&a.train, Split::Train)?;
    let (val_s, _, _) = load_samples(&a.val, Split::Val)?;
    let base = if a.base == "demo" {
        train::BaseChoice::Demo(DemoConfig::default())
    } else {
        train::BaseChoice::Pretrained(PathBuf::from(&a.base))
    };
    let cfg = train::TrainTeacherConfig {
        base,
        lora: ckd_trainer::models::lora::LoraConfig {
            r: a.lora_r,
            alpha: a.lora_alpha,
            dropout: a.lora_dropout,
            ..Default::default()
        },
        sft: SftConfig {
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            seed: a.seed,
            max_steps: a.max_steps,
            ..Default::default()
        },
        head: HeadConfig { epochs: a.head_epochs, seed: a.seed, ..Default::default() },
        max_len: a.max_len,
        device: a.device,
        feature_batch: a.batch_size,
        sft_val_limit: 64,
    };
    let (m, r) = train::train_teacher(&train_s, &val_s, &cfg, &a.out, &*progress::auto())?;
    note!(
        "teacher {}: {} fine-tuning steps ({} trainable parameters, {:.2} seq/s, {} prompts cut), head val macro-F1 {:.4}, macro-AUC {} -> {}",
        m.model_name,
        r.sft.steps,
        r.trainable_params,
        r.sft.samples_per_sec,
        r.sft.truncated,
        r.head.val_macro_f1,
        r.head.val_macro_auc.map_or("n/a".into(), |v| format!("{v:.4}")),
        a.out.display()
    );
    Ok(())
}

pub fn teacher_label(a: &LabelArgs) -> Result<()> {
    let t = ckd_trainer::teacher::load_teacher(&a.teacher, a.base.as_deref(), a.device)?;
    let (samples, _, _) = load_samples(&a.data, a.split.split())?;
    anyhow::ensure!(!samples.is_empty(), "{}: no samples to label", a.data.display());
    let cfg = teacher_label::LabelConfig {
        temperature: a.temperature,
        last_k_layers: a.last_k,
        batch_size: a.batch_size,
        shard: a.shard,
        save_every: 20,
    };
    let bar = progress::auto().bar("teacher labels");
    let o = match a.format {
        SoftFormat::Evidence => teacher_label::label(&t, &samples, &cfg, &a.out, &bar)?,
        SoftFormat::Authors => soft_labels::label_to_authors_file(&t, &samples, &cfg, &a.out, &bar)?,
    };
    bar.finish_and_clear();
    note!(
        "teacher label: {} samples in {}, {} kept from a previous run, {} labelled ({:.2} samples/s, {:.0} prompt tokens/s on {}), {} prompts cut -> {}",
        o.in_shard,
        a.shard.map_or("all".to_string(), |(i, n)| format!("shard {i}/{n}")),
        o.resumed,
        o.labelled,
        o.labelled as f64 / o.seconds.max(1e-9),
        o.tokens as f64 / o.seconds.max(1e-9),
        t.kernel,
        o.truncated,
        a.out.display()
    );
    Ok(())
}

pub fn teacher_states(a: &StatesArgs) -> Result<()> {
    use ckd_trainer::teacher::{load_frozen, states};
    let (model, prompts, key) = load_frozen(&a.frozen.base, a.frozen.device, a.frozen.max_len, a.frozen.base_weights)?;
    let cfg = states::StatesConfig { layers: a.layers.clone(), chunk: a.chunk };
    for split in [Split::Train, Split::Val, Split::Test] {
        let (mut samples, _, _) = load_samples(&a.data, split)?;
        if let Some(n) = a.limit {
            samples.truncate(n);
        }
        let name = split.name();
        anyhow::ensure!(!samples.is_empty(), "{}: no {name} samples", a.data.display());
        let bar = progress::auto().bar(&format!("states ({name})"));
        let (_, o) = states::extract(&model, &prompts, &samples, &cfg, &a.out.join(name), &key, &bar)?;
        bar.finish_and_clear();
        note!(
            "states ({name}): {} samples, {} chunks computed, {} reused, shared prefix {} tokens, {:.0} tokens/s, {} prompts cut -> {}",
            samples.len(),
            o.computed,
            o.reused,
            o.prefix,
            o.tokens as f64 / o.seconds.max(1e-9),
            o.truncated,
            a.out.join(name).display()
        );
    }
    Ok(())
}

pub fn teacher_merge(a: &MergeArgs) -> Result<()> {
    let files =
        a.shards.iter().map(|p| Ok((p.clone(), teacher_label::read_evidence(p)?))).collect::<Result<Vec<_>>>()?;
    let expected = a.expect.as_deref().map(|p| load_samples(p, a.split.split())).transpose()?.map(|e| e.0);
    let ids = expected.as_ref().map(|e| e.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
    let merged = teacher_label::merge(&files, ids.as_deref())?;
    match (a.format, &expected) {
        (SoftFormat::Evidence, _) => teacher_label::write_evidence(&a.out, &merged)?,
        (SoftFormat::Authors, Some(samples)) => {
            teacher_label::write_evidence(&soft_labels::evidence_beside(&a.out), &merged)?;
            soft_labels::write_authors_file(&a.out, &merged, samples)?;
        }
        (SoftFormat::Authors, None) => anyhow::bail!("--format hands needs --expect (the records' order)"),
    }
    note!("teacher merge: {} shards, {} samples -> {}", files.len(), merged.records.len(), a.out.display());
    Ok(())
}

pub fn export(a: &ExportArgs) -> Result<()> {
    let build = ckd_trainer::export::BuildOptions {
        int8_embeddings: a.int8_embeddings(),
        ..ckd_trainer::export::BuildOptions::new(a.precision)
    };
    let r = ckd_trainer::bundle::write_bundle_with(&a.model, &a.out, build)?;
    let total: u64 = r.bytes.iter().map(|(_, b)| b).sum();
    let words = if build.int8_embeddings { "int8" } else { "f32" };
    note!(
        "bundle {} ({}, word embeddings {words}, {}):",
        r.dir.display(),
        a.precision.as_str(),
        super::print::human_size(total)
    );
    for line in super::print::file_lines(&r.bytes) {
        note!("{line}");
    }
    note!(
        "probe vs candle: max |logit diff| {:.2e}, max |prob diff| {:.2e}",
        r.export.probe.max_abs_logit_diff,
        r.export.probe.max_abs_prob_diff
    );
    Ok(())
}

pub fn pack(a: &PackArgs) -> Result<()> {
    let r = ckd_trainer::bundle::pack_bundle_with(&a.bundle, &a.out, a.force)?;
    note!("packed {} ({}, {} bytes), holding:", r.path.display(), super::print::human_size(r.bytes), r.bytes);
    for line in super::print::file_lines(&r.files) {
        note!("{line}");
    }
    Ok(())
}
