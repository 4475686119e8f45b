#!/usr/bin/env python3
"""Cross-check of the ONNX export in onnxruntime (issue 5, section 3).

Reads DIR/check.json and DIR/model.{f32,int8}.onnx (tensors in model.*.onnx.data beside them, the
bundle layout) written by
  CKD_EXPORT_DIR=DIR cargo run -p ckd-trainer --example export_study -- ort-files
runs both files in onnxruntime (CPU, 1 thread) on the same padded batch, and compares with the
logits tract (and candle) produced:
  f32 : onnxruntime vs tract, max |logit diff| < 1e-4
  int8: onnxruntime vs tract, max |probability diff| < 0.02
Exit status 1 when a tolerance is exceeded.

Options:
  --bench               also time batch 1, seq 128 (median of --runs) in onnxruntime: both files and any
                        DIR/form.*.onnx (the other int8 graph forms, written by the same tool)
  --quantize-dynamic    also write DIR/model.ortq.onnx = onnxruntime.quantization.quantize_dynamic
                        of the f32 file (onnxruntime's own DynamicQuantizeLinear + MatMulInteger form,
                        per-tensor weights) and time it, for comparison with ours in tract

Needs: pip install onnxruntime numpy (and onnx for --quantize-dynamic).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

F32_LOGIT_TOL = 1e-4
INT8_PROB_TOL = 0.02


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bench(sess, vocab_hi, runs):
    t = 128
    ids = np.array([[101] + [1000 + (i * 37) % (vocab_hi - 1000) for i in range(1, t)]], dtype=np.int64)
    mask = np.ones((1, t), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    for _ in range(2):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--quantize-dynamic", action="store_true")
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()

    doc = json.loads((args.dir / "check.json").read_text())
    b, t, n_labels = doc["batch"], doc["seq"], doc["num_labels"]
    feed = {
        "input_ids": np.array(doc["input_ids"], dtype=np.int64).reshape(b, t),
        "attention_mask": np.array(doc["attention_mask"], dtype=np.int64).reshape(b, t),
    }
    ok = True
    print(f"onnxruntime {ort.__version__}, batch [{b}, {t}]")
    sessions = {}
    for prec in ["f32", "int8"]:
        sess = session(args.dir / f"model.{prec}.onnx")
        sessions[prec] = sess
        got = sess.run(["logits"], feed)[0]
        assert got.shape == (b, n_labels), got.shape
        tract = np.array(doc["logits"][f"tract_{prec}"], dtype=np.float32).reshape(b, n_labels)
        candle = np.array(doc["logits"]["candle"], dtype=np.float32).reshape(b, n_labels)
        dl = float(np.abs(got - tract).max())
        dp = float(np.abs(sigmoid(got) - sigmoid(tract)).max())
        dlc = float(np.abs(got - candle).max())
        dpc = float(np.abs(sigmoid(got) - sigmoid(candle)).max())
        print(f"{prec:>4}: ort vs tract max |logit diff| {dl:.3e}, max |prob diff| {dp:.3e}; "
              f"ort vs candle max |logit diff| {dlc:.3e}, max |prob diff| {dpc:.3e}")
        if prec == "f32" and dl >= F32_LOGIT_TOL:
            print(f"FAIL: f32 logits differ by {dl} >= {F32_LOGIT_TOL}")
            ok = False
        if prec == "int8" and dp >= INT8_PROB_TOL:
            print(f"FAIL: int8 probabilities differ by {dp} >= {INT8_PROB_TOL}")
            ok = False

    if args.quantize_dynamic:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = args.dir / "model.ortq.onnx"
        quantize_dynamic(str(args.dir / "model.f32.onnx"), str(q), weight_type=QuantType.QInt8)
        sessions["ortq"] = session(q)
        got = sessions["ortq"].run(["logits"], feed)[0]
        f32 = sessions["f32"].run(["logits"], feed)[0]
        print(f"ortq: onnxruntime quantize_dynamic (per-tensor) vs f32 max |prob diff| "
              f"{float(np.abs(sigmoid(got) - sigmoid(f32)).max()):.3e}")

    if args.bench:
        # Other int8 graph forms the test wrote (form.<Int8Form>.onnx), timed alongside.
        for f in sorted(args.dir.glob("form.*.onnx")):
            sessions[f.stem] = session(f)
        for name, sess in sessions.items():
            med, times = bench(sess, 30000, args.runs)
            print(f"bench {name:>28}: batch 1, seq 128, 1 thread: median {med:.2f} ms "
                  f"(runs: {', '.join(f'{x:.1f}' for x in times)})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
