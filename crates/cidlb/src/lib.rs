//! The cidlb daemon: configuration, the `run` loop around the data plane, and the
//! command-line interface's building blocks. The binary is `src/main.rs`.

#![forbid(unsafe_code)]

pub mod config;
pub mod run;
