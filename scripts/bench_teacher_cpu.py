"""llama.cpp side of scripts/bench_teacher_cpu.sh: prefill of the same token ids, last-token state.

usage: bench_teacher_cpu.py GGUF IDS.json THREADS ROUNDS OUT.f32

IDS.json is a list of prompts, each a list of token ids (written by the teacher_speed example,
so both sides run exactly the same tokens). Each prompt is evaluated from an empty context
(`embedding=True`, last-token pooling, no generation); prints one JSON line with prompt tokens/s
(median over rounds) and peak RSS (ru_maxrss). The last-token states go to OUT.f32 ([N, H]).
"""
import json
import resource
import sys
import time

import llama_cpp
import numpy as np

gguf, ids_path, threads, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
prompts = json.load(open(ids_path))
n_ctx = max(len(p) for p in prompts) + 8
llm = llama_cpp.Llama(
    model_path=gguf,
    embedding=True,
    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
    n_ctx=n_ctx,
    n_batch=n_ctx,
    n_ubatch=n_ctx,
    n_threads=threads,
    n_threads_batch=threads,
    verbose=False,
)
tokens = sum(len(p) for p in prompts)
rates, states = [], []
for _ in range(rounds):
    states = []
    t0 = time.perf_counter()
    for p in prompts:
        llm.reset()
        llama_cpp.llama_kv_self_clear(llm.ctx) if hasattr(llama_cpp, "llama_kv_self_clear") else None
        llm.eval(p)
        emb = llama_cpp.llama_get_embeddings_seq(llm.ctx, 0)
        states.append(np.ctypeslib.as_array(emb, shape=(llm.n_embd(),)).copy())
    rates.append(tokens / (time.perf_counter() - t0))
np.asarray(states, dtype=np.float32).tofile(out)
rates.sort()
print(json.dumps({
    "side": "llama.cpp", "version": llama_cpp.__version__, "threads": threads,
    "tokens_per_s": rates[len(rates) // 2], "tokens": tokens, "prompts": len(prompts),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
