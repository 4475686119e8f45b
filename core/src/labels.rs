//! The label space: the 25 HCUP-CCS acute-care phenotypes of the MIMIC-III benchmark
//! (Harutyunyan et al. 2019), in alphabetical order of their official names.
//!
//! Contract: index `i` of every probability vector, logit vector and [`LabelSet`] bit in this
//! project is `PHENOTYPES[i]`. The order never changes without changing [`LabelSpace::hash`],
//! which every persisted format records.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of phenotypes (labels).
pub const NUM_LABELS: usize = 25;

/// One phenotype and its spellings. This table is the only place in the project that spells a
/// phenotype: every reader accepts any of the three spellings ([`LabelSpace::parse`]), and
/// writers pick one by purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phenotype {
    /// Official name, exactly as in `hcup_ccs_2015_definitions.yaml`. Defines the label order,
    /// [`LabelSpace::hash`], and the names of bundle manifests and `ckd-edge predict` output.
    pub name: &'static str,
    /// The CKD-EHR authors' spelling: their instruction's label list, their `output` fields and
    /// the keys of their soft-label files (`hands_name_*.json`). Written into the JSONL
    /// `output` and instruction ([`crate::jsonl`]) and the authors' soft-label format ([`crate::authors_soft_labels`]).
    pub authors: &'static str,
    /// This project's short name (what `output` fields held before the authors' spellings were
    /// written; still read). Used in rendered knowledge clauses and report tables.
    pub short: &'static str,
    /// `type: "chronic"` in the HCUP-CCS benchmark definitions (`false` = "acute").
    pub chronic: bool,
}

macro_rules! ph {
    ($name:expr, $authors:expr, $short:expr, $chronic:expr) => {
        Phenotype { name: $name, authors: $authors, short: $short, chronic: $chronic }
    };
}

/// The 25 phenotypes in label order (alphabetical by official name).
pub const PHENOTYPES: [Phenotype; NUM_LABELS] = [
    ph!(
        "Acute and unspecified renal failure",
        "Acute and unspecified renal failure",
        "Acute and unspecified renal failure",
        false
    ),
    ph!("Acute cerebrovascular disease", "Acute cerebrovascular disease", "Acute cerebrovascular disease", false),
    ph!("Acute myocardial infarction", "Acute myocardial infarction", "Acute myocardial infarction", false),
    ph!("Cardiac dysrhythmias", "Cardiac dysrhythmias", "Cardiac dysrhythmias", true),
    ph!("Chronic kidney disease", "Chronic kidney disease", "Chronic kidney disease", true),
    ph!(
        "Chronic obstructive pulmonary disease and bronchiectasis",
        "Chronic obstructive pulmonary disease",
        "Chronic obstructive pulmonary disease",
        true
    ),
    ph!(
        "Complications of surgical procedures or medical care",
        "Complications of surgical/medical care",
        "Complications of surgical procedures or medical care",
        false
    ),
    ph!("Conduction disorders", "Conduction disorders", "Conduction disorders", true),
    ph!(
        "Congestive heart failure; nonhypertensive",
        "Congestive heart failure; nonhypertensive",
        "Congestive heart failure",
        false
    ),
    ph!(
        "Coronary atherosclerosis and other heart disease",
        "Coronary atherosclerosis and related",
        "Coronary atherosclerosis and other heart disease",
        true
    ),
    ph!(
        "Diabetes mellitus with complications",
        "Diabetes mellitus with complications",
        "Diabetes mellitus with complications",
        true
    ),
    ph!(
        "Diabetes mellitus without complication",
        "Diabetes mellitus without complication",
        "Diabetes mellitus without complication",
        true
    ),
    ph!("Disorders of lipid metabolism", "Disorders of lipid metabolism", "Disorders of lipid metabolism", true),
    ph!("Essential hypertension", "Essential hypertension", "Essential hypertension", true),
    ph!("Fluid and electrolyte disorders", "Fluid and electrolyte disorders", "Fluid and electrolyte disorders", false),
    ph!("Gastrointestinal hemorrhage", "Gastrointestinal hemorrhage", "Gastrointestinal hemorrhage", false),
    ph!(
        "Hypertension with complications and secondary hypertension",
        "Hypertension with complications",
        "Hypertension with complications",
        true
    ),
    ph!("Other liver diseases", "Other liver diseases", "Other liver diseases", false),
    ph!("Other lower respiratory disease", "Other lower respiratory disease", "Other lower respiratory disease", false),
    ph!("Other upper respiratory disease", "Other upper respiratory disease", "Other upper respiratory disease", false),
    ph!(
        "Pleurisy; pneumothorax; pulmonary collapse",
        "Pleurisy; pneumothorax; pulmonary collapse",
        "Pleurisy; pneumothorax; pulmonary collapse",
        false
    ),
    ph!(
        "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
        "Pneumonia",
        "Pneumonia",
        false
    ),
    ph!(
        "Respiratory failure; insufficiency; arrest (adult)",
        "Respiratory failure; insufficiency; arrest",
        "Respiratory failure; insufficiency; arrest",
        false
    ),
    ph!("Septicemia (except in labor)", "Septicemia (except in labor)", "Septicemia", false),
    ph!("Shock", "Shock", "Shock", false),
];

/// Index of a phenotype in label order (`0..NUM_LABELS`).
pub type Label = u8;

/// Error parsing a phenotype name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown phenotype name {0:?} (expected one of the 25 HCUP-CCS benchmark phenotypes: official name, \
     the CKD-EHR authors' spelling, or this project's short name)"
)]
pub struct UnknownPhenotype(pub String);

/// The label space. Zero-sized: there is one label space, but persisted formats record its
/// [`hash`](LabelSpace::hash) so that a file made for another label order is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelSpace;

impl LabelSpace {
    /// Number of labels.
    pub const fn len(&self) -> usize {
        NUM_LABELS
    }

    /// Always `false`; present for API symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Official name of label `i`. Panics if `i >= NUM_LABELS` (a programming error).
    pub fn name(&self, i: usize) -> &'static str {
        PHENOTYPES[i].name
    }

    /// Official names in label order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        PHENOTYPES.iter().map(|p| p.name)
    }

    /// The CKD-EHR authors' spellings in label order.
    pub fn authors_names(&self) -> impl Iterator<Item = &'static str> {
        PHENOTYPES.iter().map(|p| p.authors)
    }

    /// Parses any spelling of [`Phenotype`]: official, the authors', or this project's short name
    /// (exact, case-sensitive match after trimming whitespace).
    pub fn parse(&self, name: &str) -> Result<Label, UnknownPhenotype> {
        let n = name.trim();
        PHENOTYPES
            .iter()
            .position(|p| p.name == n || p.authors == n || p.short == n)
            .map(|i| i as Label)
            .ok_or_else(|| UnknownPhenotype(String::from(n)))
    }

    /// Stable 64-bit hash of the label space: the first 8 bytes (little endian) of
    /// SHA-256 over the official names in order, each followed by `\n`.
    pub fn hash(&self) -> u64 {
        let mut h = Sha256::new();
        for p in PHENOTYPES.iter() {
            h.update(p.name.as_bytes());
            h.update(b"\n");
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }
}

/// A set of labels as a bit mask (bit `i` = label `i`). Fits the 25 labels in a `u32`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelSet(pub u32);

impl LabelSet {
    /// The empty set.
    pub const EMPTY: LabelSet = LabelSet(0);

    /// Inserts label `l` (ignored if `l >= NUM_LABELS`; callers pass labels from [`LabelSpace`]).
    pub fn insert(&mut self, l: Label) {
        if (l as usize) < NUM_LABELS {
            self.0 |= 1 << l;
        }
    }

    /// Removes label `l`.
    pub fn remove(&mut self, l: Label) {
        if (l as usize) < NUM_LABELS {
            self.0 &= !(1 << l);
        }
    }

    /// Whether label `l` is in the set.
    pub fn contains(&self, l: Label) -> bool {
        (l as usize) < NUM_LABELS && self.0 & (1 << l) != 0
    }

    /// Number of labels in the set.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Labels in increasing (label) order.
    pub fn iter(&self) -> impl Iterator<Item = Label> + '_ {
        (0..NUM_LABELS as u8).filter(move |&l| self.contains(l))
    }

    /// Dense 0/1 vector of length [`NUM_LABELS`].
    pub fn to_dense(&self) -> [f32; NUM_LABELS] {
        let mut v = [0f32; NUM_LABELS];
        for l in self.iter() {
            v[l as usize] = 1.0;
        }
        v
    }

    /// Builds a set from an iterator of labels.
    pub fn from_labels<I: IntoIterator<Item = Label>>(it: I) -> Self {
        let mut s = LabelSet::EMPTY;
        for l in it {
            s.insert(l);
        }
        s
    }

    /// Official names of the labels in label order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(|l| PHENOTYPES[l as usize].name).collect()
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_unique() {
        for w in PHENOTYPES.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
    }

    /// Every spelling in use, typed here from its source (not derived from `PHENOTYPES`), in
    /// label order: the official HCUP-CCS names (DESIGN.md's list).
    const OFFICIAL: [&str; NUM_LABELS] = [
        "Acute and unspecified renal failure",
        "Acute cerebrovascular disease",
        "Acute myocardial infarction",
        "Cardiac dysrhythmias",
        "Chronic kidney disease",
        "Chronic obstructive pulmonary disease and bronchiectasis",
        "Complications of surgical procedures or medical care",
        "Conduction disorders",
        "Congestive heart failure; nonhypertensive",
        "Coronary atherosclerosis and other heart disease",
        "Diabetes mellitus with complications",
        "Diabetes mellitus without complication",
        "Disorders of lipid metabolism",
        "Essential hypertension",
        "Fluid and electrolyte disorders",
        "Gastrointestinal hemorrhage",
        "Hypertension with complications and secondary hypertension",
        "Other liver diseases",
        "Other lower respiratory disease",
        "Other upper respiratory disease",
        "Pleurisy; pneumothorax; pulmonary collapse",
        "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
        "Respiratory failure; insufficiency; arrest (adult)",
        "Septicemia (except in labor)",
        "Shock",
    ];

    /// The authors' label list, as their instruction line prints it.
    const AUTHORS_LIST: &str = "Acute and unspecified renal failure, Acute cerebrovascular disease, Acute myocardial \
        infarction, Cardiac dysrhythmias, Chronic kidney disease, Chronic obstructive pulmonary disease, Complications \
        of surgical/medical care, Conduction disorders, Congestive heart failure; nonhypertensive, Coronary \
        atherosclerosis and related, Diabetes mellitus with complications, Diabetes mellitus without complication, \
        Disorders of lipid metabolism, Essential hypertension, Fluid and electrolyte disorders, Gastrointestinal \
        hemorrhage, Hypertension with complications, Other liver diseases, Other lower respiratory disease, Other \
        upper respiratory disease, Pleurisy; pneumothorax; pulmonary collapse, Pneumonia, Respiratory failure; \
        insufficiency; arrest, Septicemia (except in labor), Shock";

    /// The short names this project wrote into `output` before it wrote the authors' spellings.
    const EARLIER_SHORT: [&str; NUM_LABELS] = [
        "Acute and unspecified renal failure",
        "Acute cerebrovascular disease",
        "Acute myocardial infarction",
        "Cardiac dysrhythmias",
        "Chronic kidney disease",
        "Chronic obstructive pulmonary disease",
        "Complications of surgical procedures or medical care",
        "Conduction disorders",
        "Congestive heart failure",
        "Coronary atherosclerosis and other heart disease",
        "Diabetes mellitus with complications",
        "Diabetes mellitus without complication",
        "Disorders of lipid metabolism",
        "Essential hypertension",
        "Fluid and electrolyte disorders",
        "Gastrointestinal hemorrhage",
        "Hypertension with complications",
        "Other liver diseases",
        "Other lower respiratory disease",
        "Other upper respiratory disease",
        "Pleurisy; pneumothorax; pulmonary collapse",
        "Pneumonia",
        "Respiratory failure; insufficiency; arrest",
        "Septicemia",
        "Shock",
    ];

    #[test]
    fn every_spelling_of_every_label_parses_to_it() {
        let ls = LabelSpace;
        let authors: Vec<&str> = AUTHORS_LIST.split(", ").collect();
        assert_eq!(authors.len(), NUM_LABELS);
        for i in 0..NUM_LABELS {
            for (what, n) in [("official", OFFICIAL[i]), ("authors'", authors[i]), ("earlier short", EARLIER_SHORT[i])]
            {
                assert_eq!(ls.parse(n), Ok(i as u8), "{what} spelling {n:?} of label {i}");
            }
            assert_eq!(PHENOTYPES[i].name, OFFICIAL[i]);
            assert_eq!(PHENOTYPES[i].authors, authors[i]);
            assert_eq!(PHENOTYPES[i].short, EARLIER_SHORT[i]);
        }
        assert_eq!(ls.authors_names().collect::<Vec<_>>(), authors);
        assert_eq!(ls.parse(" Pneumonia "), Ok(21));
        // The spellings the authors' validation file used, which this project refused before.
        assert_eq!(ls.parse("Complications of surgical/medical care"), Ok(6));
        assert_eq!(ls.parse("Coronary atherosclerosis and related"), Ok(9));
        for bad in ["Shock!", "shock", "Complications of surgical", "Septicemia (except in labor"] {
            assert_eq!(ls.parse(bad), Err(UnknownPhenotype(bad.into())), "{bad}");
        }
    }

    #[test]
    fn no_spelling_names_two_labels() {
        for (i, a) in PHENOTYPES.iter().enumerate() {
            for (j, b) in PHENOTYPES.iter().enumerate().filter(|(j, _)| *j != i) {
                for s in [a.name, a.authors, a.short] {
                    assert!(s != b.name && s != b.authors && s != b.short, "{s:?} spells labels {i} and {j}");
                }
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // Golden value, computed independently with Python:
        // sha256("".join(n + "\n" for n in names)).digest()[:8] read little-endian.
        assert_eq!(LabelSpace.hash(), LabelSpace.hash());
        assert_eq!(format!("{:016x}", LabelSpace.hash()), GOLDEN_HASH);
    }
    const GOLDEN_HASH: &str = "7b33b3c04d76b51b";

    #[test]
    fn labelset_ops() {
        let mut s = LabelSet::EMPTY;
        s.insert(3);
        s.insert(24);
        s.insert(3);
        s.insert(25); // out of range: ignored
        assert_eq!(s.len(), 2);
        assert!(s.contains(24) && !s.contains(25));
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 24]);
        s.remove(3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [24]);
        assert_eq!(s.to_dense()[24], 1.0);
    }
}
