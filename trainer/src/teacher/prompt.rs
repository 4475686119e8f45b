//! The Qwen2.5 ChatML prompt of the teacher: the system prompt, one user turn (instruction and
//! the visit text) and the assistant answer of a training sequence.

use crate::models::qwen2::{IM_END, IM_START};

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
