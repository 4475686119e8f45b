//! Tokenization and batching for the student.
//!
//! - [`TextEncoder`] wraps a HF `tokenizers` tokenizer with its built-in padding and truncation
//!   cleared; it truncates itself to `max_len` (keeping the final `[SEP]`) and reports it.
//! - A checkpoint's `tokenizer.json` is loaded with [`TextEncoder::from_file`]; a student with no
//!   checkpoint gets a BERT-style WordPiece vocabulary trained on the training texts
//!   ([`TextEncoder::train_wordpiece`]), so the demo needs no download.
//! - [`pad_batch`] pads dynamically (to the longest sequence of the batch) and
//!   [`length_buckets`] groups samples of similar length into batches.
//!
//! Offsets are UTF-8 byte offsets into the input text (`[CLS]`/`[SEP]`/`[PAD]` have `(0, 0)`).

mod wordpiece;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use ckd_core::bundle::TokenizerSettings;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizedString, Normalizer, NormalizerWrapper, OffsetReferential, OffsetType,
    PostProcessorWrapper, PreTokenizedString, PreTokenizer, PreTokenizerWrapper, Tokenizer, TokenizerBuilder,
};

/// Error of tokenizer loading, training or encoding.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The tokenizer library failed (message includes the file where relevant).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A special token the student needs is missing from the vocabulary.
    #[error("tokenizer has no {0} token")]
    MissingSpecial(&'static str),
}

fn tk_err(ctx: &str) -> impl Fn(tokenizers::Error) -> TextError + '_ {
    move |e| TextError::Tokenizer(format!("{ctx}: {e}"))
}

/// One encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `[CLS] ... [SEP]`, at most `max_len`.
    pub ids: Vec<u32>,
    /// Byte span of each token in the text.
    pub offsets: Vec<(usize, usize)>,
    /// Whether the text was cut to `max_len` tokens.
    pub truncated: bool,
    /// Number of tokens before truncation.
    pub full_len: usize,
}

/// A tokenizer with the student's settings.
#[derive(Clone)]
pub struct TextEncoder {
    tok: Tokenizer,
    max_len: usize,
    /// `[PAD]` id.
    pub pad_id: u32,
    /// `[CLS]` id.
    pub cls_id: u32,
    /// `[SEP]` id.
    pub sep_id: u32,
}

/// Special tokens, BERT convention.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

impl TextEncoder {
    fn new(mut tok: Tokenizer, max_len: usize) -> Result<Self, TextError> {
        tok.with_padding(None);
        tok.with_truncation(None).map_err(tk_err("clearing truncation"))?;
        let id = |t: &'static str| tok.token_to_id(t).ok_or(TextError::MissingSpecial(t));
        let (pad_id, cls_id, sep_id) = (id("[PAD]")?, id("[CLS]")?, id("[SEP]")?);
        Ok(TextEncoder { tok, max_len: max_len.max(2), pad_id, cls_id, sep_id })
    }

    /// Loads a `tokenizer.json` and clears its built-in padding and truncation.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, TextError> {
        crate::io::check_regular(path).map_err(|e| TextError::Tokenizer(format!("{}: {e}", path.display())))?;
        let tok = Tokenizer::from_file(path).map_err(|e| TextError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(tok, max_len)
    }

    /// Parses `tokenizer.json` text read from `path` (named in errors) and clears its built-in
    /// padding and truncation.
    pub fn from_json(json: &str, path: &Path, max_len: usize) -> Result<Self, TextError> {
        let tok = Tokenizer::from_str(json).map_err(|e| TextError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(tok, max_len)
    }

    /// Trains a BERT-style uncased WordPiece tokenizer (BERT normalizer and pre-tokenizer,
    /// `[CLS] $A [SEP]` template) on `texts`. Canonical: the same texts give a byte-identical
    /// `tokenizer.json` in every run (see [`wordpiece`]); their order does not matter.
    pub fn train_wordpiece<'a, I>(texts: I, vocab_size: usize, max_len: usize) -> Result<Self, TextError>
    where
        I: Iterator<Item = &'a str> + Send,
    {
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut words: BTreeMap<String, u64> = BTreeMap::new();
        for text in texts {
            let mut n = NormalizedString::from(text);
            normalizer.normalize(&mut n).map_err(tk_err("normalizing"))?;
            let mut p = PreTokenizedString::from(n);
            BertPreTokenizer.pre_tokenize(&mut p).map_err(tk_err("pre-tokenizing"))?;
            for (w, _, _) in p.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *words.entry(w.to_string()).or_default() += 1;
            }
        }
        let pieces = wordpiece::learn(&words, vocab_size, 2, &SPECIALS);
        let vocab: tokenizers::models::bpe::Vocab =
            pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(tk_err("building WordPiece"))?;
        let mut tb = TokenizerBuilder::<
            WordPiece,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(model)
        .with_normalizer(Some(normalizer.into()))
        .with_pre_tokenizer(Some(BertPreTokenizer.into()))
        .build()
        .map_err(tk_err("building tokenizer"))?;
        tb.add_special_tokens(SPECIALS.iter().map(|s| AddedToken::from(*s, true)))
            .map_err(tk_err("adding special tokens"))?;
        let id = |t: &'static str| tb.token_to_id(t).ok_or(TextError::MissingSpecial(t));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let tp = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .map_err(|e| TextError::Tokenizer(e.to_string()))?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        tb.with_post_processor(Some(PostProcessorWrapper::from(tp)));
        let json = tb.to_string(false).map_err(tk_err("serializing tokenizer"))?;
        let tok = Tokenizer::from_str(&json).map_err(tk_err("reloading tokenizer"))?;
        Self::new(tok, max_len)
    }

    /// The tokenizer as `tokenizer.json` text (padding and truncation cleared).
    pub fn to_json(&self) -> Result<String, TextError> {
        self.tok.to_string(true).map_err(tk_err("serializing tokenizer"))
    }

    /// The settings a bundle records so the edge runtime tokenizes identically.
    pub fn settings(&self) -> TokenizerSettings {
        TokenizerSettings {
            max_len: self.max_len as u32,
            pad_id: self.pad_id,
            cls_id: self.cls_id,
            sep_id: self.sep_id,
        }
    }

    /// Maximum sequence length, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// Encodes one text with `[CLS]`/`[SEP]`; if longer than `max_len`, keeps the first
    /// `max_len - 1` tokens and the final `[SEP]`, and flags the result as truncated.
    pub fn encode(&self, text: &str) -> Result<Encoded, TextError> {
        let enc = self.tok.encode(text, true).map_err(tk_err("encoding"))?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        let full_len = ids.len();
        let truncated = self.settings().truncate(&mut ids, &mut offsets);
        Ok(Encoded { ids, offsets, truncated, full_len })
    }
}

/// A dynamically padded batch, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    /// Token ids `[B * T]`, padded with `pad_id`.
    pub ids: Vec<u32>,
    /// Attention mask `[B * T]`: 1 for tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Batch size B.
    pub batch: usize,
    /// Padded length T (the longest sequence of the batch).
    pub len: usize,
}

/// Pads `items` to the longest of them (right padding).
pub fn pad_batch(items: &[&Encoded], pad_id: u32) -> Padded {
    let len = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(items.len() * len);
    let mut mask = Vec::with_capacity(items.len() * len);
    for e in items {
        ids.extend_from_slice(&e.ids);
        mask.extend(std::iter::repeat_n(1, e.ids.len()));
        ids.extend(std::iter::repeat_n(pad_id, len - e.ids.len()));
        mask.extend(std::iter::repeat_n(0, len - e.ids.len()));
    }
    Padded { ids, mask, batch: items.len(), len }
}

/// Length-bucketed batches: indices are shuffled (seeded), cut into pools of 50 batches, each
/// pool sorted by length and cut into batches, and the batches shuffled again. Padding waste is
/// small and the order still varies per `seed`. With `shuffle == false` the batches follow
/// input order (evaluation). Every index appears exactly once.
pub fn length_buckets(lengths: &[usize], batch_size: usize, seed: u64, shuffle: bool) -> Vec<Vec<usize>> {
    let bs = batch_size.max(1);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    if !shuffle {
        return idx.chunks(bs).map(|c| c.to_vec()).collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    idx.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len() / bs + 1);
    for pool in idx.chunks_mut(bs * 50) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(bs).map(|c| c.to_vec()));
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        (0..50)
            .map(|i| {
                format!(
                    "The patient-acquired disease is Heart failure, Acute kidney failure. The patient had used the \
                     following medication: Furosemide, Heparin {i}. The surgical operation performed by the patient: None. None."
                )
            })
            .collect()
    }

    #[test]
    fn wordpiece_trains_encodes_and_truncates() {
        let texts = corpus();
        let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 200, 12).unwrap();
        let e = enc.encode(&texts[0]).unwrap();
        assert_eq!(e.ids.len(), 12);
        assert!(e.truncated && e.full_len > 12);
        assert_eq!((e.ids[0], e.ids[11]), (enc.cls_id, enc.sep_id));
        // Offsets point into the original (cased) text.
        let (s, t) = e.offsets[1];
        assert_eq!(&texts[0][s..t], "The");
        let long = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 200, 512).unwrap();
        let f = long.encode(&texts[0]).unwrap();
        assert!(!f.truncated && f.ids.len() == f.full_len);
        assert_eq!(*f.ids.last().unwrap(), long.sep_id);
        // Round trip through tokenizer.json.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokenizer.json");
        std::fs::write(&p, long.to_json().unwrap()).unwrap();
        let back = TextEncoder::from_file(&p, 512).unwrap();
        assert_eq!(back.encode(&texts[3]).unwrap(), long.encode(&texts[3]).unwrap());
    }

    /// The vocabulary is canonical: tied pieces are not numbered in the `tokenizers` trainer's
    /// hash-map order, so two trainings on the same texts (in one process, each map seeded
    /// afresh) give byte-identical `tokenizer.json` files, whatever the order of the texts.
    #[test]
    fn wordpiece_training_is_canonical() {
        let mut texts = corpus();
        texts.extend((0..40).map(|i| format!("Drug{i} given with Heparin; sodium chloride {} mg, dose {i}", i * 7)));
        let train = |t: &[String]| {
            TextEncoder::train_wordpiece(t.iter().map(|s| s.as_str()), 160, 64).unwrap().to_json().unwrap()
        };
        let first = train(&texts);
        for _ in 0..3 {
            assert_eq!(train(&texts), first);
        }
        texts.reverse();
        assert_eq!(train(&texts), first, "the texts' order does not matter");
        // Specials keep the ids the student and bundle expect.
        let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 160, 64).unwrap();
        assert_eq!((enc.pad_id, enc.cls_id, enc.sep_id), (0, 2, 3));
        assert_eq!(enc.vocab_size(), 160);
    }

    #[test]
    fn padding_and_buckets() {
        let a = Encoded { ids: vec![1, 5, 2], offsets: vec![(0, 0); 3], truncated: false, full_len: 3 };
        let b = Encoded { ids: vec![1, 2], offsets: vec![(0, 0); 2], truncated: false, full_len: 2 };
        let p = pad_batch(&[&a, &b], 0);
        assert_eq!((p.batch, p.len), (2, 3));
        assert_eq!(p.ids, [1, 5, 2, 1, 2, 0]);
        assert_eq!(p.mask, [1, 1, 1, 1, 1, 0]);

        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 300).collect();
        let batches = length_buckets(&lengths, 8, 1, true);
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(batches, length_buckets(&lengths, 8, 1, true));
        assert_ne!(batches, length_buckets(&lengths, 8, 2, true));
        // Bucketing reduces padding compared with random batches.
        let waste = |bs: &[Vec<usize>]| -> usize {
            bs.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len()).sum()
        };
        let plain = length_buckets(&lengths, 8, 1, false);
        assert!(waste(&batches) * 10 < waste(&plain) * 8, "{} vs {}", waste(&batches), waste(&plain));
    }
}
