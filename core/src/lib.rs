//! ckd-core: plain data shared by the ckd trainer and the edge runtime.
//!
//! Everything both sides must agree on lives here, so training and serving cannot drift apart:
//! the label space ([`labels`]), ICD-9 mappings ([`icd`]), visits and samples and their text
//! rendering ([`visit`]), knowledge clauses ([`knowledge`]), the CKD-EHR JSONL format
//! ([`jsonl`]) and the authors' soft-label files ([`authors_soft_labels`]), the binary sample file ([`format`]), evaluation metrics ([`metrics`]) and the
//! device wire protocol ([`wire`]).
//!
//! No ML dependencies; builds `no_std` with `alloc` when the default `std` feature is off.
//! No function here reads or writes files: callers pass bytes and slices.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod authors_soft_labels;
pub mod bootstrap;
pub mod bundle;
pub mod error_chain;
pub mod evidence;
pub mod format;
pub mod icd;
pub mod jsonl;
pub mod knowledge;
pub mod labels;
pub mod metrics;
pub mod rng;
pub mod split;
pub mod tables;
pub mod visit;
pub mod wire;

pub use labels::{Label, LabelSet, LabelSpace, NUM_LABELS, PHENOTYPES};
pub use visit::{Coded, Sample, Visit};
