//! Loss tests against independently derived values (formulas in comments), on the CPU.

use candle_core::{DType, Device, Tensor, Var};

use ckd_core::evidence::{aggregate, word_spans};

use super::*;

/// Tolerance for f32 losses against f64 hand values.
const TOL: f32 = 1e-6;

fn t1(v: &[f32]) -> Tensor {
    Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
}

fn t2(v: &[f32], r: usize, c: usize) -> Tensor {
    Tensor::from_slice(v, (r, c), &Device::Cpu).unwrap()
}

fn val(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
}

fn assert_close(a: f32, b: f32, tol: f32) {
    assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
}

#[test]
fn hard_bce_hand_computed() {
    // l(z, y) = max(z, 0) − z·y + ln(1 + exp(−|z|)):
    // z=0,  y=1: 0 − 0 + ln 2                  = 0.6931471805599453
    // z=2,  y=0: 2 − 0 + ln(1 + e^−2)          = 2.1269280110429727
    // z=−3, y=1: 0 + 3 + ln(1 + e^−3)          = 3.0485873515737420
    // mean                                     = 1.9562208477255532
    let z = t2(&[0.0, 2.0, -3.0], 1, 3);
    let y = t2(&[1.0, 0.0, 1.0], 1, 3);
    let el = bce_with_logits(&z, &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in el.iter().zip([std::f32::consts::LN_2, 2.126_928, 3.048_587_4]) {
        assert_close(*a, b, TOL);
    }
    assert_close(val(&hard_loss(&z, &y, None).unwrap()), 1.956_220_8, TOL);
}

#[test]
fn bce_is_stable_for_large_logits() {
    // |z| = 100: exp(−100) underflows harmlessly; correct sign gives ~0, wrong sign gives 100.
    let z = t2(&[100.0, -100.0, 100.0, -100.0], 1, 4);
    let y = t2(&[1.0, 0.0, 0.0, 1.0], 1, 4);
    let el = bce_with_logits(&z, &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(el.iter().all(|x| x.is_finite()), "{el:?}");
    for (a, b) in el.iter().zip([0.0, 0.0, 100.0, 100.0]) {
        assert_close(*a, b, 1e-4);
    }
}

#[test]
fn soft_equals_hard_for_binary_teacher() {
    let z = t2(&[0.3, -1.2, 4.0, -0.1, 2.5, -7.0], 2, 3);
    let y = t2(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], 2, 3);
    assert_close(val(&soft_loss(&z, &y).unwrap()), val(&hard_loss(&z, &y, None).unwrap()), TOL);
}

#[test]
fn temperature_variant() {
    let z = t2(&[0.3, -1.2, 4.0, -0.1, 2.5, -7.0], 2, 3);
    let p = t2(&[0.9, 0.05, 0.5, 0.3, 0.99, 0.01], 2, 3);
    // T = 1: same as the plain soft loss (up to the probability clamp and f32 round trips).
    let a = val(&soft_loss_temperature(&z, &p, 1.0).unwrap());
    assert_close(a, val(&soft_loss(&z, &p).unwrap()), 1e-5);
    // T = 2, one element: z_s = 2, p_t = σ(4) = 0.9820137900379085 -> z_t = 4, q = σ(2) = 0.8807970779778823;
    // 4 · bce(1, q) = 4 · (1 − q + ln(1 + e^−1)) = 1.7298584381613622.
    let z = t2(&[2.0], 1, 1);
    let p = t2(&[0.982_013_8], 1, 1);
    assert_close(val(&soft_loss_temperature(&z, &p, 2.0).unwrap()), 1.729_858_4, 1e-5);
    assert!(soft_loss_temperature(&z, &p, 0.0).is_err());
    // Clamp: p = 0 and 1 give finite logits of about ∓ln((1 − 1e-6) / 1e-6) = ∓13.8155 (the upper
    // bound is 13.802: 1 − 1e-6 rounds to 1 − 1.013e-6 in f32).
    let zt = teacher_logits(&t2(&[0.0, 1.0], 1, 2)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_close(zt[0], -13.815_51, 1e-3);
    assert_close(zt[1], 13.802_3, 1e-3);
}

#[test]
fn masked_hard_loss_ignores_unlabelled_rows() {
    let z = t2(&[0.3, -1.2, 50.0, -50.0, 2.5, -7.0], 3, 2);
    let y = t2(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], 3, 2);
    let masked = val(&hard_loss(&z, &y, Some(&t1(&[1.0, 0.0, 1.0]))).unwrap());
    let rows = t2(&[0.3, -1.2, 2.5, -7.0], 2, 2);
    let rows_y = t2(&[1.0, 0.0, 0.0, 1.0], 2, 2);
    assert_close(masked, val(&hard_loss(&rows, &rows_y, None).unwrap()), TOL);
    // No labelled sample: 0, not NaN.
    assert_eq!(val(&hard_loss(&z, &y, Some(&t1(&[0.0, 0.0, 0.0]))).unwrap()), 0.0);
    assert!(hard_loss(&z, &y, Some(&t1(&[1.0, 0.0]))).is_err());
}

/// B = 2, T = 3, U = 3. Sample 0: token 0 is [CLS] (zero row), token 1 lies in unit 0, token 2
/// straddles units 0 and 1 half and half; unit 2 is padding (masked). Sample 1 has no evidence.
fn kl_case() -> (Tensor, Tensor, Tensor, Tensor) {
    let a = t2(&[0.2, 0.4, 0.4, 0.3, 0.3, 0.4], 2, 3);
    #[rustfmt::skip]
    let m = Tensor::from_slice(
        &[0.0f32, 0.0, 0.0,  1.0, 0.0, 0.0,  0.5, 0.5, 0.0,
          0.0, 0.0, 0.0,  1.0, 0.0, 0.0,  0.0, 1.0, 0.0],
        (2, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let mask = t2(&[1.0, 1.0, 0.0, 1.0, 1.0, 0.0], 2, 3);
    // Unit 2 of sample 0 is masked: its 0.2 is dropped and p renormalized to [0.5, 0.5].
    let p = t2(&[0.4, 0.4, 0.2, 0.0, 0.0, 0.0], 2, 3);
    (a, m, mask, p)
}

#[test]
fn kl_hand_computed() {
    // Sample 0: r = a·M = [0.4 + 0.4·0.5, 0.4·0.5] = [0.6, 0.2] -> s = [0.75, 0.25];
    // p' = [0.5, 0.5]; KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3) = 0.14384103622589042.
    // Sample 1 has no teacher mass: contributes 0 and is not counted -> mean over 1 sample.
    let (a, m, mask, p) = kl_case();
    let s = student_unit_distribution(&a, &m, &mask).unwrap().to_vec2::<f32>().unwrap();
    assert_close(s[0][0], 0.75, TOL);
    assert_close(s[0][1], 0.25, TOL);
    assert_eq!(s[0][2], 0.0);
    assert_close(val(&attention_kl(&a, &m, &mask, &p).unwrap()), 0.143_841_04, TOL);
}

#[test]
fn kl_is_zero_when_student_matches() {
    let (a, m, mask, _) = kl_case();
    let s = student_unit_distribution(&a, &m, &mask).unwrap();
    assert_close(val(&attention_kl(&a, &m, &mask, &s).unwrap()), 0.0, TOL);
}

#[test]
fn cls_attention_hand_computed() {
    // 3 layers, B = 1, H = 2, T = 2. Query row 0 per layer and head:
    // layer 1: h0 [0.2, 0.8], h1 [0.6, 0.4] -> head mean [0.4, 0.6]
    // layer 2: h0 [1.0, 0.0], h1 [0.0, 1.0] -> [0.5, 0.5]
    // last 2 layers: [0.45, 0.55]. Rows other than 0 must not matter.
    let layer = |r0: [f32; 2], r1: [f32; 2]| {
        Tensor::from_slice(&[r0[0], r0[1], 9.0, 9.0, r1[0], r1[1], 9.0, 9.0], (1, 2, 2, 2), &Device::Cpu).unwrap()
    };
    let layers = [layer([0.0, 1.0], [1.0, 0.0]), layer([0.2, 0.8], [0.6, 0.4]), layer([1.0, 0.0], [0.0, 1.0])];
    let a = cls_attention(&layers, 2).unwrap().to_vec2::<f32>().unwrap();
    assert_close(a[0][0], 0.45, TOL);
    assert_close(a[0][1], 0.55, TOL);
    assert!(cls_attention(&layers, 0).is_err());
    assert!(cls_attention(&layers, 4).is_err());
}

#[test]
fn student_distribution_matches_core_aggregate() {
    // Student tokens over a text: [CLS], some word pieces (one straddling a space and two words),
    // [SEP], padding. Weights arbitrary positive. normalize(a · M) must equal core's aggregate.
    let text = "The patient-acquired disease is Heart failure, Acute kidney failure.";
    let units = word_spans(text);
    let toks =
        vec![(0, 0), (0, 3), (4, 11), (11, 12), (12, 20), (20, 29), (29, 37), (37, 50), (50, 67), (67, 68), (0, 0)];
    let w = [0.05f32, 0.1, 0.07, 0.03, 0.12, 0.09, 0.2, 0.11, 0.08, 0.1, 0.05];
    let t_len = 12; // one padding position
    let expected = aggregate(&toks, &w, &units);
    let g = GranularityInputs::build(
        std::slice::from_ref(&toks),
        std::slice::from_ref(&units),
        &[&expected],
        t_len,
        &Device::Cpu,
    )
    .unwrap();
    let mut a = w.to_vec();
    a.push(0.0);
    let s = student_unit_distribution(&t2(&a, 1, t_len), &g.alignment, &g.unit_mask).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(s[0].len(), expected.len());
    for (x, y) in s[0].iter().zip(&expected) {
        assert_close(*x, *y, 1e-6);
    }
    // And the KL of the teacher against that student is 0.
    let kl = attention_kl(&t2(&a, 1, t_len), &g.alignment, &g.unit_mask, &g.teacher).unwrap();
    assert_close(val(&kl), 0.0, 1e-5);
}

#[test]
fn build_masks_padding_and_truncated_units() {
    // Sample 0: 3 units, the student saw only the first two (truncation). Sample 1: 1 unit.
    let toks = vec![vec![(0, 0), (0, 4), (5, 9)], vec![(0, 0), (0, 2)]];
    let units = vec![vec![(0, 4), (5, 9), (10, 14)], vec![(0, 2)]];
    let p0 = [0.2f32, 0.3, 0.5];
    let p1 = [1.0f32];
    let g = GranularityInputs::build(&toks, &units, &[&p0, &p1], 4, &Device::Cpu).unwrap();
    assert_eq!(g.alignment.dims(), [2, 4, 3]);
    assert_eq!(g.unit_mask.to_vec2::<f32>().unwrap(), [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
    assert_eq!(g.teacher.to_vec2::<f32>().unwrap(), [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]);
    assert!(GranularityInputs::build(&toks, &units, &[&p0[..2], &p1], 4, &Device::Cpu).is_err());
    assert!(GranularityInputs::build(&toks, &units, &[&p0, &p1], 2, &Device::Cpu).is_err());
}

fn attn_fixture(layers: &[Tensor]) -> AttnInputs {
    // B = 2, T = 4: [CLS] "ab" "cd" [SEP]/pad; units: words "ab", "cd"; fields: one unit each.
    let toks = vec![vec![(0, 0), (0, 2), (3, 5), (0, 0)], vec![(0, 0), (0, 2), (3, 5), (0, 0)]];
    let words = vec![vec![(0, 2), (3, 5)], vec![(0, 2), (3, 5)]];
    let whole = vec![vec![(0, 5)], vec![(0, 5)]];
    let w = |p: &[f32]| p.to_vec();
    let (pw0, pw1) = (w(&[0.7, 0.3]), w(&[0.2, 0.8]));
    let one = [1.0f32];
    let dev = Device::Cpu;
    AttnInputs {
        attention: cls_attention(layers, 2).unwrap(),
        word: Some(GranularityInputs::build(&toks, &words, &[&pw0, &pw1], 4, &dev).unwrap()),
        concept: Some(GranularityInputs::build(&toks, &words, &[&pw1, &pw0], 4, &dev).unwrap()),
        field: Some(GranularityInputs::build(&toks, &whole, &[&one, &one], 4, &dev).unwrap()),
    }
}

/// Softmax-normalized attention layers `[2, 2, 4, 4]` as variables (elementwise softmax so that
/// gradients reach the variables).
fn attn_layers(n: usize) -> (Vec<Var>, Vec<Tensor>) {
    let mut vars = Vec::new();
    let mut probs = Vec::new();
    for l in 0..n {
        let raw: Vec<f32> = (0..64).map(|i| ((i * 7 + l * 13) % 11) as f32 * 0.3 - 1.0).collect();
        let v = Var::from_tensor(&Tensor::from_vec(raw, (2, 2, 4, 4), &Device::Cpu).unwrap()).unwrap();
        let e = v.as_tensor().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(3).unwrap()).unwrap();
        vars.push(v);
        probs.push(p);
    }
    (vars, probs)
}

#[test]
fn gradients_reach_logits_and_attention() {
    let logits = Var::from_tensor(&t2(&[0.3, -1.2, 4.0, -0.1, 2.5, -7.0], 2, 3)).unwrap();
    let y = t2(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], 2, 3);
    let p = t2(&[0.9, 0.05, 0.5, 0.3, 0.99, 0.01], 2, 3);
    let (vars, layers) = attn_layers(3);
    let attn = attn_fixture(&layers);
    let cfg = DistillConfig {
        temperature: 2.0,
        attn_word: 0.5,
        attn_concept: 0.3,
        attn_field: 0.2,
        last_k_layers: 2,
        ..DistillConfig::default()
    };
    let parts = total_loss(&cfg, logits.as_tensor(), &y, Some(&t1(&[1.0, 0.0])), Some(&p), Some(&attn)).unwrap();
    assert!(parts.total_value.is_finite() && parts.total_value > 0.0);
    assert!(parts.attn_word.unwrap() > 0.0 && parts.attn_concept.unwrap() > 0.0);
    // Field: one unit per sample, both distributions are [1] -> KL = 0.
    assert_close(parts.attn_field.unwrap(), 0.0, 1e-6);
    let grads = parts.total.backward().unwrap();
    let gl = grads.get(logits.as_tensor()).expect("logits grad").abs().unwrap().sum_all().unwrap();
    assert!(val(&gl) > 0.0);
    // Layer 0 is outside the last 2: no gradient; layers 1 and 2 receive one.
    assert!(grads.get(vars[0].as_tensor()).is_none());
    for v in &vars[1..] {
        let g = grads.get(v.as_tensor()).expect("attention grad").abs().unwrap().sum_all().unwrap();
        assert!(val(&g) > 0.0);
    }
    // The unlabelled sample gets gradient from the soft term only: d soft / d z for row 1 is
    // nonzero, so compare with a hard-only loss, where row 1 must get exactly zero gradient.
    let hard_only = DistillConfig { hard: 1.0, soft: 0.0, ..DistillConfig::default() };
    let parts = total_loss(&hard_only, logits.as_tensor(), &y, Some(&t1(&[1.0, 0.0])), None, None).unwrap();
    let g = parts.total.backward().unwrap().get(logits.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!(g[0].iter().all(|x| *x != 0.0));
    assert!(g[1].iter().all(|x| *x == 0.0));
}

#[test]
fn total_loss_paper_default_and_missing_inputs() {
    let z = t2(&[0.3, -1.2, 4.0, -0.1, 2.5, -7.0], 2, 3);
    let y = t2(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], 2, 3);
    let p = t2(&[0.9, 0.05, 0.5, 0.3, 0.99, 0.01], 2, 3);
    let cfg = DistillConfig::default();
    let parts = total_loss(&cfg, &z, &y, None, Some(&p), None).unwrap();
    let hard = val(&hard_loss(&z, &y, None).unwrap());
    let soft = val(&soft_loss(&z, &p).unwrap());
    assert_close(parts.total_value, 0.9 * hard + 0.1 * soft, TOL);
    assert_eq!((parts.hard, parts.soft), (Some(hard), Some(soft)));
    assert!(parts.attn_word.is_none() && parts.attn_concept.is_none() && parts.attn_field.is_none());

    assert!(matches!(total_loss(&cfg, &z, &y, None, None, None), Err(DistillError::MissingInput { term: "soft", .. })));
    let with_attn = DistillConfig { attn_concept: 0.1, ..DistillConfig::default() };
    assert!(matches!(
        total_loss(&with_attn, &z, &y, None, Some(&p), None),
        Err(DistillError::MissingInput { term: "attention concept", .. })
    ));
    let (_, layers) = attn_layers(2);
    let mut attn = attn_fixture(&layers);
    attn.concept = None;
    assert!(matches!(
        total_loss(&with_attn, &z, &y, None, Some(&p), Some(&attn)),
        Err(DistillError::MissingInput { term: "attention concept", .. })
    ));
    let zero = DistillConfig { hard: 0.0, soft: 0.0, ..DistillConfig::default() };
    assert!(matches!(total_loss(&zero, &z, &y, None, None, None), Err(DistillError::Config(_))));
}

#[test]
fn config_serde_and_validation() {
    let cfg: DistillConfig = serde_json::from_str(r#"{"attn_word": 0.5, "temperature": 2.0}"#).unwrap();
    assert_eq!(cfg, DistillConfig { attn_word: 0.5, temperature: 2.0, ..DistillConfig::default() });
    assert!(cfg.uses_attention() && !DistillConfig::default().uses_attention());
    let back: DistillConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert!(serde_json::from_str::<DistillConfig>(r#"{"hardd": 1.0}"#).is_err());
    assert!(DistillConfig { temperature: 0.0, ..DistillConfig::default() }.validate().is_err());
    assert!(DistillConfig { soft: -0.1, ..DistillConfig::default() }.validate().is_err());
    assert!(DistillConfig { last_k_layers: 0, ..DistillConfig::default() }.validate().is_err());
    assert!(DistillConfig::default().validate().is_ok());
}
