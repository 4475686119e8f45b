//! Why a prediction: the occlusion of each concept of a visit.
//!
//! A concept is one diagnosis, drug, procedure or knowledge clause, with the byte spans of
//! `ckd_core::visit` (the units the teacher's evidence and the student's attention targets
//! use). Occluding concept `i` re-renders the visit without it ([`Rendered::without`]) and runs
//! the model on that text; the concept's effect on a phenotype is the probability with it minus
//! the probability without it. All texts run as one batch, so an explanation costs one
//! prediction per concept plus one.
//!
//! Occlusion is faithful by construction (it measures what the model does when the concept is
//! gone), not cheap. A concept past the bundle's maximum length has effect exactly 0: the
//! tokens the model sees do not change without it.

use ckd_core::visit::{parse_spans, Field, Rendered, Visit};
use ckd_core::NUM_LABELS;

use crate::{EdgeError, Engine, Prediction};

/// One concept's effect on a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptEffect {
    /// The field the concept belongs to.
    pub field: Field,
    /// Byte offset of its first byte in [`Occlusion::text`].
    pub start: usize,
    /// Byte offset one past its last byte.
    pub end: usize,
    /// Per phenotype, in label order: probability with the concept minus probability without
    /// it. Positive: the concept raises that phenotype's probability.
    pub effect: [f32; NUM_LABELS],
}

/// A prediction with the occlusion of each of its concepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Occlusion {
    /// The text the model read (the rendered visit, or the given text).
    pub text: String,
    /// The prediction on the whole text.
    pub prediction: Prediction,
    /// One entry per concept, in text order.
    pub concepts: Vec<ConceptEffect>,
}

impl Occlusion {
    /// The text of concept `i`.
    pub fn concept_text(&self, i: usize) -> Option<&str> {
        self.concepts.get(i).and_then(|c| self.text.get(c.start..c.end))
    }

    /// Concept indices ordered by their effect on `label`, largest first (ties in text order).
    pub fn ranked(&self, label: u8) -> Vec<usize> {
        let l = usize::from(label).min(NUM_LABELS - 1);
        let mut order: Vec<usize> = (0..self.concepts.len()).collect();
        order.sort_by(|&a, &b| self.concepts[b].effect[l].total_cmp(&self.concepts[a].effect[l]).then(a.cmp(&b)));
        order
    }
}

impl Engine {
    /// Predicts for a visit (rendered as [`Engine::predict`] renders it) and occludes each of its
    /// concepts. Errors as [`Engine::predict`].
    pub fn occlude(&self, visit: &Visit) -> Result<Occlusion, EdgeError> {
        self.occlude_rendered(self.render(visit)?)
    }

    /// Predicts for a text in the CKD-EHR layout and occludes each of its concepts, found by
    /// [`parse_spans`] (a title containing `, ` counts as two concepts there). A text not in the
    /// layout is [`EdgeError::Layout`].
    pub fn occlude_text(&self, text: &str) -> Result<Occlusion, EdgeError> {
        if text.len() > crate::MAX_INPUT_BYTES {
            return Err(EdgeError::InputTooLong { index: 0, bytes: text.len(), max: crate::MAX_INPUT_BYTES });
        }
        self.occlude_rendered(parse_spans(text).ok_or(EdgeError::Layout)?)
    }

    fn occlude_rendered(&self, rendered: Rendered) -> Result<Occlusion, EdgeError> {
        let n = rendered.concepts.len();
        let without: Vec<String> =
            (0..n).map(|i| rendered.without(i).map(|r| r.text)).collect::<Option<_>>().ok_or(EdgeError::Layout)?;
        let mut texts: Vec<&str> = Vec::with_capacity(n + 1);
        texts.push(&rendered.text);
        texts.extend(without.iter().map(String::as_str));
        let mut preds = self.predict_batch(&texts)?.into_iter();
        let prediction = preds.next().ok_or_else(|| EdgeError::Model("no prediction for the whole text".into()))?;
        let concepts = rendered
            .concepts
            .iter()
            .zip(preds)
            .map(|(c, p)| ConceptEffect {
                field: c.field,
                start: c.start,
                end: c.end,
                effect: core::array::from_fn(|l| prediction.probs[l] - p.probs[l]),
            })
            .collect();
        Ok(Occlusion { text: rendered.text, prediction, concepts })
    }
}
