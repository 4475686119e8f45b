//! Pooled LLM states (`teacher::states`) on a tiny random Qwen2: the shared-prefix path equals
//! a full forward pass, chunks resume, a damaged chunk is refused with its name, and a changed
//! prompt recomputes only its own chunk. Zero-shot scores (`teacher::zero_shot`) on the shared
//! cache equal a full forward pass of each prompt + answer prefix + name, and the yes/no scores
//! a full forward pass of each prompt + question, and the prompt attention taken in the same pass
//! that of a full forward of the prompt; `ckd teacher zero-shot` resumes from its raw scores,
//! writes the evidence file with `--evidence`, and refuses scores of another scoring.

use candle_core::{DType, Device, Tensor};
use ckd_core::visit::{Sample, Split};
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::models::qwen2::{self, KvCache, Qwen2ForCausalLM};
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
use ckd_trainer::teacher::demo::DemoConfig;
use ckd_trainer::teacher::states::{self, StatesConfig, POOLS};
use ckd_trainer::teacher::PromptEncoder;
use ckd_trainer::teacher::{label, zero_shot};
use indicatif::ProgressBar;

fn samples() -> Vec<Sample> {
    let d = tempfile::tempdir().unwrap();
    let c = generate(&SynthConfig { patients: 300, seed: 9, ..Default::default() });
    write_cohort(&c, d.path()).unwrap();
    let ing = ingest_mimic(d.path(), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    ing.file.samples.into_iter().filter(|x| x.split == Split::Train).take(11).collect()
}

fn setup(s: &[Sample]) -> (Qwen2ForCausalLM, PromptEncoder) {
    let tok = ckd_trainer::teacher::demo::train_tokenizer(s, 400).unwrap();
    let d = DemoConfig { vocab_size: 400, hidden_size: 32, intermediate_size: 64, layers: 3, heads: 4, seed: 1 };
    let cfg = d.qwen2(tok.get_vocab_size(true), 2048);
    let t = qwen2::init_random(&cfg, 3, &Device::Cpu).unwrap();
    let model = Qwen2ForCausalLM::from_tensors(t, &cfg, DType::F32, &Device::Cpu).unwrap();
    (model, PromptEncoder::new(tok, 2048).unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn shared_prefix_states_equal_a_full_forward_and_chunks_resume() {
    let s = samples();
    let (model, enc) = setup(&s);
    let h = model.config().hidden_size;
    let layers = vec![1, 3];
    let cfg = StatesConfig { layers: layers.clone(), chunk: 4 };
    let d = tempfile::tempdir().unwrap();
    let bar = ProgressBar::hidden();
    let (st, o) = states::extract(&model, &enc, &s, &cfg, d.path(), "tiny", &bar).unwrap();
    assert_eq!((o.computed, o.reused), (3, 0));
    assert!(o.prefix > 10, "the instruction is shared: prefix {}", o.prefix);
    assert_eq!(st.data.len(), s.len() * layers.len() * POOLS.len() * h);

    // Against a full forward pass of each prompt (no shared cache).
    for (i, smp) in s.iter().enumerate() {
        let p = enc.encode(smp).unwrap();
        let x = Tensor::from_slice(&p.ids, (1, p.ids.len()), &Device::Cpu).unwrap();
        let full = model.forward_cached_layers(&x, &mut KvCache::new(), &layers).unwrap();
        let out = model.forward(&x, None).unwrap();
        let last_final: Vec<f32> = out.last_hidden.flatten_all().unwrap().to_vec1().unwrap();
        let row = &st.data[i * layers.len() * 2 * h..(i + 1) * layers.len() * 2 * h];
        // Layer 3 = final normed state: its last-token pooling is the paper's head feature.
        assert!(max_diff(&row[2 * h..3 * h], &last_final) < 1e-4);
        let input: Vec<usize> = (0..p.ids.len()).filter(|&t| p.input_spans[t].is_some()).collect();
        for (li, f) in full.iter().enumerate() {
            let f: Vec<Vec<f32>> = f.squeeze(0).unwrap().to_vec2().unwrap();
            let last = &f[p.ids.len() - 1];
            let mean: Vec<f32> =
                (0..h).map(|j| input.iter().map(|&t| f[t][j]).sum::<f32>() / input.len() as f32).collect();
            assert!(max_diff(&row[li * 2 * h..li * 2 * h + h], last) < 1e-4, "sample {i} layer {li} last");
            assert!(max_diff(&row[li * 2 * h + h..(li + 1) * 2 * h], &mean) < 1e-4, "sample {i} layer {li} mean");
        }
    }
    // view() picks (layer, pool) columns.
    let v = st.view(1, 1).unwrap();
    assert_eq!(v.len(), s.len() * h);
    assert_eq!(&v[h..2 * h], &st.data[layers.len() * 2 * h + h..layers.len() * 2 * h + 2 * h]);
    assert!(st.view(2, 0).is_err());

    // A second run reads every chunk back, bit for bit.
    let (again, o2) = states::extract(&model, &enc, &s, &cfg, d.path(), "tiny", &bar).unwrap();
    assert_eq!((o2.computed, o2.reused), (0, 3));
    assert_eq!(again, st);

    // A changed prompt recomputes its own chunk only; the stale chunk is not read.
    let mut changed = s.clone();
    changed[5].visit.diagnoses.truncate(1);
    let (_, o3) = states::extract(&model, &enc, &changed, &cfg, d.path(), "tiny", &bar).unwrap();
    assert_eq!((o3.computed, o3.reused), (1, 2));
    // Another model key recomputes everything.
    let other = tempfile::tempdir().unwrap();
    let (_, o4) = states::extract(&model, &enc, &s[..4], &cfg, other.path(), "other", &bar).unwrap();
    assert_eq!(o4.computed, 1);

    // A damaged chunk is an error that names it.
    let first = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("chunk-00000-"))
        .unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&first, bytes).unwrap();
    let e = states::extract(&model, &enc, &s, &cfg, d.path(), "tiny", &bar).err().unwrap().to_string();
    assert!(e.contains("chunk-00000-") && e.contains("checksum"), "{e}");
}

#[test]
fn bad_layer_lists_are_refused() {
    let s = samples();
    let (model, enc) = setup(&s[..2]);
    let d = tempfile::tempdir().unwrap();
    for layers in [vec![], vec![0], vec![4], vec![2, 1]] {
        let cfg = StatesConfig { layers: layers.clone(), chunk: 4 };
        assert!(
            states::extract(&model, &enc, &s[..2], &cfg, d.path(), "k", &ProgressBar::hidden()).is_err(),
            "{layers:?}"
        );
    }
}

#[test]
fn zero_shot_scores_on_the_shared_cache_equal_a_full_forward() {
    let s = samples();
    let (model, enc) = setup(&s);
    let cont = zero_shot::Continuations::new(enc.tokenizer()).unwrap();
    assert_eq!(cont.names.len(), 25);
    assert!(!cont.prefix.is_empty() && cont.names.iter().all(|n| !n.is_empty()));
    let bar = ProgressBar::hidden();
    let scores = zero_shot::score_samples(&model, &enc, &cont, &s[..3], &bar).unwrap();
    assert_eq!(scores.len(), 3 * 25);
    // Against full forward passes (two visits, every fourth phenotype: a full pass per name).
    for (i, smp) in s[..3].iter().enumerate().skip(1) {
        let p = enc.encode(smp).unwrap();
        for (j, name) in cont.names.iter().enumerate().step_by(4) {
            let mut ids = p.ids.clone();
            ids.extend_from_slice(&cont.prefix);
            let start = ids.len();
            ids.extend_from_slice(name);
            let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
            let out = model.forward(&x, None).unwrap();
            // Position t predicts token t + 1.
            let positions: Vec<(usize, usize)> = (start - 1..ids.len() - 1).map(|t| (0, t)).collect();
            let logits = model.logits_at(&out.hidden, &positions).unwrap();
            let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap().to_vec2::<f32>().unwrap();
            let want = positions.iter().enumerate().map(|(k, &(_, t))| lsm[k][ids[t + 1] as usize]).sum::<f32>()
                / name.len() as f32;
            let got = scores[i * 25 + j];
            assert!((got - want).abs() < 1e-5, "sample {i}, phenotype {j}: {got} vs {want}");
        }
    }
    // Log-probabilities; the visit-free prompt scores differently from a visit.
    let free = zero_shot::visit_free_scores(&model, &enc, &cont, &s[0]).unwrap();
    assert!(free.iter().all(|x| *x < 0.0) && free.len() == 25);
    assert!(free.iter().zip(&scores[..25]).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn yes_no_scores_on_the_shared_cache_equal_a_full_forward() {
    let s = samples();
    let (model, enc) = setup(&s);
    let cont = zero_shot::Continuations::with_scoring(enc.tokenizer(), zero_shot::Scoring::YesNo).unwrap();
    assert_eq!(cont.names.len(), 25);
    let (yes, no) = &cont.answers;
    assert!(!yes.is_empty() && !no.is_empty() && yes.iter().all(|t| !no.contains(t)));
    // The question up to the name is shared; each row ends with the assistant's turn.
    let tail = enc.tokenizer().encode("<|im_end|>\n<|im_start|>assistant\n", false).unwrap().get_ids().to_vec();
    assert!(cont.names.iter().all(|n| n.ends_with(&tail)), "{:?}", cont.names[0]);
    let scores = zero_shot::score_samples(&model, &enc, &cont, &s[..3], &ProgressBar::hidden()).unwrap();
    assert_eq!(scores.len(), 3 * 25);
    for (i, smp) in s[..3].iter().enumerate().skip(1) {
        let p = enc.encode(smp).unwrap();
        for (j, row) in cont.names.iter().enumerate().step_by(6) {
            let mut ids = p.ids.clone();
            ids.extend_from_slice(&cont.prefix);
            ids.extend_from_slice(row);
            let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
            let out = model.forward(&x, None).unwrap();
            let logits = model.logits_at(&out.hidden, &[(0, ids.len() - 1)]).unwrap();
            let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap().to_vec2::<f32>().unwrap();
            let lse = |t: &[u32]| t.iter().map(|&k| (lsm[0][k as usize] as f64).exp()).sum::<f64>().ln();
            let want = (lse(yes) - lse(no)) as f32;
            let got = scores[i * 25 + j];
            assert!((got - want).abs() < 1e-4, "sample {i}, phenotype {j}: {got} vs {want}");
        }
    }
    // Another scoring, other numbers.
    let names = zero_shot::Continuations::new(enc.tokenizer()).unwrap();
    let by_name = zero_shot::score_samples(&model, &enc, &names, &s[..1], &ProgressBar::hidden()).unwrap();
    assert!(by_name.iter().zip(&scores[..25]).any(|(a, b)| (a - b).abs() > 1e-3));
}

/// The zero-shot pass with attention evidence: the same scores as without it, and the
/// attention of the prompt's last token (on the shared cache, continuations after it) equal to
/// that of a full forward pass of the prompt alone, the weights `ckd teacher label` takes.
#[test]
fn zero_shot_attention_on_the_shared_cache_equals_a_full_forward() {
    let s = samples();
    let (model, enc) = setup(&s);
    let cont = zero_shot::Continuations::with_scoring(enc.tokenizer(), zero_shot::Scoring::YesNo).unwrap();
    let prompts: Vec<_> = s[..3].iter().map(|x| enc.encode(x).unwrap()).collect();
    let shared = states::shared_prefix(&prompts);
    assert!(shared > 10, "the instruction is shared: {shared}");
    let cache = states::prefill(&model, &prompts[0].ids, shared).unwrap();
    for (k, p) in [1usize, 2].iter().zip(&prompts) {
        let plain = zero_shot::prompt_scores(&model, &cache, p, &cont).unwrap();
        let (scores, w) = zero_shot::prompt_scores_with_attention(&model, &cache, p, &cont, *k).unwrap();
        assert!(max_diff(&plain, &scores) < 1e-6);
        assert_eq!(w.len(), p.ids.len());
        let x = Tensor::from_slice(&p.ids, (1, p.ids.len()), &Device::Cpu).unwrap();
        let out = model.forward_t(&x, None, None, true).unwrap();
        let want = label::last_token_weights(out.last_token_attentions.as_deref().unwrap(), *k).unwrap();
        assert!(max_diff(&w, &want[0]) < 1e-5, "K = {k}: {}", max_diff(&w, &want[0]));
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-4, "a softmax row sums to 1");
    }
    // A shared prefix covering the whole prompt leaves no attention row to take: refused.
    let whole = states::prefill(&model, &prompts[1].ids, prompts[1].ids.len()).unwrap();
    assert!(zero_shot::prompt_scores_with_attention(&model, &whole, &prompts[1], &cont, 1).is_err());
}

/// `ckd teacher zero-shot` on a tiny random Qwen2 saved as a safetensors base: a second run with
/// more samples scores only the new ones and keeps the old lines; another scoring into the same
/// output is refused.
#[test]
fn zero_shot_cli_resumes_and_refuses_another_scoring() {
    let d = tempfile::tempdir().unwrap();
    let c = generate(&SynthConfig { patients: 300, seed: 9, ..Default::default() });
    write_cohort(&c, &d.path().join("cohort")).unwrap();
    let ing = ingest_mimic(&d.path().join("cohort"), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    ckd_trainer::ingest::write_outputs(&ing, &d.path().join("samples")).unwrap();
    let train: Vec<Sample> = ing.file.samples.iter().filter(|x| x.split == Split::Train).take(11).cloned().collect();
    let (_, enc) = setup(&train);
    let base = d.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    enc.tokenizer().save(base.join("tokenizer.json"), false).unwrap();
    let dc = DemoConfig { vocab_size: 400, hidden_size: 32, intermediate_size: 64, layers: 3, heads: 4, seed: 1 };
    let cfg = dc.qwen2(enc.tokenizer().get_vocab_size(true), 2048);
    std::fs::write(base.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let t = qwen2::init_random(&cfg, 3, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&t, base.join("model.safetensors")).unwrap();

    let out = d.path().join("zs.jsonl");
    let scores = d.path().join("zs.jsonl.scores.jsonl");
    let samples = d.path().join("samples/samples.bin");
    let run = |limit: &str, scoring: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ckd"))
            .args(["teacher", "zero-shot", "--base", base.to_str().unwrap(), "--data"])
            .args([samples.to_str().unwrap(), "--split", "train", "--limit", limit, "--scoring", scoring])
            .args(["--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let o = run("2", "yes-no");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(first.lines().count(), 2);
    let o = run("3", "yes-no");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("3 samples, 2 already scored"), "{err}");
    let second = std::fs::read_to_string(&scores).unwrap();
    assert!(second.starts_with(&first) && second.lines().count() == 3, "{second}");
    let probs = std::fs::read_to_string(&out).unwrap();
    assert_eq!(probs.lines().count(), 3);
    // Evidence: the three visits (scored without attention) are scored again, once.
    let ev = d.path().join("zs.evidence.bin");
    let run_ev = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ckd"))
            .args(["teacher", "zero-shot", "--base", base.to_str().unwrap(), "--data"])
            .args([samples.to_str().unwrap(), "--split", "train", "--limit", "3", "--scoring", "yes-no"])
            .args(["--out", out.to_str().unwrap(), "--evidence", ev.to_str().unwrap(), "--last-k-layers", "2"])
            .output()
            .unwrap()
    };
    let o = run_ev();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("3 samples, 0 already scored with attention"), "{err}");
    let file = label::read_evidence(&ev).unwrap();
    assert_eq!((file.records.len(), file.teacher.last_k_layers), (3, 2));
    for (line, rec) in std::fs::read_to_string(&out).unwrap().lines().zip(&file.records) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["id"], rec.id.as_str());
        let p: Vec<f32> = serde_json::from_value(v["p"].clone()).unwrap();
        assert_eq!(p, rec.probs, "the evidence carries the written probabilities");
        assert!(rec.validate().is_ok() && !rec.concepts.is_empty(), "{:?}", rec.concepts);
    }
    let rescored = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(rescored.lines().count(), 6, "old lines kept, the attention lines appended");
    let o = run_ev();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("3 samples, 3 already scored with attention"), "{err}");
    let second = rescored;

    let o = run("3", "names");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("scores of another model or prompt"), "{err}");
    assert_eq!(std::fs::read_to_string(&scores).unwrap(), second, "a refused run changes nothing");
}
