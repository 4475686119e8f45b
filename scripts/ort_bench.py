#!/usr/bin/env python3
"""Latency of a bundle's model.onnx in onnxruntime, for scripts/compare_onnxruntime.sh.

  ort_bench.py BUNDLE_DIR IDS_JSON [--threads 1,2] [--runs 7] [--warmup 2]

IDS_JSON is what `edge_latency time --ids-out` wrote: {"128": [token ids...], ...}, the exact
inputs tract ran. Times session.run at batch 1 (attention mask all ones) for every thread count
and length, each session created once (intra-op threads = N, inter-op 1, sequential execution,
all graph optimizations). Prints one JSON object on stdout:
{"runtime": "onnxruntime X", "results": [{"threads", "seq", "tokens", "runs_ms", "median_ms"}]}.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("ids", type=Path)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    ids_of = json.loads(args.ids.read_text())
    model = args.bundle / "model.onnx"
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        sess = session(model, threads)
        for seq, ids in sorted(ids_of.items(), key=lambda kv: int(kv[0])):
            feed = {
                "input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            }
            out = sess.run(["logits"], feed)[0]
            if out.shape != (1, 25) or not np.isfinite(out).all():
                print(f"ort_bench: bad logits {out.shape} for seq {seq}", file=sys.stderr)
                sys.exit(1)
            for _ in range(args.warmup):
                sess.run(None, feed)
            runs = []
            for _ in range(max(args.runs, 1)):
                t0 = time.perf_counter()
                sess.run(None, feed)
                runs.append((time.perf_counter() - t0) * 1e3)
            results.append({"threads": threads, "seq": int(seq), "tokens": len(ids), "runs_ms": runs,
                            "median_ms": float(np.median(runs))})
    print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "results": results}))


if __name__ == "__main__":
    main()
