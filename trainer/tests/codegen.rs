//! The committed CCS table is what the generator makes from the shared YAML.
mod common;

#[test]
fn regenerating_ccs_table_gives_committed_file() {
    let Some(yaml) = common::data_path("CKD_CCS_YAML", "../shared/data/hcup_ccs_2015_definitions.yaml") else {
        return;
    };
    let text = std::fs::read_to_string(yaml).unwrap();
    let generated = ckd_trainer::codegen::ccs_table_source(&text).unwrap();
    let committed = include_str!("../../core/src/tables/ccs.rs");
    assert!(generated == committed, "core/src/tables/ccs.rs is stale: run `ckd gen-tables --ccs-yaml ...`");
}

#[test]
fn generator_rejects_unknown_phenotype() {
    let yaml = "\"Gout\":\n  use_in_benchmark: True\n  type: \"acute\"\n  id: 1\n  codes: [ \"2740\" ]\n";
    let e = ckd_trainer::codegen::ccs_table_source(yaml).unwrap_err();
    assert!(e.to_string().contains("Gout"), "{e}");
}
