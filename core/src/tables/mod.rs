//! Committed, generated lookup tables.

/// HCUP-CCS benchmark definitions: ICD-9 diagnosis code -> label.
pub mod ccs;
/// ICD-9-CM three-digit category titles.
pub mod icd9_categories;
