//! cidlb's in-kernel data plane: an XDP program (C, `bpf/cidlb.bpf.c`) that routes DTLS
//! records by Connection ID and forwards them by direct routing, and its loader.
//!
//! The program parses Ethernet (one 802.1Q tag), IPv4 (any header length; fragments go
//! to the stack) or IPv6 (no extension headers), UDP to the listener's address and
//! port, and walks up to 16 DTLS records (RFC 9146 `tls12_cid`, RFC 9147 unified
//! headers) for the first CID, exactly as `cidlb-wire` does. It then takes the core's
//! one routing decision (`cidlb_core::decision`) over maps that mirror the Router's
//! tables, rewrites the destination MAC to the backend's and the source MAC to the
//! interface's, and sends the frame back out (`XDP_TX`): the backend holds the
//! listener's address on its loopback and answers the client itself.
//!
//! - [`XdpListener`] implements `cidlb_core::plane::ListenerPlane` for one listener:
//!   its explanations run the core's `decide_cid` / `decide_address` over the maps the
//!   program reads, so they say what the program does.
//! - [`XdpPlane`] implements `DataPlane`, and runs the slow path for encrypted QUIC-LB
//!   CIDs (decoded in userspace, once per CID, and cached for the program).
//! - [`abi`] mirrors the maps' keys and values (`bpf/cidlb.h`).
//!
//! The program counts every routing outcome, drop reason and event at the slot of its
//! `cidlb-core` enum variant (build.rs numbers them for the C side), so the metrics of
//! this plane have the NAT plane's names; its own counters are [`XDP_STATS`].
//!
//! `docs/xdp.md` describes the program, its maps and how to test it.

pub mod abi;
mod format;
mod listener;
mod plane;
mod sys;

use cidlb_core::plane::{StatInfo, StatKind};

pub use aya::programs::XdpMode;
pub use format::{ServerIdMap, XdpCidFormat};
pub use listener::{
    check_router_config, Attach, Pin, TestRunOutput, WalkCounts, XdpListener, XdpListenerConfig,
    XdpPass, LAYOUT_VERSION, XDP_DROP, XDP_PASS, XDP_TX,
};
pub use plane::XdpPlane;
pub use sys::{monotonic_secs, PacketSocket};

const STAT_LIST: &[(&str, &str)] = include!("stats_list.rs");

const fn stat_infos<const N: usize>(list: &[(&'static str, &'static str)]) -> [StatInfo; N] {
    let mut out = [StatInfo {
        name: "",
        help: "",
        kind: StatKind::Counter,
    }; N];
    let mut i = 0;
    while i < N {
        out[i] = StatInfo {
            name: list[i].0,
            help: list[i].1,
            kind: StatKind::Counter,
        };
        i += 1;
    }
    out
}

const STAT_ARRAY: [StatInfo; STAT_LIST.len()] = stat_infos(STAT_LIST);

/// The program's own counters (beyond the core's outcomes, drops and events), in the
/// order of their slots (`src/stats_list.rs`, shared with build.rs).
pub const XDP_STATS: &[StatInfo] = &STAT_ARRAY;

/// The slow path's counter (userspace), reported after [`XDP_STATS`].
pub const SLOW_PATH_DECODED: StatInfo = StatInfo {
    name: "slow_path_decoded",
    help: "Encrypted QUIC-LB CIDs the slow path decoded and cached for the program.",
    kind: StatKind::Counter,
};

/// The slow path's counter of punted datagrams it sent on (userspace).
pub const SLOW_PATH_FORWARDED: StatInfo = StatInfo {
    name: "slow_path_forwarded",
    help: "Punted datagrams the slow path routed again through the program (with the CID decoded) and sent out of the interface.",
    kind: StatKind::Counter,
};

/// The slow path's counter of punted datagrams it did not send on (userspace).
pub const SLOW_PATH_UNSENT: StatInfo = StatInfo {
    name: "slow_path_unsent",
    help: "Punted datagrams the slow path did not send on: queued over a second before (the daemon was not running), or the send failed. Those the program drops on the second run count as its drops.",
    kind: StatKind::Counter,
};

/// The slow path's counters (userspace), reported after [`XDP_STATS`] in this order.
pub const SLOW_PATH_STATS: [StatInfo; 3] =
    [SLOW_PATH_DECODED, SLOW_PATH_FORWARDED, SLOW_PATH_UNSENT];

/// Why the XDP plane could not do something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdpError {
    /// Settings this plane cannot route with.
    Config(String),
    /// Loading the program (the verifier's verdict included) or running it.
    Load(String),
    /// Reading or writing a map.
    Map(String),
    /// Attaching to an interface.
    Attach(String),
}

impl XdpError {
    /// Whether the kernel refused for want of privilege (no root / CAP_BPF, or BPF
    /// disabled in this environment): tests skip on it.
    pub fn is_permission(&self) -> bool {
        let s = match self {
            XdpError::Load(s) | XdpError::Map(s) | XdpError::Attach(s) => s,
            XdpError::Config(_) => return false,
        };
        s.contains("Operation not permitted") || s.contains("EPERM") || s.contains("ENOSYS")
    }
}

impl std::fmt::Display for XdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdpError::Config(s) => write!(f, "XDP plane settings: {s}"),
            XdpError::Load(s) => write!(f, "XDP program: {s}"),
            XdpError::Map(s) => write!(f, "XDP map: {s}"),
            XdpError::Attach(s) => write!(f, "XDP attach: {s}"),
        }
    }
}

impl std::error::Error for XdpError {}
