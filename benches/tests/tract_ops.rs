//! `ckd_edge::ops::dynamic_quantize` (the vectorized `DynamicQuantizeLinear` the edge runtime registers)
//! on a whole int8 export: logits bit-identical to stock tract's op, for several batch shapes
//! with padding, in plans for the symbolic shape. Lives here because only this crate can both
//! build exports (trainer) and see the edge runtime.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ckd_trainer::export::{build_onnx, BuildOptions, Precision, TractModel};
use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoRunnable, Tensor as TractTensor};

#[test]
fn fast_dynamic_quantize_is_bit_identical_to_tract_on_an_int8_export() {
    let cfg = Config::tiny();
    let head = HeadConfig::default();
    let (_, varmap) = BertForMultiLabel::init(&cfg, &head, &Device::Cpu, 3).unwrap();
    let mut tensors: HashMap<String, Tensor> = {
        let data = varmap.data().lock().unwrap();
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect()
    };
    // Spread the probabilities so the comparison is not between near-constant outputs.
    let w = (tensors["classifier.weight"].clone() * 50.0).unwrap();
    tensors.insert("classifier.weight".into(), w);
    let (bytes, stats) = build_onnx(&cfg, &head, &tensors, BuildOptions::new(Precision::Int8)).unwrap();
    assert!(stats.int8_linears > 0);

    let stock = TractModel::load(&bytes, None).unwrap();
    let mut fw = tract_onnx::onnx();
    ckd_edge::ops::dynamic_quantize::register(&mut fw);
    let fast = fw.model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let ops: Vec<String> = fast.model().nodes.iter().map(|n| n.op.name().to_string()).collect();
    assert!(ops.iter().any(|o| o == "FastDynamicQuantizeLinearU8"), "fast op not in the plan: {ops:?}");

    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for lens in [&[1usize][..], &[7], &[9, 3], &[5, 12, 1, 12], &[64, 20, 33]] {
        let (b, t) = (lens.len(), *lens.iter().max().unwrap());
        let (mut ids, mut mask) = (vec![0i64; b * t], vec![0i64; b * t]);
        for (r, &n) in lens.iter().enumerate() {
            for j in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ids[r * t + j] = if j == 0 { 2 } else { 1 + (seed % (cfg.vocab_size as u64 - 1)) as i64 };
                mask[r * t + j] = 1;
            }
        }
        let want = stock.run(&ids, &mask, b, t).unwrap();
        let inputs = tvec!(
            TractTensor::from_shape(&[b, t], &ids).unwrap().into(),
            TractTensor::from_shape(&[b, t], &mask).unwrap().into()
        );
        let out = fast.run(inputs).unwrap();
        let got: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        assert_eq!(got, want, "lens {lens:?}");
    }
}
