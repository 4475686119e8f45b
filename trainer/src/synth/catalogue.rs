//! The synthetic cohort's catalogues: label indices, the drugs, procedures and noise diagnoses
//! with their model parameters, each phenotype's ICD-9 codes, the diagnosis dictionary and the
//! administrative columns' value lists (real MIMIC-III values and titles).

use ckd_core::labels::NUM_LABELS;

// ---------------------------------------------------------------------------------------------
// Label indices (label order of `ckd_core::PHENOTYPES`; a test checks the names).

pub(super) const AKI: usize = 0;
pub(super) const STROKE: usize = 1;
pub(super) const AMI: usize = 2;
pub(super) const DYSRHYTHMIA: usize = 3;
pub(super) const CKD: usize = 4;
pub(super) const COPD: usize = 5;
pub(super) const COMPLICATION: usize = 6;
pub(super) const CONDUCTION: usize = 7;
pub(super) const CHF: usize = 8;
pub(super) const CAD: usize = 9;
pub(super) const DM_COMPLICATED: usize = 10;
pub(super) const DM: usize = 11;
pub(super) const LIPID: usize = 12;
pub(super) const HTN: usize = 13;
pub(super) const FLUID: usize = 14;
pub(super) const GI_BLEED: usize = 15;
pub(super) const HTN_COMPLICATED: usize = 16;
pub(super) const LIVER: usize = 17;
pub(super) const LOWER_RESP: usize = 18;
pub(super) const UPPER_RESP: usize = 19;
pub(super) const PLEURISY: usize = 20;
pub(super) const PNEUMONIA: usize = 21;
pub(super) const RESP_FAILURE: usize = 22;
pub(super) const SEPSIS: usize = 23;
pub(super) const SHOCK: usize = 24;

// ---------------------------------------------------------------------------------------------
// Catalogues.

/// A drug: its `PRESCRIPTIONS` columns and its model parameters.
pub(super) struct DrugDef {
    /// `DRUG` (the name the input text shows).
    pub(super) drug: &'static str,
    /// `DRUG_TYPE, DRUG_NAME_POE, DRUG_NAME_GENERIC, FORMULARY_DRUG_CD, GSN, NDC, PROD_STRENGTH,
    /// DOSE_VAL_RX, DOSE_UNIT_RX, FORM_VAL_DISP, FORM_UNIT_DISP, ROUTE` (one real MIMIC-III row).
    pub(super) rx: [&'static str; 12],
    /// `β_j`.
    pub(super) base: f64,
    /// `α_{j,d}`: (phenotype, rate).
    pub(super) given: &'static [(usize, f64)],
    /// `U_{j,d}`: (phenotype, next-visit logit change).
    pub(super) effect: &'static [(usize, f64)],
}

/// A procedure: its ICD-9 code and titles and its model parameters.
pub(super) struct ProcedureDef {
    pub(super) code: &'static str,
    pub(super) short: &'static str,
    pub(super) long: &'static str,
    pub(super) base: f64,
    pub(super) given: &'static [(usize, f64)],
    /// `R_{r,d}`.
    pub(super) effect: &'static [(usize, f64)],
}

/// A noise diagnosis code (its category has no benchmark phenotype): emission parameters only.
pub(super) struct NoiseDef {
    pub(super) code: &'static str,
    pub(super) base: f64,
    pub(super) given: &'static [(usize, f64)],
}

macro_rules! drug {
    ($drug:expr, [$($f:expr),* $(,)?], $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?],
     [$(($el:expr, $ew:expr)),* $(,)?]) => {
        DrugDef { drug: $drug, rx: [$($f),*], base: $base, given: &[$(($gl, $gp)),*],
                  effect: &[$(($el, $ew)),*] }
    };
}

macro_rules! procedure {
    ($code:expr, $short:expr, $long:expr, $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?],
     [$(($el:expr, $ew:expr)),* $(,)?]) => {
        ProcedureDef { code: $code, short: $short, long: $long, base: $base,
                       given: &[$(($gl, $gp)),*], effect: &[$(($el, $ew)),*] }
    };
}

macro_rules! noise {
    ($code:expr, $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?]) => {
        NoiseDef { code: $code, base: $base, given: &[$(($gl, $gp)),*] }
    };
}

#[rustfmt::skip]
pub(super) static DRUGS: &[DrugDef] = &[
    drug!("Furosemide", ["MAIN", "Furosemide", "Furosemide", "FURO40I", "008205", "00517570425", "40mg/4mL Vial", "40", "mg", "1", "VIAL", "IV"],
        0.04, [(CHF, 0.75), (FLUID, 0.2), (CKD, 0.3), (HTN_COMPLICATED, 0.25), (LIVER, 0.2), (PLEURISY, 0.15), (RESP_FAILURE, 0.1)], [(CHF, -0.6), (FLUID, 0.35), (AKI, 0.2), (PLEURISY, -0.2)]),
    drug!("Metoprolol Tartrate", ["MAIN", "Metoprolol Tartrate", "Metoprolol Tartrate", "METO25", "050631", "51079025520", "25mg Tablet", "12.5", "mg", "0.5", "TAB", "PO"],
        0.04, [(DYSRHYTHMIA, 0.5), (CAD, 0.35), (AMI, 0.6), (HTN, 0.2), (CHF, 0.2)], [(DYSRHYTHMIA, -0.5), (AMI, -0.5), (CONDUCTION, 0.3)]),
    drug!("Insulin", ["MAIN", "Insulin", "Insulin", "INSULIN", "027413", "0", "Dummy Pkg for POE pump and PHA SS ordering", "0", "UNIT", "0", "VIAL", "SC"],
        0.15, [(DM, 0.8), (DM_COMPLICATED, 0.9)], [(DM_COMPLICATED, -0.4)]),
    drug!("Vancomycin", ["MAIN", "", "", "VANC1F", "043952", "00338355248", "1g Frozen Bag", "1000", "mg", "1", "BAG", "IV"],
        0.04, [(SEPSIS, 0.65), (PNEUMONIA, 0.45), (COMPLICATION, 0.25)], [(SEPSIS, -0.5), (PNEUMONIA, -0.3), (AKI, 0.45)]),
    drug!("Piperacillin-Tazobactam", ["MAIN", "", "", "ZOSY4.5I", "021187", "00206885516", "4.5 g Vial", "4.5", "gm", "1", "VIAL", "IV"],
        0.02, [(SEPSIS, 0.45), (PNEUMONIA, 0.4)], [(PNEUMONIA, -0.4), (SEPSIS, -0.3), (AKI, 0.15)]),
    drug!("CeftriaXONE", ["MAIN", "", "", "CEFX1F", "059424", "00338500241", "1g Frozen Bag", "1", "g", "1", "BAG", "IV"],
        0.02, [(PNEUMONIA, 0.3), (SEPSIS, 0.1)], [(PNEUMONIA, -0.35)]),
    drug!("Levofloxacin", ["MAIN", "Levofloxacin", "Levofloxacin", "LEV250", "029927", "00045152010", "250mg Tablet", "250", "mg", "1", "TAB", "PO"],
        0.01, [(PNEUMONIA, 0.25), (COPD, 0.12)], [(PNEUMONIA, -0.3), (DYSRHYTHMIA, 0.2)]),
    drug!("Pantoprazole", ["MAIN", "Pantoprazole", "Pantoprazole", "PANT40", "027462", "00008084199", "40mg Tablet", "40", "mg", "1", "TAB", "PO"],
        0.18, [(GI_BLEED, 0.85), (LIVER, 0.2), (RESP_FAILURE, 0.3)], [(GI_BLEED, -0.6)]),
    drug!("Atorvastatin", ["MAIN", "Atorvastatin", "Atorvastatin", "ATOR20", "029968", "00071015623", "20mg Tab", "20", "mg", "1", "TAB", "PO"],
        0.02, [(LIPID, 0.6), (CAD, 0.45), (AMI, 0.7), (STROKE, 0.4)], [(AMI, -0.3), (STROKE, -0.3), (CAD, -0.2)]),
    drug!("Lisinopril", ["MAIN", "Lisinopril", "Lisinopril", "LISI20", "000391", "00172376010", "20mg Tablet", "20", "mg", "1", "TAB", "PO"],
        0.01, [(HTN, 0.35), (CHF, 0.25), (DM, 0.15), (HTN_COMPLICATED, 0.1)], [(HTN_COMPLICATED, -0.3), (CHF, -0.3), (AKI, 0.25), (FLUID, 0.15)]),
    drug!("Amlodipine", ["MAIN", "Amlodipine", "Amlodipine", "AMLO5", "016926", "51079045120", "5mg Tablet", "5", "mg", "1", "TAB", "PO"],
        0.01, [(HTN, 0.25), (HTN_COMPLICATED, 0.3)], [(HTN_COMPLICATED, -0.2), (HTN, -0.1)]),
    drug!("Albuterol 0.083% Neb Soln", ["MAIN", "Albuterol 0.083% Neb Soln", "Albuterol 0.083% Neb Soln", "ALBU3H", "005039", "49502069724", "0.083%;3mL Vial", "1", "NEB", "1", "VIAL", "IH"],
        0.04, [(COPD, 0.7), (LOWER_RESP, 0.4), (PNEUMONIA, 0.3), (RESP_FAILURE, 0.3)], [(RESP_FAILURE, -0.3), (LOWER_RESP, -0.3)]),
    drug!("Ipratropium Bromide Neb", ["MAIN", "Ipratropium Bromide Neb", "Ipratropium Bromide Neb", "IPRA2H", "021700", "00487980125", "2.5mL Vial", "1", "NEB", "1", "VIAL", "IH"],
        0.02, [(COPD, 0.55), (RESP_FAILURE, 0.2)], [(RESP_FAILURE, -0.25)]),
    drug!("Prednisone", ["MAIN", "Prednisone", "Prednisone", "PRED20", "006751", "00054872625", "20mg Tab", "30", "mg", "1.5", "TAB", "PO"],
        0.02, [(COPD, 0.35), (LOWER_RESP, 0.2), (UPPER_RESP, 0.1)], [(RESP_FAILURE, -0.3), (DM, 0.3), (PNEUMONIA, 0.2)]),
    drug!("Norepinephrine", ["MAIN", "", "", "LEVO4I", "028633", "00703115303", "4mg/4mL Amp", "8", "mg", "2", "AMP", "IV DRIP"],
        0.005, [(SHOCK, 0.8), (SEPSIS, 0.3)], [(AKI, 0.3), (DYSRHYTHMIA, 0.2)]),
    drug!("Vasopressin", ["MAIN", "", "", "VASO20I", "006612", "54569391600", "20U/ML VIAL", "100", "UNIT", "5", "ml", "IV DRIP"],
        0.0, [(SHOCK, 0.35)], []),
    drug!("Heparin", ["MAIN", "Heparin", "Heparin Sodium", "HEPA5I", "006549", "63323026201", "5000 Units / mL- 1mL Vial", "5000", "UNIT", "1", "mL", "SC"],
        0.3, [(AMI, 0.6), (DYSRHYTHMIA, 0.2), (STROKE, 0.2)], [(GI_BLEED, 0.35), (AMI, -0.3), (STROKE, -0.15)]),
    drug!("Warfarin", ["MAIN", "Warfarin", "Warfarin", "WARF2", "006561", "00056017075", "2mg Tab", "2", "mg", "1", "TAB", "PO"],
        0.01, [(DYSRHYTHMIA, 0.35), (STROKE, 0.1)], [(STROKE, -0.5), (GI_BLEED, 0.4)]),
    drug!("Potassium Chloride", ["MAIN", "Potassium Chloride", "Potassium Chloride", "KCL20P", "001262", "00456066270", "20mEq Packet", "40", "mEq", "2", "PKT", "PO"],
        0.25, [(FLUID, 0.6)], [(FLUID, -0.4)]),
    drug!("Magnesium Sulfate", ["MAIN", "Magnesium Sulfate", "Magnesium Sulfate", "MAG2PM", "016546", "00409672924", "2 g / 50 mL Premix Bag", "2", "gm", "1", "BAG", "IV"],
        0.18, [(FLUID, 0.3), (DYSRHYTHMIA, 0.2)], [(DYSRHYTHMIA, -0.15)]),
    drug!("Amiodarone", ["MAIN", "Amiodarone", "Amiodarone", "AMID200", "000266", "51079090620", "200 mg Tab", "100", "mg", "0.5", "TAB", "PO"],
        0.005, [(DYSRHYTHMIA, 0.3), (AMI, 0.1)], [(DYSRHYTHMIA, -0.4), (LIVER, 0.3), (LOWER_RESP, 0.3), (CONDUCTION, 0.2)]),
    drug!("Aspirin", ["MAIN", "Aspirin", "Aspirin", "ASA81", "004380", "00904404073", "81mg Tab", "162", "mg", "2", "TAB", "PO"],
        0.05, [(CAD, 0.6), (AMI, 0.85), (STROKE, 0.5)], [(AMI, -0.4), (STROKE, -0.3), (GI_BLEED, 0.3)]),
    drug!("Clopidogrel Bisulfate", ["MAIN", "Clopidogrel Bisulfate", "Clopidogrel Bisulfate", "CLOP75", "038164", "63653117103", "75mg Tab", "75", "mg", "1", "TAB", "PO"],
        0.005, [(AMI, 0.5), (CAD, 0.2)], [(AMI, -0.4), (GI_BLEED, 0.2)]),
    drug!("Lactulose", ["MAIN", "Lactulose", "Lactulose", "LACT30L", "003067", "00054848616", "20g/30mL Cup", "30", "mL", "1", "UDCUP", "PO"],
        0.005, [(LIVER, 0.55)], [(LIVER, -0.4), (FLUID, 0.2)]),
    drug!("Rifaximin", ["MAIN", "Rifaximin", "Rifaximin", "RIFA200", "041880", "65649030105", "200mg Tablet", "400", "mg", "2", "TAB", "PO"],
        0.0, [(LIVER, 0.25)], [(LIVER, -0.3)]),
    drug!("Octreotide Acetate", ["MAIN", "", "", "OCTR100I", "006585", "00078018101", "100mcg/mL-1mL", "600", "mcg", "6", "ml", "IV DRIP"],
        0.0, [(GI_BLEED, 0.25), (LIVER, 0.1)], [(GI_BLEED, -0.3)]),
    drug!("Spironolactone", ["MAIN", "Spironolactone", "Spironolactone", "SPIR25", "006817", "51079010320", "25mg Tablet", "25", "mg", "1", "TAB", "PO"],
        0.005, [(LIVER, 0.25), (CHF, 0.15)], [(FLUID, 0.3), (CHF, -0.2), (LIVER, -0.1)]),
    drug!("Sevelamer", ["MAIN", "Sevelamer", "Sevelamer HCl", "SEVE800", "046485", "58468002101", "800mg Tab", "800", "mg", "1", "TAB", "PO"],
        0.0, [(CKD, 0.3)], [(FLUID, -0.2)]),
    drug!("Sodium Bicarbonate", ["MAIN", "", "", "NABC50I", "001185", "00409662502", "50mEq Vial", "150", "mEq", "3", "VIAL", "IV"],
        0.01, [(AKI, 0.3), (CKD, 0.2), (FLUID, 0.2)], [(FLUID, -0.2)]),
    drug!("Propofol", ["MAIN", "Propofol", "Propofol", "PROP100IG", "016796", "63323026965", "1000mg/100mL Vial", "1000", "mg", "1", "VIAL", "IV DRIP"],
        0.01, [(RESP_FAILURE, 0.55)], []),
    drug!("Fentanyl Citrate", ["MAIN", "Fentanyl Citrate", "Fentanyl", "FENT2.550", "041385", "10019003783", "2.5mg/50mL Solution", "2.5", "mg", "1", "BAG", "IV DRIP"],
        0.08, [(RESP_FAILURE, 0.4), (COMPLICATION, 0.2)], []),
    drug!("Midazolam", ["MAIN", "Midazolam", "Midazolam", "MIDA100", "003780", "10019002710", "100mg/100mL NS", "100", "mg", "1", "BAG", "IV DRIP"],
        0.03, [(RESP_FAILURE, 0.3)], []),
    drug!("Diltiazem", ["MAIN", "", "", "DILT500I", "016424", "10019051002", "50mg/10mL Vial", "125", "mg", "2.5", "VIAL", "IV"],
        0.005, [(DYSRHYTHMIA, 0.2)], [(DYSRHYTHMIA, -0.3), (CHF, 0.15)]),
    drug!("Digoxin", ["MAIN", "Digoxin", "Digoxin", "DIGO125", "000018", "00173024256", "0.125MG TAB", "0.0625", "mg", "0.5", "TAB", "PO"],
        0.0, [(DYSRHYTHMIA, 0.08), (CHF, 0.08)], [(DYSRHYTHMIA, -0.2), (CONDUCTION, 0.2)]),
    drug!("Nitroglycerin", ["MAIN", "", "", "NTG100PM", "015361", "00409148402", "100MG/250 PM", "100", "mg", "1", "BTL", "IV DRIP"],
        0.01, [(CAD, 0.15), (AMI, 0.3), (CHF, 0.1)], []),
    drug!("HydrALAzine", ["MAIN", "HydrALAzine", "HydrALAzine", "HYDZ50", "000287", "00182055589", "50 mg Tab", "100", "mg", "2", "TAB", "PO"],
        0.01, [(HTN_COMPLICATED, 0.15), (HTN, 0.1)], [(HTN_COMPLICATED, -0.15)]),
    drug!("MetFORMIN (Glucophage)", ["MAIN", "MetFORMIN (Glucophage)", "MetFORMIN (Glucophage)", "METF500", "", "0", "500mg Tablet", "500", "mg", "1", "TAB", "PO"],
        0.0, [(DM, 0.2)], [(DM_COMPLICATED, -0.3), (FLUID, 0.1)]),
    drug!("Guaifenesin", ["MAIN", "Guaifenesin", "Guaifenesin", "GUAI10", "000759", "00121174410", "10mL Cup", "5-10", "mL", "0.5-1", "UDCUP", "PO"],
        0.03, [(UPPER_RESP, 0.3), (LOWER_RESP, 0.2), (PNEUMONIA, 0.1)], []),
    drug!("Fluticasone Propionate NASAL", ["MAIN", "Fluticasone Propionate NASAL", "Fluticasone Propionate NASAL", "FLUT16N", "018368", "00054327099", "16g NASAL SPRAY", "2", "SPRY", "0.02", "AERO", "NU"],
        0.01, [(UPPER_RESP, 0.3), (COPD, 0.1)], [(UPPER_RESP, -0.3)]),
    drug!("Tiotropium Bromide", ["MAIN", "Tiotropium Bromide", "Tiotropium Bromide", "TIOT", "050714", "00597007575", "18mcg Capsule-Inhalation Device", "1", "CAP", "1", "CAP", "IH"],
        0.0, [(COPD, 0.35)], [(RESP_FAILURE, -0.2)]),
    drug!("Metronidazole", ["MAIN", "Metronidazole", "Metronidazole", "METR500", "009592", "51079012620", "500MG TAB", "500", "mg", "1", "TAB", "PO"],
        0.02, [(COMPLICATION, 0.15), (SEPSIS, 0.1), (LIVER, 0.05)], [(SEPSIS, -0.1)]),
    drug!("Meropenem", ["MAIN", "", "", "MERO500I", "026488", "00310032520", "500mg Vial", "500", "mg", "1", "VIAL", "IV"],
        0.002, [(SEPSIS, 0.15)], [(SEPSIS, -0.2)]),
    drug!("Calcium Gluconate", ["MAIN", "Calcium Gluconate", "Calcium Gluconate", "CALG1I", "001356", "63323031110", "1g/10mL Vial", "2", "gm", "2", "VIAL", "IV"],
        0.1, [(FLUID, 0.2)], []),
    drug!("Morphine Sulfate", ["MAIN", "Morphine Sulfate", "Morphine Sulfate (Syringe)", "MORP2I", "004070", "00409176230", "2mg Syringe", "2", "mg", "1", "SYR", "IV"],
        0.2, [(AMI, 0.3), (COMPLICATION, 0.3)], []),
    drug!("Lorazepam", ["MAIN", "Lorazepam", "Lorazepam", "LORA5", "003757", "00904150061", "0.5mg Tablet", "0.5", "mg", "1", "TAB", "PO"],
        0.1, [], []),
    drug!("Pneumococcal Vac Polyvalent", ["MAIN", "Pneumococcal Vac Polyvalent", "PNEUMOcoccal Vac Polyvalent", "PNEU25I", "048548", "00006494300", "25mcg/0.5mL Vial", "0.5", "mL", "1", "VIAL", "IM"],
        0.06, [(COPD, 0.2)], [(PNEUMONIA, -0.2)]),
    drug!("Influenza Virus Vaccine", ["MAIN", "Influenza Virus Vaccine", "Influenza Virus Vaccine", "INFV", "064182", "58160087546", "0.5mL Syringe", "0.5", "mL", "1", "SYR", "IM"],
        0.06, [(COPD, 0.1)], [(PNEUMONIA, -0.1)]),
    drug!("Gabapentin", ["MAIN", "Gabapentin", "Gabapentin", "GABA100", "021413", "00904563161", "100mg Capsule", "100", "mg", "1", "CAP", "PO"],
        0.08, [(DM_COMPLICATED, 0.2)], []),
    drug!("Acetaminophen", ["MAIN", "Acetaminophen", "Acetaminophen", "ACET325", "004489", "00182844789", "325mg Tablet", "325-650", "mg", "1-2", "TAB", "PO"],
        0.55, [], []),
    drug!("Docusate Sodium", ["MAIN", "Docusate Sodium", "Docusate Sodium", "DOCU100", "003009", "00904224461", "100mg Capsule", "100", "mg", "1", "CAP", "PO"],
        0.45, [], []),
    drug!("Senna", ["MAIN", "Senna", "Senna", "SENN187", "019964", "00904516561", "1 Tablet", "1", "TAB", "1", "TAB", "PO"],
        0.35, [], []),
    drug!("Sodium Chloride 0.9%  Flush", ["MAIN", "Sodium Chloride 0.9%  Flush", "Sodium Chloride 0.9%  Flush", "NACLFLUSH", "", "0", "Syringe", "3", "mL", "0.6", "SYR", "IV"],
        0.6, [], []),
    drug!("Bisacodyl", ["MAIN", "Bisacodyl", "Bisacodyl", "BISA5", "002947", "00536338101", "5 mg Tab", "10", "mg", "2", "TAB", "PO"],
        0.25, [], []),
    drug!("Ondansetron", ["MAIN", "Ondansetron", "Ondansetron", "ONDAN4I", "061716", "00781305714", "2mg/mL-2mL", "8", "mg", "2", "VIAL", "IV"],
        0.3, [], []),
    drug!("D5W", ["BASE", "", "", "MORPD5W", "", "0", "100mL Bottle", "100", "mL", "1", "BTL", "IV DRIP"],
        0.35, [], []),
    drug!("0.9% Sodium Chloride", ["BASE", "", "", "NS500", "001210", "00338004903", "500mL Bag", "500", "mL", "500", "mL", "IV"],
        0.4, [], []),
    drug!("Famotidine", ["MAIN", "", "", "FAMO20PM", "021732", "00006353750", "20mg Premix Bag", "20", "mg", "1", "BAG", "IV"],
        0.08, [], []),
    drug!("Zolpidem Tartrate", ["MAIN", "Zolpidem Tartrate", "Zolpidem Tartrate", "AMBI5", "019187", "00024540134", "5mg Tab", "5", "mg", "1", "TAB", "PO"],
        0.08, [], []),
    drug!("Multivitamins", ["MAIN", "Multivitamins", "Multivitamins", "MVI", "002532", "00904053061", "1 Tablet", "1", "TAB", "1", "TAB", "PO"],
        0.1, [], []),
    drug!("Levothyroxine Sodium", ["MAIN", "Levothyroxine Sodium", "Levothyroxine Sodium", "LEVO75", "006650", "00074518211", "75mcg Tab", "75", "mcg", "1", "TAB", "PO"],
        0.1, [], []),
];

#[rustfmt::skip]
pub(super) static PROCEDURES: &[ProcedureDef] = &[
    procedure!("3893", "Venous cath NEC", "Venous catheterization, not elsewhere classified",
        0.06, [(SEPSIS, 0.3), (SHOCK, 0.4), (RESP_FAILURE, 0.2), (AKI, 0.1)], [(SEPSIS, 0.25)]),
    procedure!("9604", "Insert endotracheal tube", "Insertion of endotracheal tube",
        0.01, [(RESP_FAILURE, 0.5), (SHOCK, 0.2), (STROKE, 0.1)], [(PNEUMONIA, 0.2)]),
    procedure!("9671", "Cont inv mec ven <96 hrs", "Continuous invasive mechanical ventilation for less than 96 consecutive hours",
        0.005, [(RESP_FAILURE, 0.45)], [(PNEUMONIA, 0.15)]),
    procedure!("9672", "Cont inv mec ven 96+ hrs", "Continuous invasive mechanical ventilation for 96 consecutive hours or more",
        0.0, [(RESP_FAILURE, 0.3), (SEPSIS, 0.1)], [(PNEUMONIA, 0.4), (UPPER_RESP, 0.4), (COMPLICATION, 0.2)]),
    procedure!("311", "Temporary tracheostomy", "Temporary tracheostomy",
        0.0, [(RESP_FAILURE, 0.08)], [(UPPER_RESP, 0.8)]),
    procedure!("3961", "Extracorporeal circulat", "Extracorporeal circulation auxiliary to open heart surgery",
        0.005, [(CAD, 0.12), (AMI, 0.1)], [(COMPLICATION, 0.5), (AMI, -0.4), (DYSRHYTHMIA, 0.3)]),
    procedure!("3615", "1 int mam-cor art bypass", "Single internal mammary-coronary artery bypass",
        0.002, [(CAD, 0.08), (AMI, 0.08)], [(AMI, -0.3)]),
    procedure!("3722", "Left heart cardiac cath", "Left heart cardiac catheterization",
        0.005, [(AMI, 0.5), (CAD, 0.2)], []),
    procedure!("8856", "Coronar arteriogr-2 cath", "Coronary arteriography using two catheters",
        0.005, [(AMI, 0.45), (CAD, 0.2)], []),
    procedure!("3607", "Ins drug-elut coronry st", "Insertion of drug-eluting coronary artery stent(s)",
        0.0, [(AMI, 0.35), (CAD, 0.08)], [(AMI, -0.3), (COMPLICATION, 0.1)]),
    procedure!("0066", "PTCA", "Percutaneous transluminal coronary angioplasty [PTCA]",
        0.0, [(AMI, 0.35), (CAD, 0.05)], [(AMI, -0.2)]),
    procedure!("3995", "Hemodialysis", "Hemodialysis",
        0.0, [(CKD, 0.3), (AKI, 0.15)], [(FLUID, -0.4), (CKD, 0.4)]),
    procedure!("3895", "Ven cath renal dialysis", "Venous catheterization for renal dialysis",
        0.0, [(CKD, 0.08), (AKI, 0.12)], [(SEPSIS, 0.2)]),
    procedure!("4513", "Sm bowel endoscopy NEC", "Other endoscopy of small intestine",
        0.005, [(GI_BLEED, 0.45), (LIVER, 0.1)], [(GI_BLEED, -0.3)]),
    procedure!("4443", "Endosc control gast hem", "Endoscopic control of gastric or duodenal bleeding",
        0.0, [(GI_BLEED, 0.12)], [(GI_BLEED, -0.3)]),
    procedure!("4233", "Endosc destruc esoph les", "Endoscopic excision or destruction of lesion or tissue of esophagus",
        0.0, [(LIVER, 0.08), (GI_BLEED, 0.08)], [(GI_BLEED, -0.4)]),
    procedure!("5491", "Percu abdominal drainage", "Percutaneous abdominal drainage",
        0.0, [(LIVER, 0.35)], [(FLUID, 0.2), (SEPSIS, 0.1)]),
    procedure!("3491", "Thoracentesis", "Thoracentesis",
        0.0, [(PLEURISY, 0.35), (CHF, 0.03)], [(PLEURISY, -0.2)]),
    procedure!("3404", "Insert intercostal cath", "Insertion of intercostal catheter for drainage",
        0.002, [(PLEURISY, 0.2), (COMPLICATION, 0.05)], [(PLEURISY, -0.2)]),
    procedure!("9904", "Packed cell transfusion", "Transfusion of packed cells",
        0.04, [(GI_BLEED, 0.6), (COMPLICATION, 0.2), (SEPSIS, 0.1), (CKD, 0.1)], [(CHF, 0.2), (FLUID, 0.1)]),
    procedure!("9915", "Parent infus nutrit sub", "Parenteral infusion of concentrated nutritional substances",
        0.01, [(COMPLICATION, 0.1), (SEPSIS, 0.05)], [(SEPSIS, 0.3)]),
    procedure!("966", "Entral infus nutrit sub", "Enteral infusion of concentrated nutritional substances",
        0.01, [(STROKE, 0.2), (RESP_FAILURE, 0.2)], [(PNEUMONIA, 0.2)]),
    procedure!("3891", "Arterial catheterization", "Arterial catheterization",
        0.01, [(SHOCK, 0.25), (RESP_FAILURE, 0.1)], []),
    procedure!("8872", "Dx ultrasound-heart", "Diagnostic ultrasound of heart",
        0.01, [(CHF, 0.08), (AMI, 0.1)], []),
    procedure!("9962", "Heart countershock NEC", "Other electric countershock of heart",
        0.0, [(DYSRHYTHMIA, 0.06)], [(DYSRHYTHMIA, -0.3)]),
    procedure!("3783", "Int insert dual-cham dev", "Initial insertion of dual-chamber device",
        0.0, [(CONDUCTION, 0.25)], [(DYSRHYTHMIA, -0.1)]),
    procedure!("0017", "Infusion of vasopressor", "Infusion of vasopressor agent",
        0.0, [(SHOCK, 0.2)], []),
    procedure!("9390", "Non-invasive mech vent", "Non-invasive mechanical ventilation",
        0.0, [(COPD, 0.1), (CHF, 0.05), (RESP_FAILURE, 0.15)], []),
    procedure!("3324", "Closed bronchial biopsy", "Closed [endoscopic] biopsy of bronchus",
        0.0, [(LOWER_RESP, 0.15), (PNEUMONIA, 0.05)], []),
    procedure!("3761", "Pulsation balloon implan", "Implant of pulsation balloon",
        0.0, [(SHOCK, 0.1), (AMI, 0.05)], []),
    procedure!("9910", "Inject/inf thrombo agent", "Injection or infusion of thrombolytic agent",
        0.0, [(STROKE, 0.1)], [(STROKE, -0.2)]),
    procedure!("0331", "Spinal tap", "Spinal tap",
        0.01, [], []),
    procedure!("5110", "Endosc retro cholangiopa", "Endoscopic retrograde cholangiopancreatography [ERCP]",
        0.0, [(LIVER, 0.08)], []),
    procedure!("3897", "CV cath plcmt w guidance", "Central venous catheter placement with guidance",
        0.01, [(SEPSIS, 0.1), (SHOCK, 0.15)], [(SEPSIS, 0.15)]),
    procedure!("9955", "Vaccination NEC", "Prophylactic administration of vaccine against other diseases",
        0.02, [], []),
];
#[rustfmt::skip]
pub(super) static NOISE_DIAGNOSES: &[NoiseDef] = &[
    noise!("2449", 0.2, []),
    noise!("311", 0.16, []),
    noise!("3051", 0.16, [(COPD, 0.3)]),
    noise!("V5861", 0.02, [(DYSRHYTHMIA, 0.25), (STROKE, 0.05)]),
    noise!("V4986", 0.04, [(SHOCK, 0.1), (SEPSIS, 0.08)]),
    noise!("5990", 0.12, [(SEPSIS, 0.15)]),
    noise!("4241", 0.04, [(CHF, 0.08)]),
    noise!("2809", 0.04, [(GI_BLEED, 0.1)]),
    noise!("32723", 0.04, [(COPD, 0.05)]),
    noise!("27800", 0.06, [(DM, 0.1)]),
    noise!("2639", 0.04, [(LIVER, 0.1)]),
    noise!("2930", 0.04, []),
    noise!("30390", 0.03, [(LIVER, 0.35)]),
    noise!("29181", 0.01, [(LIVER, 0.1)]),
    noise!("73300", 0.06, []),
    noise!("71590", 0.04, []),
    noise!("2749", 0.03, [(CKD, 0.05)]),
    noise!("60000", 0.06, []),
    noise!("4168", 0.01, [(COPD, 0.08), (CHF, 0.05)]),
    noise!("4439", 0.03, [(DM_COMPLICATED, 0.1)]),
    noise!("5070", 0.01, [(STROKE, 0.05), (RESP_FAILURE, 0.05)]),
    noise!("E8788", 0.02, [(COMPLICATION, 0.25)]),
    noise!("E8497", 0.02, []),
    noise!("E9342", 0.0, [(GI_BLEED, 0.1)]),
    noise!("V103", 0.04, []),
    noise!("V5867", 0.0, [(DM_COMPLICATED, 0.3), (DM, 0.15)]),
    noise!("3572", 0.0, [(DM_COMPLICATED, 0.15)]),
];

/// Diagnosis codes each phenotype is written with (code, relative weight). Every code maps to its
/// phenotype in `ICD9_CCS`, and no category mixes phenotypes (see the module doc).
#[rustfmt::skip]
pub(super) static PHENOTYPE_CODES: [&[(&str, u32)]; NUM_LABELS] = [
    // 0 AKI
    &[("5849", 8), ("5845", 1), ("5848", 1), ("586", 1)],
    // 1 STROKE
    &[("43491", 4), ("431", 3), ("430", 1), ("4321", 1), ("43411", 2), ("43311", 1), ("436", 1)],
    // 2 AMI
    &[("41071", 6), ("41041", 2), ("41011", 1), ("41001", 1), ("41091", 1)],
    // 3 DYSRHYTHMIA
    &[("42731", 10), ("42732", 1), ("4271", 1), ("42789", 1), ("42761", 1), ("4270", 1)],
    // 4 CKD
    &[("5859", 3), ("5853", 3), ("5854", 2), ("5856", 3), ("5855", 1), ("5852", 1)],
    // 5 COPD
    &[("496", 6), ("49121", 2), ("4928", 2), ("49122", 1), ("49120", 1), ("4941", 1)],
    // 6 COMPLICATION
    &[("99811", 2), ("99859", 2), ("9971", 2), ("99731", 1), ("99812", 1), ("99702", 1), ("45829", 1), ("99883", 1), ("9982", 1)],
    // 7 CONDUCTION
    &[("4263", 2), ("4264", 2), ("4260", 1), ("42613", 1), ("42611", 1), ("42689", 1)],
    // 8 CHF
    &[("4280", 8), ("42833", 2), ("42823", 2), ("42832", 1), ("42822", 1), ("42843", 1)],
    // 9 CAD
    &[("41401", 10), ("412", 3), ("4139", 1), ("41400", 1), ("4111", 1)],
    // 10 DM_COMPLICATED
    &[("24940", 2), ("24960", 2), ("24980", 1), ("24950", 1), ("24901", 1), ("24910", 1)],
    // 11 DM
    &[("25000", 10), ("25001", 1)],
    // 12 LIPID
    &[("2724", 6), ("2720", 3), ("2722", 1), ("2721", 1)],
    // 13 HTN
    &[("4019", 12), ("4011", 1)],
    // 14 FLUID
    &[("2761", 4), ("2762", 3), ("2768", 2), ("2767", 2), ("2760", 1), ("27651", 1), ("2763", 1), ("27652", 1), ("2769", 1)],
    // 15 GI_BLEED
    &[("5789", 5), ("5780", 2), ("5781", 2), ("53100", 1), ("53240", 1), ("4560", 1)],
    // 16 HTN_COMPLICATED
    &[("40390", 4), ("40391", 4), ("40491", 1), ("40291", 1), ("40301", 1)],
    // 17 LIVER
    &[("5715", 3), ("5722", 2), ("5723", 2), ("5718", 1), ("570", 1), ("5738", 1)],
    // 18 LOWER_RESP
    &[("515", 2), ("514", 2), ("5168", 1), ("51631", 1)],
    // 19 UPPER_RESP
    &[("V440", 2), ("47830", 1), ("4779", 1), ("47819", 1), ("V550", 1), ("7847", 1)],
    // 20 PLEURISY
    &[("5119", 6), ("5110", 1), ("51189", 1), ("5109", 1)],
    // 21 PNEUMONIA
    &[("486", 8), ("4820", 1), ("48241", 1), ("48242", 1), ("4821", 1), ("4829", 1), ("485", 1), ("481", 1)],
    // 22 RESP_FAILURE
    &[("51881", 8), ("51882", 2), ("51884", 2), ("51883", 1), ("51851", 1), ("7991", 1), ("V4611", 1)],
    // 23 SEPSIS
    &[("0389", 8), ("99591", 3), ("99592", 4), ("03842", 1), ("03811", 1), ("03812", 1), ("0380", 1), ("03849", 1)],
    // 24 SHOCK
    &[("78552", 5), ("78551", 3), ("78559", 2), ("78550", 1)],
];

/// `D_ICD_DIAGNOSES` rows (code, short title, long title) of every code the generator can emit,
/// copied from the MIMIC-III v1.4 dictionary.
#[rustfmt::skip]
pub(super) static DX_DICT: &[(&str, &str, &str)] = &[
    ("5849", "Acute kidney failure NOS", "Acute kidney failure, unspecified"),
    ("5845", "Ac kidny fail, tubr necr", "Acute kidney failure with lesion of tubular necrosis"),
    ("5848", "Acute kidney failure NEC", "Acute kidney failure with other specified pathological lesion in kidney"),
    ("586", "Renal failure NOS", "Renal failure, unspecified"),
    ("43491", "Crbl art ocl NOS w infrc", "Cerebral artery occlusion, unspecified with cerebral infarction"),
    ("431", "Intracerebral hemorrhage", "Intracerebral hemorrhage"),
    ("430", "Subarachnoid hemorrhage", "Subarachnoid hemorrhage"),
    ("4321", "Subdural hemorrhage", "Subdural hemorrhage"),
    ("43411", "Crbl emblsm w infrct", "Cerebral embolism with cerebral infarction"),
    ("43311", "Ocl crtd art w infrct", "Occlusion and stenosis of carotid artery with cerebral infarction"),
    ("436", "Cva", "Acute, but ill-defined, cerebrovascular disease"),
    ("41071", "Subendo infarct, initial", "Subendocardial infarction, initial episode of care"),
    ("41041", "AMI inferior wall, init", "Acute myocardial infarction of other inferior wall, initial episode of care"),
    ("41011", "AMI anterior wall, init", "Acute myocardial infarction of other anterior wall, initial episode of care"),
    ("41001", "AMI anterolateral, init", "Acute myocardial infarction of anterolateral wall, initial episode of care"),
    ("41091", "AMI NOS, initial", "Acute myocardial infarction of unspecified site, initial episode of care"),
    ("42731", "Atrial fibrillation", "Atrial fibrillation"),
    ("42732", "Atrial flutter", "Atrial flutter"),
    ("4271", "Parox ventric tachycard", "Paroxysmal ventricular tachycardia"),
    ("42789", "Cardiac dysrhythmias NEC", "Other specified cardiac dysrhythmias"),
    ("42761", "Atrial premature beats", "Supraventricular premature beats"),
    ("4270", "Parox atrial tachycardia", "Paroxysmal supraventricular tachycardia"),
    ("5859", "Chronic kidney dis NOS", "Chronic kidney disease, unspecified"),
    ("5853", "Chr kidney dis stage III", "Chronic kidney disease, Stage III (moderate)"),
    ("5854", "Chr kidney dis stage IV", "Chronic kidney disease, Stage IV (severe)"),
    ("5856", "End stage renal disease", "End stage renal disease"),
    ("5855", "Chron kidney dis stage V", "Chronic kidney disease, Stage V"),
    ("5852", "Chro kidney dis stage II", "Chronic kidney disease, Stage II (mild)"),
    ("496", "Chr airway obstruct NEC", "Chronic airway obstruction, not elsewhere classified"),
    ("49121", "Obs chr bronc w(ac) exac", "Obstructive chronic bronchitis with (acute) exacerbation"),
    ("4928", "Emphysema NEC", "Other emphysema"),
    ("49122", "Obs chr bronc w ac bronc", "Obstructive chronic bronchitis with acute bronchitis"),
    ("49120", "Obst chr bronc w/o exac", "Obstructive chronic bronchitis without exacerbation"),
    ("4941", "Bronchiectasis w ac exac", "Bronchiectasis with acute exacerbation"),
    ("99811", "Hemorrhage complic proc", "Hemorrhage complicating a procedure"),
    ("99859", "Other postop infection", "Other postoperative infection"),
    ("9971", "Surg compl-heart", "Cardiac complications, not elsewhere classified"),
    ("99731", "Ventltr assoc pneumonia", "Ventilator associated pneumonia"),
    ("99812", "Hematoma complic proc", "Hematoma complicating a procedure"),
    ("99702", "Iatrogen CV infarc/hmrhg", "Iatrogenic cerebrovascular infarction or hemorrhage"),
    ("45829", "Iatrogenc hypotnsion NEC", "Other iatrogenic hypotension"),
    ("99883", "Non-healing surgcl wound", "Non-healing surgical wound"),
    ("9982", "Accidental op laceration", "Accidental puncture or laceration during a procedure, not elsewhere classified"),
    ("4263", "Left bb block NEC", "Other left bundle branch block"),
    ("4264", "Rt bundle branch block", "Right bundle branch block"),
    ("4260", "Atriovent block complete", "Atrioventricular block, complete"),
    ("42613", "Av block-2nd degree NEC", "Other second degree atrioventricular block"),
    ("42611", "Atriovent block-1st degr", "First degree atrioventricular block"),
    ("42689", "Conduction disorder NEC", "Other specified conduction disorders"),
    ("4280", "CHF NOS", "Congestive heart failure, unspecified"),
    ("42833", "Ac on chr diast hrt fail", "Acute on chronic diastolic heart failure"),
    ("42823", "Ac on chr syst hrt fail", "Acute on chronic systolic heart failure"),
    ("42832", "Chr diastolic hrt fail", "Chronic diastolic heart failure"),
    ("42822", "Chr systolic hrt failure", "Chronic systolic heart failure"),
    ("42843", "Ac/chr syst/dia hrt fail", "Acute on chronic combined systolic and diastolic heart failure"),
    ("41401", "Crnry athrscl natve vssl", "Coronary atherosclerosis of native coronary artery"),
    ("412", "Old myocardial infarct", "Old myocardial infarction"),
    ("4139", "Angina pectoris NEC/NOS", "Other and unspecified angina pectoris"),
    ("41400", "Cor ath unsp vsl ntv/gft", "Coronary atherosclerosis of unspecified type of vessel, native or graft"),
    ("4111", "Intermed coronary synd", "Intermediate coronary syndrome"),
    ("24940", "Sec DM renl nt st uncntr", "Secondary diabetes mellitus with renal manifestations, not stated as uncontrolled, or unspecified"),
    ("24960", "Sec DM neuro nt st uncn", "Secondary diabetes mellitus with neurological manifestations, not stated as uncontrolled, or unspecified"),
    ("24980", "Sec DM oth nt st uncontr", "Secondary diabetes mellitus with other specified manifestations, not stated as uncontrolled, or unspecified"),
    ("24950", "Sec DM ophth nt st uncn", "Secondary diabetes mellitus with ophthalmic manifestations, not stated as uncontrolled, or unspecified"),
    ("24901", "Sec DM wo comp uncontrld", "Secondary diabetes mellitus without mention of complication, uncontrolled"),
    ("24910", "Sec DM keto nt st uncntr", "Secondary diabetes mellitus with ketoacidosis, not stated as uncontrolled, or unspecified"),
    ("25000", "DMII wo cmp nt st uncntr", "Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled"),
    ("25001", "DMI wo cmp nt st uncntrl", "Diabetes mellitus without mention of complication, type I [juvenile type], not stated as uncontrolled"),
    ("2724", "Hyperlipidemia NEC/NOS", "Other and unspecified hyperlipidemia"),
    ("2720", "Pure hypercholesterolem", "Pure hypercholesterolemia"),
    ("2722", "Mixed hyperlipidemia", "Mixed hyperlipidemia"),
    ("2721", "Pure hyperglyceridemia", "Pure hyperglyceridemia"),
    ("4019", "Hypertension NOS", "Unspecified essential hypertension"),
    ("4011", "Benign hypertension", "Benign essential hypertension"),
    ("2761", "Hyposmolality", "Hyposmolality and/or hyponatremia"),
    ("2762", "Acidosis", "Acidosis"),
    ("2768", "Hypopotassemia", "Hypopotassemia"),
    ("2767", "Hyperpotassemia", "Hyperpotassemia"),
    ("2760", "Hyperosmolality", "Hyperosmolality and/or hypernatremia"),
    ("27651", "Dehydration", "Dehydration"),
    ("2763", "Alkalosis", "Alkalosis"),
    ("27652", "Hypovolemia", "Hypovolemia"),
    ("2769", "Electrolyt/fluid dis NEC", "Electrolyte and fluid disorders not elsewhere classified"),
    ("5789", "Gastrointest hemorr NOS", "Hemorrhage of gastrointestinal tract, unspecified"),
    ("5780", "Hematemesis", "Hematemesis"),
    ("5781", "Blood in stool", "Blood in stool"),
    ("53100", "Ac stomach ulcer w hem", "Acute gastric ulcer with hemorrhage, without mention of obstruction"),
    ("53240", "Chr duoden ulcer w hem", "Chronic or unspecified duodenal ulcer with hemorrhage, without mention of obstruction"),
    ("4560", "Esophag varices w bleed", "Esophageal varices with bleeding"),
    ("40390", "Hy kid NOS w cr kid I-IV", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified"),
    ("40391", "Hyp kid NOS w cr kid V", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage V or end stage renal disease"),
    ("40491", "Hyp ht/kd NOS I-IV w hf", "Hypertensive heart and chronic kidney disease, unspecified, with heart failure and with chronic kidney disease stage I through stage IV, or unspecified"),
    ("40291", "Hyp ht dis NOS w ht fail", "Unspecified hypertensive heart disease with heart failure"),
    ("40301", "Mal hyp kid w cr kid V", "Hypertensive chronic kidney disease, malignant, with chronic kidney disease stage V or end stage renal disease"),
    ("5715", "Cirrhosis of liver NOS", "Cirrhosis of liver without mention of alcohol"),
    ("5722", "Hepatic encephalopathy", "Hepatic encephalopathy"),
    ("5723", "Portal hypertension", "Portal hypertension"),
    ("5718", "Chronic liver dis NEC", "Other chronic nonalcoholic liver disease"),
    ("570", "Acute necrosis of liver", "Acute and subacute necrosis of liver"),
    ("5738", "Liver disorders NEC", "Other specified disorders of liver"),
    ("515", "Postinflam pulm fibrosis", "Postinflammatory pulmonary fibrosis"),
    ("514", "Pulm congest/hypostasis", "Pulmonary congestion and hypostasis"),
    ("5168", "Alveol pneumonopathy NEC", "Other specified alveolar and parietoalveolar pneumonopathies"),
    ("51631", "Idiopath pulmon fibrosis", "Idiopathic pulmonary fibrosis"),
    ("V440", "Tracheostomy status", "Tracheostomy status"),
    ("47830", "Vocal cord paralysis NOS", "Paralysis of vocal cords or larynx, unspecified"),
    ("4779", "Allergic rhinitis NOS", "Allergic rhinitis, cause unspecified"),
    ("47819", "Nasal & sinus dis NEC", "Other disease of nasal cavity and sinuses"),
    ("V550", "Atten to tracheostomy", "Attention to tracheostomy"),
    ("7847", "Epistaxis", "Epistaxis"),
    ("5119", "Pleural effusion NOS", "Unspecified pleural effusion"),
    ("5110", "Pleurisy w/o effus or TB", "Pleurisy without mention of effusion or current tuberculosis"),
    ("51189", "Effusion NEC exc tb", "Other specified forms of effusion, except tuberculous"),
    ("5109", "Empyema w/o fistula", "Empyema without mention of fistula"),
    ("486", "Pneumonia, organism NOS", "Pneumonia, organism unspecified"),
    ("4820", "K. pneumoniae pneumonia", "Pneumonia due to Klebsiella pneumoniae"),
    ("48241", "Meth sus pneum d/t Staph", "Methicillin susceptible pneumonia due to Staphylococcus aureus"),
    ("48242", "Meth res pneu d/t Staph", "Methicillin resistant pneumonia due to Staphylococcus aureus"),
    ("4821", "Pseudomonal pneumonia", "Pneumonia due to Pseudomonas"),
    ("4829", "Bacterial pneumonia NOS", "Bacterial pneumonia, unspecified"),
    ("485", "Bronchopneumonia org NOS", "Bronchopneumonia, organism unspecified"),
    ("481", "Pneumococcal pneumonia", "Pneumococcal pneumonia [Streptococcus pneumoniae pneumonia]"),
    ("51881", "Acute respiratry failure", "Acute respiratory failure"),
    ("51882", "Other pulmonary insuff", "Other pulmonary insufficiency, not elsewhere classified"),
    ("51884", "Acute & chronc resp fail", "Acute and chronic respiratory failure"),
    ("51883", "Chronic respiratory fail", "Chronic respiratory failure"),
    ("51851", "Ac resp flr fol trma/srg", "Acute respiratory failure following trauma and surgery"),
    ("7991", "Respiratory arrest", "Respiratory arrest"),
    ("V4611", "Respirator depend status", "Dependence on respirator, status"),
    ("0389", "Septicemia NOS", "Unspecified septicemia"),
    ("99591", "Sepsis", "Sepsis"),
    ("99592", "Severe sepsis", "Severe sepsis"),
    ("03842", "E coli septicemia", "Septicemia due to escherichia coli [E. coli]"),
    ("03811", "Meth susc Staph aur sept", "Methicillin susceptible Staphylococcus aureus septicemia"),
    ("03812", "MRSA septicemia", "Methicillin resistant Staphylococcus aureus septicemia"),
    ("0380", "Streptococcal septicemia", "Streptococcal septicemia"),
    ("03849", "Gram-neg septicemia NEC", "Other septicemia due to gram-negative organisms"),
    ("78552", "Septic shock", "Septic shock"),
    ("78551", "Cardiogenic shock", "Cardiogenic shock"),
    ("78559", "Shock w/o trauma NEC", "Other shock without mention of trauma"),
    ("78550", "Shock NOS", "Shock, unspecified"),
    ("2449", "Hypothyroidism NOS", "Unspecified acquired hypothyroidism"),
    ("311", "Depressive disorder NEC", "Depressive disorder, not elsewhere classified"),
    ("3051", "Tobacco use disorder", "Tobacco use disorder"),
    ("V5861", "Long-term use anticoagul", "Long-term (current) use of anticoagulants"),
    ("V4986", "Do not resusctate status", "Do not resuscitate status"),
    ("5990", "Urin tract infection NOS", "Urinary tract infection, site not specified"),
    ("4241", "Aortic valve disorder", "Aortic valve disorders"),
    ("2809", "Iron defic anemia NOS", "Iron deficiency anemia, unspecified"),
    ("32723", "Obstructive sleep apnea", "Obstructive sleep apnea (adult)(pediatric)"),
    ("27800", "Obesity NOS", "Obesity, unspecified"),
    ("2639", "Protein-cal malnutr NOS", "Unspecified protein-calorie malnutrition"),
    ("2930", "Delirium d/t other cond", "Delirium due to conditions classified elsewhere"),
    ("30390", "Alcoh dep NEC/NOS-unspec", "Other and unspecified alcohol dependence, unspecified"),
    ("29181", "Alcohol withdrawal", "Alcohol withdrawal"),
    ("73300", "Osteoporosis NOS", "Osteoporosis, unspecified"),
    ("71590", "Osteoarthros NOS-unspec", "Osteoarthrosis, unspecified whether generalized or localized, site unspecified"),
    ("2749", "Gout NOS", "Gout, unspecified"),
    ("60000", "BPH w/o urinary obs/LUTS", "Hypertrophy (benign) of prostate without urinary obstruction and other lower urinary tract symptom (LUTS)"),
    ("4168", "Chr pulmon heart dis NEC", "Other chronic pulmonary heart diseases"),
    ("4439", "Periph vascular dis NOS", "Peripheral vascular disease, unspecified"),
    ("5070", "Food/vomit pneumonitis", "Pneumonitis due to inhalation of food or vomitus"),
    ("E8788", "Abn react-surg proc NEC", "Other specified surgical operations and procedures causing abnormal patient reaction, or later complication, without mention of misadventure at time of operation"),
    ("E8497", "Accid in resident instit", "Accidents occurring in residential institution"),
    ("E9342", "Adv eff anticoagulants", "Anticoagulants causing adverse effects in therapeutic use"),
    ("V103", "Hx of breast malignancy", "Personal history of malignant neoplasm of breast"),
    ("V5867", "Long-term use of insulin", "Long-term (current) use of insulin"),
    ("3572", "Neuropathy in diabetes", "Polyneuropathy in diabetes"),
];

// ---------------------------------------------------------------------------------------------
// Administrative columns (no effect on the model).

pub(super) const INSURANCE: &[(&str, f64)] =
    &[("Medicare", 0.55), ("Private", 0.30), ("Medicaid", 0.10), ("Government", 0.03), ("Self Pay", 0.02)];
pub(super) const LANGUAGE: &[(&str, f64)] =
    &[("ENGL", 0.65), ("", 0.25), ("SPAN", 0.05), ("RUSS", 0.03), ("PTUN", 0.02)];
pub(super) const RELIGION: &[(&str, f64)] = &[
    ("CATHOLIC", 0.35),
    ("NOT SPECIFIED", 0.20),
    ("PROTESTANT QUAKER", 0.12),
    ("UNOBTAINABLE", 0.10),
    ("JEWISH", 0.08),
    ("OTHER", 0.10),
    ("EPISCOPALIAN", 0.05),
];
pub(super) const MARITAL_STATUS: &[(&str, f64)] =
    &[("MARRIED", 0.45), ("SINGLE", 0.25), ("WIDOWED", 0.15), ("DIVORCED", 0.08), ("", 0.07)];
pub(super) const ETHNICITY: &[(&str, f64)] = &[
    ("WHITE", 0.70),
    ("BLACK/AFRICAN AMERICAN", 0.10),
    ("UNKNOWN/NOT SPECIFIED", 0.10),
    ("HISPANIC OR LATINO", 0.04),
    ("ASIAN", 0.03),
    ("OTHER", 0.03),
];
pub(super) const EMERGENCY_LOCATION: &[(&str, f64)] =
    &[("EMERGENCY ROOM ADMIT", 0.60), ("TRANSFER FROM HOSP/EXTRAM", 0.25), ("CLINIC REFERRAL/PREMATURE", 0.15)];
pub(super) const DISCHARGE_LOCATION: &[(&str, f64)] =
    &[("HOME", 0.35), ("HOME HEALTH CARE", 0.25), ("SNF", 0.25), ("REHAB/DISTINCT PART HOSP", 0.15)];
/// Admitting diagnosis text: the first phenotype of this list present at the visit.
pub(super) const ADMIT_TEXT: &[(usize, &str)] = &[
    (SEPSIS, "SEPSIS"),
    (SHOCK, "HYPOTENSION"),
    (AMI, "ST ELEVATION MYOCARDIAL INFARCTION\\CATH"),
    (STROKE, "INTRACRANIAL HEMORRHAGE"),
    (GI_BLEED, "GASTROINTESTINAL BLEED"),
    (RESP_FAILURE, "RESPIRATORY FAILURE"),
    (PNEUMONIA, "PNEUMONIA"),
    (CHF, "CONGESTIVE HEART FAILURE"),
    (LIVER, "LIVER FAILURE"),
    (AKI, "ACUTE RENAL FAILURE"),
    (COPD, "COPD EXACERBATION"),
    (CAD, "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA"),
    (DYSRHYTHMIA, "ATRIAL FIBRILLATION"),
    (PLEURISY, "PLEURAL EFFUSION"),
    (FLUID, "HYPONATREMIA"),
];
pub(super) const ADMIT_TEXT_OTHER: &[&str] =
    &["CHEST PAIN", "ABDOMINAL PAIN", "ALTERED MENTAL STATUS, FEVER", "S/P FALL", "SYNCOPE"];
