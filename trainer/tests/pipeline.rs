//! `ckd pipeline` end to end on a tiny configuration: every stage runs, the report has every
//! model, a second run skips every stage, a changed student setting re-runs only what depends on
//! it; the Slurm example scripts label shards and merge them with the real `ckd` binary.

use std::path::Path;
use std::process::Command;

use ckd_trainer::pipeline::{IngestSpec, PipelineConfig, PipelineError, SynthSpec};
use ckd_trainer::teacher::train::Hidden;

fn tiny(out: &Path) -> PipelineConfig {
    let text = r#"
        out = "run"
        [data]
        synth = { patients = 700, seed = 3 }
        [teacher]
        max_len = 1024
        batch_size = 8
        sft_val_limit = 8
        [teacher.demo]
        vocab_size = 400
        hidden_size = 32
        intermediate_size = 64
        layers = 2
        heads = 4
        [teacher.sft]
        epochs = 1
        max_steps = 3
        lr = 1e-3
        [teacher.head]
        epochs = 5
        [student]
        epochs = 1
        batch_size = 16
        max_len = 128
        vocab_size = 500
    "#;
    PipelineConfig::from_toml(text, out).unwrap()
}

fn report_models(dir: &Path) -> Vec<String> {
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    j["models"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap().to_string()).collect()
}

/// The workspace's `ckd-edge` binary (`target/debug/ckd-edge`, built by `cargo test
/// --workspace --all-targets` before any test runs): the report's bundles and explanations go
/// through it. Missing: a failure under CI, else `None` (the report then runs tract inside the
/// trainer and has no explanation scores).
fn edge_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join(format!("ckd-edge{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return Some(bin);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing (build the workspace first)", bin.display());
    eprintln!("NOT RUN: the explanation scores ({} is missing)", bin.display());
    None
}

#[test]
fn pipeline_runs_resumes_and_reruns_only_what_changed() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = tiny(d.path());
    cfg.edge.bin = edge_binary();
    assert_eq!(cfg.out, d.path().join("run"));
    assert_eq!(cfg.data.synth, Some(SynthSpec { patients: 700, seed: 3 }));
    let o = ckd_trainer::pipeline::run(&cfg, &Hidden).unwrap();
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    let roles = report_models(&cfg.out);
    assert_eq!(
        roles,
        ["baseline", "baseline", "baseline", "teacher", "student", "student_distilled", "student_int8", "oracle"]
    );
    // Every model carries intervals by patient; the distilled student is compared with its twin.
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg.out.join("report.json")).unwrap()).unwrap();
    assert!(j["models"].as_array().unwrap().iter().all(|m| m["intervals"]["macro_auc"]["lo"].is_number()));
    assert!(j["comparisons"].as_array().unwrap().iter().any(|c| c["model"] == "student (distilled, f32)"));
    assert!(cfg.out.join("report.html").is_file());
    assert!(o.summary.contains("teacher"), "{}", o.summary);
    // Explanations of the int8 bundle through ckd-edge, scored against the generator's oracle,
    // and the student's attention against the teacher's evidence and occlusion.
    if cfg.edge.bin.is_some() {
        let x = &j["explanation_scores"];
        assert!(x["truth"]["top_is_driver"]["estimate"].is_number(), "{x}");
        assert!(x["truth"]["random_is_driver"]["estimate"].as_f64().unwrap() < 1.0);
        assert!(x["attention"]["teacher_agreement"]["estimate"].is_number(), "{x}");
        assert!(x["attention"]["deletion_share"]["estimate"].is_number(), "{x}");
        assert!(x["figure_svg"].as_str().unwrap().starts_with("<svg"));
        let html = std::fs::read_to_string(cfg.out.join("report.html")).unwrap();
        assert!(html.contains("How good the explanations are"));
    }

    // Nothing changed: every stage is skipped.
    let o2 = ckd_trainer::pipeline::run(&cfg, &Hidden).unwrap();
    let all = [
        "cohort",
        "samples",
        "teacher",
        "labels",
        "labels-oof",
        "student-hard",
        "student-kd",
        "bundle-f32",
        "bundle-int8",
    ];
    assert_eq!(o2.skipped, all);

    // A student setting changed: data, teacher and labels are kept.
    let mut c3 = cfg.clone();
    c3.student.seed = 7;
    let o3 = ckd_trainer::pipeline::run(&c3, &Hidden).unwrap();
    assert_eq!(o3.skipped, ["cohort", "samples", "teacher", "labels"]);

    // An interrupted teacher stage (no stage.json) re-runs; labelling re-runs because teacher.json
    // changed (it records timings), but training is deterministic, so the evidence has the same
    // content and the stages keyed on it are skipped.
    std::fs::remove_file(cfg.out.join("teacher/stage.json")).unwrap();
    let o4 = ckd_trainer::pipeline::run(&c3, &Hidden).unwrap();
    assert_eq!(
        o4.skipped,
        ["cohort", "samples", "labels-oof", "student-hard", "student-kd", "bundle-f32", "bundle-int8"]
    );

    // The Slurm example scripts, run as two array tasks by hand with the real binary.
    let ckd = env!("CARGO_BIN_EXE_ckd");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let labels = d.path().join("labels");
    let samples = cfg.out.join("samples/samples.bin");
    for i in 0..2 {
        let st = Command::new("bash")
            .arg(root.join("examples/slurm/label-shards.sbatch"))
            .env("TEACHER", cfg.out.join("teacher"))
            .env("DATA", &samples)
            .env("OUT", &labels)
            .env("DEVICE", "cpu")
            .env("CKD", ckd)
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .status()
            .unwrap();
        assert!(st.success());
    }
    let merge = |extra: &[(&str, &str)]| {
        let mut c = Command::new("bash");
        c.arg(root.join("examples/slurm/merge.sbatch")).env("OUT", &labels).env("DATA", &samples).env("CKD", ckd);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let m = merge(&[]);
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let merged = ckd_trainer::teacher::label::read_evidence(&labels.join("evidence.bin")).unwrap();
    let single = ckd_trainer::teacher::label::read_evidence(&cfg.out.join("labels/evidence-train.bin")).unwrap();
    assert_eq!(merged.records.len(), single.records.len());
    // Against the wrong split, merge fails and says why.
    let m = merge(&[("SPLIT", "test")]);
    assert!(!m.status.success());
    assert!(String::from_utf8_lossy(&m.stderr).contains("not among the expected samples"));
}

#[test]
fn pipeline_settings_are_checked() {
    let base = Path::new("/x");
    let e = PipelineConfig::from_toml("out = \"o\"\n[data]\n", base).unwrap_err();
    assert!(matches!(e, PipelineError::Config(ref m) if m.contains("exactly one")), "{e}");
    let e = PipelineConfig::from_toml("out = \"o\"\n[data]\nsynth = { patients = 5 }\n[student]\nepoch = 3\n", base)
        .unwrap_err();
    assert!(e.to_string().contains("epoch"), "{e}");
    let e =
        PipelineConfig::from_toml("out = \"o\"\n[data]\nsynth = { patients = 5 }\n[teacher]\ndevice = \"tpu\"\n", base)
            .unwrap_err();
    assert!(e.to_string().contains("tpu"), "{e}");
    let c = PipelineConfig::from_toml("out = \"o\"\n[data]\njsonl = \"d.jsonl\"\n", base).unwrap();
    assert_eq!(c.data.jsonl.as_deref(), Some(Path::new("/x/d.jsonl")));
    assert!(!c.ingest.to_config().refuse_duplicates);
    // `[ingest] refuse_duplicates` is `ckd ingest --refuse-duplicates`; off, it leaves the
    // samples stage's key as it was before the setting existed.
    let c = PipelineConfig::from_toml(
        "out = \"o\"\n[data]\njsonl = \"d.jsonl\"\n[ingest]\nrefuse_duplicates = true\n",
        base,
    )
    .unwrap();
    assert!(c.ingest.to_config().refuse_duplicates);
    assert!(!serde_json::to_string(&IngestSpec::default()).unwrap().contains("refuse_duplicates"));
    // The shipped example parses.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.toml");
    PipelineConfig::from_toml(&std::fs::read_to_string(&ex).unwrap(), ex.parent().unwrap()).unwrap();
}

/// Below 100% labels the distilled student learns from a teacher that saw the same labelled
/// patients only (the demo teacher retrained on them), never from the pipeline's teacher, which
/// saw every training label.
#[test]
fn label_scarce_students_distil_from_a_teacher_of_the_same_labels() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = tiny(d.path());
    cfg.student.label_fractions = vec![1.0, 0.5];
    ckd_trainer::pipeline::run(&cfg, &Hidden).unwrap();
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.out.join("student-kd-50pct/provenance.json")).unwrap()).unwrap();
    let seed = cfg.student.seed;
    let model = prov["teacher"]["model"].as_str().unwrap();
    assert_eq!(model, format!("Demo teacher at 50% labels (seed {seed}), final layer, last token"));
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.out.join("student-kd/provenance.json")).unwrap()).unwrap();
    assert_ne!(full["teacher"]["model"].as_str().unwrap(), model);
    // The retrained teacher's head saw exactly the student's labelled patients.
    let t: ckd_trainer::pipeline::fraction_teacher::FractionTeacher = serde_json::from_slice(
        &std::fs::read(cfg.out.join(format!("bench/teachers/demo-50pct-seed{seed}/soft.json"))).unwrap(),
    )
    .unwrap();
    let samples =
        ckd_core::format::SampleFile::from_bytes(&std::fs::read(cfg.out.join("samples/samples.bin")).unwrap()).unwrap();
    let train: Vec<_> = samples.samples.iter().filter(|s| s.split == ckd_core::visit::Split::Train).collect();
    let kept = train.iter().filter(|s| ckd_trainer::student::keeps_label(seed, &s.subject.to_string(), 0.5)).count();
    assert_eq!((t.protocol.labelled_rows, t.protocol.unlabelled_rows), (kept, train.len() - kept));
    // Its loss has no attention terms: that teacher gives soft labels only.
    let d = &prov["train_config"]["distill"];
    assert_eq!(
        (d["attn_word"].as_f64(), d["attn_concept"].as_f64(), d["attn_field"].as_f64()),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    let roles = report_models(&cfg.out);
    assert_eq!(roles.iter().filter(|r| *r == "student_distilled").count(), 2, "{roles:?}");
}
