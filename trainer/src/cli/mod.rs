//! The `ckd` command line: clap types ([`args`]), one handler per command grouped by what it
//! works on ([`data`], [`train`], [`evaluate`]), and the printing they share ([`print`]).

pub mod args;
#[macro_use]
pub mod print;
pub mod data;
pub mod evaluate;
pub mod parse;
pub mod train;
pub mod zero_shot;
