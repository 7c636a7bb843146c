//! The cidlb daemon: configuration, the `run` loop around the data plane, and the
//! command-line interface's building blocks. The binary is `src/main.rs`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cid;
pub mod client;
pub mod config;
pub mod control;
pub mod dns;
pub mod health;
pub mod http;
pub mod metrics;
pub mod neigh;
pub mod run;
pub mod specs;
pub mod status;
pub mod xdp;
