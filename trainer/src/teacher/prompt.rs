//! The teacher's prompts: the Qwen2.5 ChatML template (the system prompt, one user turn of
//! instruction and visit text, the assistant answer of a training sequence), its tokenization
//! within a token budget ([`PromptEncoder`]: prompts for features and labels, prompt + answer
//! for fine-tuning, each token mapped back to its byte span in the input), and the right-padding
//! of token rows into a batch ([`pad_rows`]).

use candle_core::{Device, Tensor};
use ckd_core::visit::Sample;

use super::{Result, TeacherError};
use crate::models::qwen2::{self, IM_END, IM_START};

/// The default system prompt of the Qwen2.5 chat template.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// A rendered chat prompt and where the record's `input` lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The full prompt, ending with `<|im_start|>assistant\n` (generation prompt).
    pub text: String,
    /// Byte range of `input` inside `text` (`text[input_range] == input`), so token offsets of the
    /// prompt map back to the input text.
    pub input_range: std::ops::Range<usize>,
}

/// Renders the Qwen2.5 ChatML prompt with the default system prompt for one user turn whose content
/// is `instruction + "\n" + input` (as the CKD-EHR authors prompted):
/// `<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n`.
pub fn chat_prompt(instruction: &str, input: &str) -> ChatPrompt {
    let head = format!("{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{instruction}\n");
    let start = head.len();
    let text = format!("{head}{input}{IM_END}\n{IM_START}assistant\n");
    ChatPrompt { text, input_range: start..start + input.len() }
}

/// The assistant completion that follows [`chat_prompt`] in a training sequence: `{output}<|im_end|>\n`
/// (as the chat template renders an assistant turn).
pub fn chat_answer(output: &str) -> String {
    format!("{output}{IM_END}\n")
}

/// One tokenized prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Token ids of the chat prompt (ends with `<|im_start|>assistant\n`).
    pub ids: Vec<u32>,
    /// Per token, its byte span in the sample's input text, or `None` for tokens outside it
    /// (template, instruction, special tokens).
    pub input_spans: Vec<Option<(usize, usize)>>,
    /// Whether the input was cut to fit `max_len`.
    pub truncated: bool,
}

/// Tokenizes CKD-EHR chat prompts (and answers, for fine-tuning) with the teacher's tokenizer.
pub struct PromptEncoder {
    tok: tokenizers::Tokenizer,
    max_len: usize,
    instruction: String,
}

/// The instruction of a sample's prompt: its raw JSONL instruction when present, else `default`.
pub fn instruction_of<'a>(sample: &'a Sample, default: &'a str) -> &'a str {
    sample.raw.as_ref().map_or(default, |r| r.instruction.as_str())
}

impl PromptEncoder {
    /// `max_len` bounds the prompt (plus answer, in [`Self::encode_sft`]) in tokens. Samples
    /// without an instruction of their own get the authors' (`ckd_core::jsonl::INSTRUCTION`);
    /// see [`Self::with_instruction`].
    pub fn new(mut tok: tokenizers::Tokenizer, max_len: usize) -> Result<Self> {
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        Ok(Self { tok, max_len, instruction: ckd_core::jsonl::INSTRUCTION.to_string() })
    }

    /// The same encoder with another instruction for samples without their own (a v1 teacher's).
    pub fn with_instruction(mut self, instruction: &str) -> Self {
        self.instruction = instruction.to_string();
        self
    }

    /// The instruction used for samples without their own.
    pub fn default_instruction(&self) -> &str {
        &self.instruction
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// Maximum tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token id of `<|endoftext|>` (used as padding; masked everywhere).
    pub fn pad_id(&self) -> Result<u32> {
        self.tok
            .token_to_id(qwen2::ENDOFTEXT)
            .ok_or_else(|| TeacherError::Tokenizer(format!("the tokenizer has no {}", qwen2::ENDOFTEXT)))
    }

    /// The sample's instruction (its raw JSONL instruction when present, else
    /// [`Self::default_instruction`]).
    pub fn instruction<'a>(&'a self, sample: &'a Sample) -> &'a str {
        instruction_of(sample, &self.instruction)
    }

    /// Tokenizes the chat prompt of `input` within `budget` tokens: when longer, tokens are
    /// dropped from the end of the input (the template after it is kept, so the last prompt
    /// token is always `\n` after `assistant`).
    fn encode_prompt(&self, instruction: &str, input: &str, budget: usize) -> Result<Prompt> {
        let p = chat_prompt(instruction, input);
        let enc = self.tok.encode(p.text.as_str(), false).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let offsets = enc.get_offsets();
        let r = &p.input_range;
        let spans: Vec<Option<(usize, usize)>> = offsets
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(r.start), b.min(r.end));
                (a < b).then(|| (a - r.start, b - r.start))
            })
            .collect();
        if ids.len() <= budget {
            return Ok(Prompt { ids: ids.to_vec(), input_spans: spans, truncated: false });
        }
        // Tokens after the input (the template's tail) are kept whole.
        let tail_start = offsets.iter().position(|&(a, _)| a >= r.end).unwrap_or(ids.len());
        let tail = ids.len() - tail_start;
        let first_input = spans.iter().position(Option::is_some).unwrap_or(tail_start);
        if budget < first_input + tail + 1 {
            return Err(TeacherError::Invalid(format!(
                "max length {budget} cannot hold the prompt template ({} tokens) and any input",
                first_input + tail
            )));
        }
        let keep = budget - tail;
        let mut out_ids = ids[..keep].to_vec();
        out_ids.extend_from_slice(&ids[tail_start..]);
        let mut out_spans = spans[..keep].to_vec();
        out_spans.extend_from_slice(&spans[tail_start..]);
        Ok(Prompt { ids: out_ids, input_spans: out_spans, truncated: true })
    }

    /// The prompt of a sample for labelling / features.
    pub fn encode(&self, sample: &Sample) -> Result<Prompt> {
        self.encode_prompt(self.instruction(sample), &sample.text(), self.max_len)
    }

    /// A fine-tuning sequence: prompt ids followed by the answer's ids (`{output}<|im_end|>\n`),
    /// and the index of the first answer token. The prompt is cut so that the whole answer fits.
    pub fn encode_sft(&self, sample: &Sample) -> Result<(Vec<u32>, usize, bool)> {
        let output = match &sample.raw {
            Some(r) => r.output.clone(),
            None => ckd_core::jsonl::render_output(sample.labels),
        };
        let ans = self
            .tok
            .encode(chat_answer(&output).as_str(), false)
            .map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        let ans = ans.get_ids();
        if ans.len() + 8 > self.max_len {
            return Err(TeacherError::Invalid(format!(
                "sample {}: the answer alone takes {} tokens of max length {}",
                sample.id,
                ans.len(),
                self.max_len
            )));
        }
        let p = self.encode_prompt(self.instruction(sample), &sample.text(), self.max_len - ans.len())?;
        let start = p.ids.len();
        let mut ids = p.ids;
        ids.extend_from_slice(ans);
        Ok((ids, start, p.truncated))
    }
}

/// Right-pads rows with `pad`: ids [B, T] u32 and mask [B, T] u32 (1 real, 0 pad).
pub fn pad_rows(rows: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if t == 0 {
        return Err(TeacherError::Invalid("empty batch".into()));
    }
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len() * t);
    for r in rows {
        ids.extend_from_slice(r);
        ids.extend(std::iter::repeat_n(pad, t - r.len()));
        mask.extend(std::iter::repeat_n(1u32, r.len()));
        mask.extend(std::iter::repeat_n(0u32, t - r.len()));
    }
    Ok((Tensor::from_vec(ids, (rows.len(), t), device)?, Tensor::from_vec(mask, (rows.len(), t), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_golden() {
        let instruction = "Predict the diseases of the next visit.";
        let input = "The patient-acquired disease is {Acute renal failure}.";
        let p = chat_prompt(instruction, input);
        let golden =
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
                      <|im_start|>user\nPredict the diseases of the next visit.\n\
                      The patient-acquired disease is {Acute renal failure}.<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(p.text, golden);
        assert_eq!(&p.text[p.input_range.clone()], input);
        assert_eq!(p.input_range.start, golden.find("The patient").unwrap());
        assert_eq!(
            chat_answer("Disease that the patient may acquire: None"),
            "Disease that the patient may acquire: None<|im_end|>\n"
        );
    }
}
