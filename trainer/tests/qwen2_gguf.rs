//! Opt-in check of our Qwen2 (`ckd_trainer::models::qwen2`) on the real teacher-sized model:
//! Qwen2.5-Coder-0.5B-Instruct as a GGUF (Q4_K/Q5_0/Q6_K/Q8_0 mix dequantized to f32, about 2.5 GB
//! of RAM). Loads it with its embedded tokenizer, renders a CKD-EHR style prompt with the chat
//! template, checks that the prompt's token offsets map back into the `input` text, that the
//! logits are finite, and greedy-generates up to 20 tokens that must decode to non-empty, mostly
//! ASCII text, and times KV-cached decoding. With `CKD_QWEN_TOKENIZER` (Qwen2.5 `tokenizer.json`) also checks that the GGUF
//! tokenizer encodes like it.
//!
//! Files come from `scripts/fetch_qwen.sh` (`CKD_QWEN_GGUF`, optional `CKD_QWEN_TOKENIZER`). Unset:
//! the test is ignored (opt-in, never required by CI); run it with `--ignored`. Run with `--nocapture` to
//! see the generated text and timings.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ckd_trainer::models::qwen2::{load_gguf, read_tokenizer_json, KvCache, ENDOFTEXT, IM_END};
use ckd_trainer::teacher::prompt::chat_prompt;

const INSTRUCTION: &str = "Given the patient's current visit, which of the following diseases may the patient \
     acquire at the next visit? Acute and unspecified renal failure; Chronic kidney disease; Congestive heart \
     failure; nonhypertensive; Essential hypertension; Septicemia (except in labor). Answer with the disease names.";
const INPUT: &str = "The patient-acquired disease is {Acute kidney failure, Hypertensive chronic kidney disease, \
     Anemia in chronic kidney disease}. The patient had used the following medication: {Furosemide, Heparin, \
     Epoetin Alfa}. The surgical operation performed by the patient: {Hemodialysis}. None.";

/// Texts on which the GGUF tokenizer must agree with `tokenizer.json` (special tokens, digits,
/// punctuation runs, newlines, non-ASCII).
const TOKENIZER_TEXTS: [&str; 4] = [
    "<|im_start|>user\nHello, world!<|im_end|>\n",
    "Vancomycin 1000mg q12h;  Piperacillin-Tazobactam  \n\n  (ICU)  ",
    "Sjögren's syndrome — naïve café, 25°C, ≥3 días",
    "don't  I'LL  it's\tTab\r\nend    ",
];

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

#[test]
#[ignore = "opt-in: needs the real GGUF, CKD_QWEN_GGUF (eval \"$(scripts/fetch_qwen.sh)\"), run with --ignored"]
fn real_qwen2_gguf_generates_coherent_text() {
    let Some(path) = env_path("CKD_QWEN_GGUF") else {
        eprintln!("NOT RUN: set CKD_QWEN_GGUF (eval \"$(scripts/fetch_qwen.sh)\") to run the real-model check");
        return;
    };
    let device = Device::Cpu;
    let start = Instant::now();
    let loaded = load_gguf(&path, DType::F32, &device).expect("load GGUF");
    let load_s = start.elapsed().as_secs_f64();
    let cfg = &loaded.config;
    eprintln!(
        "loaded {} in {load_s:.1} s: {} layers, H {}, {} heads / {} KV heads, V {}, tied {}",
        path.display(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.vocab_size,
        cfg.tie_word_embeddings
    );
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads), (896, 24, 14));
    assert_eq!((cfg.num_key_value_heads, cfg.vocab_size), (2, 151936));
    let tok = loaded.tokenizer.as_ref().expect("the GGUF embeds a tokenizer");

    if let Some(tj) = env_path("CKD_QWEN_TOKENIZER") {
        let reference = read_tokenizer_json(&tj).expect("tokenizer.json");
        let prompt = chat_prompt(INSTRUCTION, INPUT).text;
        for text in TOKENIZER_TEXTS.iter().copied().chain([prompt.as_str()]) {
            let a = tok.encode(text, false).expect("encode");
            let b = reference.encode(text, false).expect("encode");
            assert_eq!(a.get_ids(), b.get_ids(), "GGUF tokenizer differs from tokenizer.json on {text:?}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "offsets differ on {text:?}");
        }
        eprintln!("GGUF tokenizer encodes like {} on {} texts", tj.display(), TOKENIZER_TEXTS.len() + 1);
    } else {
        eprintln!("tokenizer.json comparison NOT RUN: set CKD_QWEN_TOKENIZER");
    }

    let prompt = chat_prompt(INSTRUCTION, INPUT);
    let enc = tok.encode(prompt.text.as_str(), false).expect("encode prompt");
    let ids = enc.get_ids().to_vec();
    // Tokens whose byte span lies inside the input map back to substrings of the input text.
    let inside: Vec<(usize, usize)> = enc
        .get_offsets()
        .iter()
        .copied()
        .filter(|&(s, e)| s >= prompt.input_range.start && e <= prompt.input_range.end)
        .collect();
    assert!(inside.len() > 40, "only {} tokens inside the input", inside.len());
    let rebuilt: String = inside.iter().map(|&(s, e)| &prompt.text[s..e]).collect();
    assert_eq!(rebuilt.trim(), INPUT.trim());

    let im_end = tok.token_to_id(IM_END).expect("<|im_end|>");
    let eot = tok.token_to_id(ENDOFTEXT).expect("<|endoftext|>");
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").expect("<|im_start|>"));

    let input = Tensor::new(ids.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("ids");
    let start = Instant::now();
    let out = loaded.model.forward(&input, None).expect("forward");
    let logits = loaded.model.logits_at(&out.hidden, &[(0, ids.len() - 1)]).expect("logits");
    let prefill_s = start.elapsed().as_secs_f64();
    let vals: Vec<f32> = logits.flatten_all().and_then(|t| t.to_vec1()).expect("logits to vec");
    assert!(vals.iter().all(|v| v.is_finite()), "non-finite logits");
    eprintln!("prompt: {} tokens, full forward + logits in {prefill_s:.2} s", ids.len());

    let start = Instant::now();
    let generated = loaded.model.greedy_generate(&ids, 20, &[im_end, eot]).expect("generate");
    let gen_s = start.elapsed().as_secs_f64();
    let text = tok.decode(&generated, true).expect("decode");
    eprintln!("generated {} tokens in {gen_s:.2} s (prefill included): {text:?}", generated.len());
    assert!(!text.trim().is_empty(), "empty generation: {generated:?}");
    let ascii = text.chars().filter(|c| c.is_ascii()).count();
    assert!(ascii * 10 >= text.chars().count() * 8, "mostly non-ASCII output: {text:?}");

    // Decode speed with the KV cache: 20 single-token steps after the prompt, no stop tokens.
    let mut cache = KvCache::new();
    let start = Instant::now();
    let mut hidden = loaded.model.forward_cached(&input, &mut cache).expect("prefill");
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let steps = 20;
    for _ in 0..steps {
        let t = hidden.dim(1).expect("T");
        let last = hidden.narrow(1, t - 1, 1).and_then(|h| h.squeeze(1)).expect("last");
        let logits = loaded.model.lm_logits(&last).expect("logits");
        let next = logits.squeeze(0).and_then(|l| l.argmax(0)).and_then(|i| i.to_scalar::<u32>()).expect("argmax");
        let step = Tensor::new(&[[next]], &device).expect("step");
        hidden = loaded.model.forward_cached(&step, &mut cache).expect("step forward");
    }
    let decode_s = start.elapsed().as_secs_f64();
    eprintln!(
        "KV-cached prefill of {} tokens {prefill_s:.2} s ({:.1} tokens/s); decode {steps} tokens {decode_s:.2} s ({:.2} tokens/s)",
        ids.len(),
        ids.len() as f64 / prefill_s,
        steps as f64 / decode_s
    );
}
