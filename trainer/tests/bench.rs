//! `ckd bench` on a tiny cohort and grid: every cell trains once, `bench.json` / `bench.md` /
//! `forest.svg` are written with intervals that contain their estimates, a second run trains
//! nothing, and a grown grid trains only its new cells. Below 100% labels the pipeline teacher
//! (every training label) is not distilled from; the demo teacher retrained on the labelled
//! patients is, and its soft labels follow the labelled draw.

use std::path::Path;

use ckd_trainer::bench::{self, summary::BenchJson};
use ckd_trainer::teacher::train::Hidden;

fn tiny(out: &Path) -> (ckd_trainer::pipeline::PipelineConfig, bench::BenchSpec) {
    let text = r#"
        out = "run"
        [data]
        synth = { patients = 500, seed = 5 }
        [teacher]
        max_len = 1024
        batch_size = 8
        sft_val_limit = 8
        oof_folds = 3
        [teacher.demo]
        vocab_size = 400
        hidden_size = 32
        intermediate_size = 64
        layers = 2
        heads = 4
        [teacher.sft]
        epochs = 1
        max_steps = 2
        lr = 1e-3
        [teacher.head]
        epochs = 5
        [student]
        epochs = 1
        batch_size = 16
        max_len = 128
        vocab_size = 400
        [bench]
        seeds = [1, 2]
        label_fractions = [1.0, 0.5]
        soft_weights = [0.5]
        temperatures = []
        attention = ["concept"]
        knowledge_ablation = true
        demo_teacher_soft_weights = [0.5]
        resamples = 200
    "#;
    bench::from_toml(text, out).unwrap()
}

/// Hidden bars that are kept, by name, to be looked at after the run.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(String, indicatif::ProgressBar)>>);

impl ckd_trainer::teacher::train::Bars for Recorded {
    fn bar(&self, name: &str) -> indicatif::ProgressBar {
        let b = indicatif::ProgressBar::hidden();
        self.0.lock().unwrap().push((name.to_string(), b.clone()));
        b
    }
}

fn read(dir: &Path) -> BenchJson {
    serde_json::from_slice(&std::fs::read(dir.join("bench.json")).unwrap()).unwrap()
}

#[test]
fn bench_grid_trains_each_cell_once_and_reports_paired_intervals() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, spec) = tiny(d.path());
    let names: Vec<String> = spec.settings(&cfg.student.distill, 2).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "none",
            "soft 0.5",
            "soft 0.1 + attn concept",
            "none, no knowledge",
            "soft 0.1, no knowledge",
            "soft 0.5 (demo teacher, same labels)"
        ]
    );
    let attn = spec.settings(&cfg.student.distill, 2).into_iter().find(|s| s.name.contains("attn")).unwrap();
    assert_eq!((attn.distill.attn_concept, attn.distill.last_k_layers), (0.1, 2));
    let bars = Recorded::default();
    let o = bench::run(&cfg, &spec, &bars).unwrap();
    // The summary (baselines and resamples) has a progress bar like every long stage, counting
    // every model it resamples.
    let recorded = bars.0.lock().unwrap();
    let summary = recorded.iter().find(|(n, _)| n == "bench summary").map(|(_, b)| b).expect("a summary bar");
    assert!(summary.length().is_some_and(|l| l > 18), "{:?}", summary.length());
    assert_eq!(Some(summary.position()), summary.length());
    drop(recorded);
    // 6 settings x 2 seeds at 100%; at 50% the three settings distilled from the pipeline teacher
    // (which saw every label) do not run: none, none without knowledge, the demo teacher's.
    assert_eq!(o.trained, 12 + 6);
    let b = read(&cfg.out);
    assert_eq!((b.format.as_str(), b.version), ("ckd-bench", 1));
    assert_eq!(b.rows.len(), 9);
    for r in &b.rows {
        assert_eq!(r.seeds, vec![1, 2], "{}", r.setting);
        let iv = r.test_macro_auc.expect("test interval");
        assert!(iv.lo <= iv.estimate + 1e-9 && iv.estimate <= iv.hi + 1e-9, "{r:?}");
        assert!(iv.n_defined > 150, "{r:?}");
        // The estimate is the mean of the seeds' test AUCs.
        let seeds: Vec<f64> = r.test_macro_auc_per_seed.iter().map(|v| v.unwrap()).collect();
        assert!((iv.estimate - seeds.iter().sum::<f64>() / 2.0).abs() < 1e-9);
        assert_eq!(r.vs_none.is_some(), r.setting != "none", "{r:?}");
        assert!(r.vs_logreg.is_some(), "{r:?}");
        if r.label_fraction < 1.0 {
            assert!(
                ["none", "none, no knowledge", "soft 0.5 (demo teacher, same labels)"].contains(&r.setting.as_str())
            );
        }
    }
    // Twins: attention against soft 0.1 is absent here (soft 0.1 itself is not in the grid),
    // the knowledge ablation against its with-knowledge setting.
    let abl = b.rows.iter().find(|r| r.setting == "none, no knowledge" && r.label_fraction == 1.0).unwrap();
    assert_eq!(abl.twin.as_deref(), Some("none"));
    assert!(abl.vs_twin.is_some());
    // Baselines: prior, LR at 100% and at 50% (alone, and refitted with validation), the demo
    // teacher on each fraction's labels, the pipeline teacher, the oracle.
    let bn: Vec<&str> = b.baselines.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(bn.len(), 8, "{bn:?}");
    for want in ["logistic regression (50% labels", "demo teacher (same labels) (50% labels", "oracle"] {
        assert!(bn.iter().any(|n| n.starts_with(want)), "{want}: {bn:?}");
    }
    // The demo teacher at 50% learned from the labelled patients only: its soft labels say so.
    for seed in [1u64, 2] {
        let p = cfg.out.join(format!("bench/teachers/demo-50pct-seed{seed}/soft.json"));
        let t: ckd_trainer::pipeline::fraction_teacher::FractionTeacher =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let samples =
            ckd_core::format::SampleFile::from_bytes(&std::fs::read(cfg.out.join("samples/samples.bin")).unwrap())
                .unwrap();
        let train: Vec<_> = samples.samples.iter().filter(|s| s.split == ckd_core::visit::Split::Train).collect();
        let kept =
            train.iter().filter(|s| ckd_trainer::student::keeps_label(seed, &s.subject.to_string(), 0.5)).count();
        assert_eq!((t.protocol.labelled_rows, t.protocol.unlabelled_rows), (kept, train.len() - kept), "seed {seed}");
        assert!(kept > 0 && kept < train.len());
    }
    // One choice per fraction, among the distilled settings with knowledge.
    assert_eq!(b.chosen.len(), 2);
    for c in &b.chosen {
        let allowed: &[&str] = if c.label_fraction < 1.0 {
            &["soft 0.5 (demo teacher, same labels)"]
        } else {
            &["soft 0.5", "soft 0.1 + attn concept", "soft 0.5 (demo teacher, same labels)"]
        };
        assert!(allowed.contains(&c.setting.as_str()), "{c:?}");
    }
    let md = std::fs::read_to_string(cfg.out.join("bench.md")).unwrap();
    assert!(md.contains("| none (2 seeds) | 50% |"), "{md}");
    assert!(md.contains("Chosen on validation") && md.contains("vs LR, same labels"), "{md}");
    let svg = std::fs::read_to_string(cfg.out.join("forest.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("same labels) @ 50%"), "{}", &svg[..200.min(svg.len())]);

    // Resume: nothing to train; the figures are the same.
    let o2 = bench::run(&cfg, &spec, &Hidden).unwrap();
    assert_eq!(o2.trained, 0);
    let b2 = read(&cfg.out);
    assert_eq!(b2.rows, b.rows);

    // A grown grid trains only its new cells (one more soft weight of the pipeline teacher: at
    // 100% only, 2 seeds).
    let mut spec3 = spec.clone();
    spec3.soft_weights.push(1.0);
    let o3 = bench::run(&cfg, &spec3, &Hidden).unwrap();
    assert_eq!(o3.trained, 2);
    assert_eq!(read(&cfg.out).rows.len(), 10);
    // Asking for the leaky comparison runs the pipeline teacher's settings below 100% too.
    let mut leaky = spec3.clone();
    leaky.leaky_pipeline_teacher = true;
    assert!(leaky.runs_at(&leaky.settings(&cfg.student.distill, 2)[1], 0.5));
    assert!(!spec3.runs_at(&spec3.settings(&cfg.student.distill, 2)[1], 0.5));

    zero_shot_teacher_grows_the_grid(&cfg, &spec3);
}

/// The zero-shot teacher (probability files per split, no label read): its students run at
/// every fraction, its row and its answers are reported, and files that do not hold exactly a
/// split's samples are refused with the file and the sample named.
fn zero_shot_teacher_grows_the_grid(cfg: &ckd_trainer::pipeline::PipelineConfig, spec: &bench::BenchSpec) {
    use ckd_core::visit::Split;
    let samples =
        ckd_core::format::SampleFile::from_bytes(&std::fs::read(cfg.out.join("samples/samples.bin")).unwrap()).unwrap();
    let dir = cfg.out.join("zero-shot");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |split: Split, skip: usize| -> std::path::PathBuf {
        let path = dir.join(format!("{}-{skip}.jsonl", split.name()));
        let mut text = String::new();
        for s in samples.samples.iter().filter(|s| s.split == split).skip(skip) {
            // An informative teacher: higher where the phenotype is present.
            let p: Vec<f32> = s.labels.to_dense().iter().map(|&y| if y > 0.0 { 0.7 } else { 0.3 }).collect();
            text.push_str(&format!("{}\n", serde_json::json!({"id": s.id, "p": p})));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let files = bench::ZeroShotFiles {
        train: write(Split::Train, 0),
        val: write(Split::Val, 0),
        test: write(Split::Test, 0),
        scoring: "yes/no, visit-centred".into(),
    };
    let mut z = spec.clone();
    z.zero_shot = Some(files.clone());
    z.zero_shot_soft_weights = vec![1.0];
    z.logreg_teacher_soft_weights = vec![0.5];
    z.logreg_zero_shot_soft_weights = vec![0.5];
    let names: Vec<String> = z.settings(&cfg.student.distill, 2).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names[names.len() - 3..],
        ["soft 1 (zero-shot, no labels)", "soft 0.5 (LR, same labels)", "soft 0.5 (LR + zero-shot)"]
    );
    let label_free = z.settings(&cfg.student.distill, 2).into_iter().find(|s| s.name.contains("no labels")).unwrap();
    assert_eq!((label_free.distill.hard, label_free.distill.soft), (0.0, 1.0));
    // Three settings x two fractions x two seeds, nothing else retrained.
    assert_eq!(bench::run(cfg, &z, &Hidden).unwrap().trained, 12);
    let b = read(&cfg.out);
    let rows: Vec<f64> =
        b.rows.iter().filter(|r| r.setting == "soft 1 (zero-shot, no labels)").map(|r| r.label_fraction).collect();
    assert_eq!(rows, [1.0, 0.5]);
    // The regression + zero-shot student is compared with the regression's (its twin).
    let lz = b.rows.iter().find(|r| r.setting == "soft 0.5 (LR + zero-shot)" && r.label_fraction == 0.5).unwrap();
    assert_eq!(lz.twin.as_deref(), Some("soft 0.5 (LR, same labels)"));
    assert!(lz.vs_twin.is_some() && lz.vs_logreg.is_some(), "{lz:?}");
    let bn: Vec<&str> = b.baselines.iter().map(|r| r.name.as_str()).collect();
    assert!(bn.contains(&"zero-shot LLM teacher (yes/no, visit-centred, no labels)"), "{bn:?}");
    for who in ["logistic-regression teacher (same labels) (50% labels", "logistic-regression + zero-shot teacher"] {
        assert!(bn.iter().any(|n| n.starts_with(who)), "{who}: {bn:?}");
    }
    let md = std::fs::read_to_string(cfg.out.join("bench.md")).unwrap();
    assert!(md.contains("## The zero-shot LLM teacher's student against the same labels"), "{md}");
    assert!(md.contains("## The logistic regression + zero-shot teacher's student"), "{md}");
    assert!(md.contains("the same teacher without the LLM"), "{md}");
    assert!(md.contains("Zero-shot teacher: a frozen LLM's own probabilities"), "{md}");
    // A file missing a sample of its split is refused, naming the file.
    let mut short = z.clone();
    short.zero_shot = Some(bench::ZeroShotFiles { val: write(Split::Val, 1), ..files });
    let e = bench::run(cfg, &short, &Hidden).unwrap_err().to_string();
    assert!(e.contains("val-1.jsonl") && e.contains("no probabilities for val sample"), "{e}");
}

#[test]
fn bench_settings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, mut spec) = tiny(d.path());
    spec.attention = vec!["sentence".into()];
    let e = bench::run(&cfg, &spec, &Hidden).unwrap_err().to_string();
    assert!(e.contains("attention \"sentence\""), "{e}");
    let e = bench::from_toml("out = \"x\"\n[data]\nsynth = { patients = 10 }\n[bench]\nseedz = [1]\n", d.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("seedz"), "{e}");
    // The zero-shot files are relative to the config's directory; a misspelt key or a weight
    // outside (0, 1] is refused.
    let head = "out = \"x\"\n[data]\nsynth = { patients = 10 }\n[bench]\n";
    let zs = "zero_shot = { train = \"zs/t.jsonl\", val = \"zs/v.jsonl\", test = \"/abs/te.jsonl\" }\n";
    let (_, spec) = bench::from_toml(&format!("{head}{zs}"), d.path()).unwrap();
    let z = spec.zero_shot.expect("zero_shot read");
    assert_eq!((z.train, z.test), (d.path().join("zs/t.jsonl"), std::path::PathBuf::from("/abs/te.jsonl")));
    assert_eq!(z.scoring, "zero-shot");
    let e = bench::from_toml(&format!("{head}{}", zs.replace("test =", "tset =")), d.path()).unwrap_err();
    assert!(e.to_string().contains("tset"), "{e}");
    let e = bench::from_toml(&format!("{head}{zs}zero_shot_soft_weights = [0.0]\n"), d.path()).unwrap_err();
    assert!(e.to_string().contains("zero_shot_soft_weights = [0.0]"), "{e}");
    let e = bench::from_toml(&format!("{head}logreg_zero_shot_soft_weights = [0.5]\n"), d.path()).unwrap_err();
    assert!(e.to_string().contains("needs zero_shot"), "{e}");
    // The example of BENCHMARKS.md's zero-shot run reads as the grid it describes.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline-zero-shot.toml");
    let (cfg, spec) = bench::from_toml(&std::fs::read_to_string(&ex).unwrap(), ex.parent().unwrap()).unwrap();
    assert!(cfg.out.ends_with("runs/bench-zero-shot"));
    let names: Vec<String> = spec.settings(&cfg.student.distill, 2).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "none",
            "soft 0.5 (zero-shot)",
            "soft 1 (zero-shot, no labels)",
            "soft 0.5 (LR, same labels)",
            "soft 0.5 (LR + zero-shot)"
        ]
    );
}
