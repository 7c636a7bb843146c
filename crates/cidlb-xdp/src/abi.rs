//! `#[repr(C)]` mirrors of the map keys and values of `bpf/cidlb.h`, byte for byte.
//!
//! The C header asserts nothing; the sizes are checked here at compile time and the
//! golden tests check the meaning. Multi-byte integers are in host order unless a field
//! says otherwise.

/// `cidlb_wire::MAX_CID_LEN`, as the program's buffers use it.
pub const MAX_CID_LEN: usize = 32;
/// Records the program walks per datagram; a datagram with more is passed to the stack.
pub const MAX_RECORDS: usize = 16;
/// Backend ids the program's arrays hold: `0..MAX_BACKENDS`.
pub const MAX_BACKENDS: usize = 4096;
/// "No backend" in the Maglev map and the server-ID map.
pub const NO_BACKEND: u32 = u32::MAX;
/// The Router's `MAX_SEEDS_PER_FLOW`: bindings one flow may seed.
pub const MAX_SEEDS: u8 = 4;

/// `cid_len[]`: the CID is longer than [`MAX_CID_LEN`].
pub const LEN_TOO_LONG: u8 = 0xfe;
/// `cid_len[]`: the listener cannot tell the CID's length.
pub const LEN_UNKNOWN: u8 = 0xff;

/// `Config::format`: none.
pub const FORMAT_NONE: u8 = 0;
/// `Config::format`: a server-ID prefix.
pub const FORMAT_PREFIX: u8 = 1;
/// `Config::format`: QUIC-LB.
pub const FORMAT_QUIC_LB: u8 = 2;

/// `Rotation::mode`: no configuration at this codepoint.
pub const ROT_NONE: u8 = 0;
/// `Rotation::mode`: plaintext, decoded by the program.
pub const ROT_PLAINTEXT: u8 = 1;
/// `Rotation::mode`: encrypted, decoded by the slow path (cached in `decoded`).
pub const ROT_ENCRYPTED: u8 = 2;
/// `Rotation::mode`: the unroutable codepoint 0b111.
pub const ROT_UNROUTABLE: u8 = 3;
/// `Rotation::flags`: the first octet self-describes the CID length.
pub const ROT_SELF_DESCRIBING: u8 = 1;
/// `Rotation::flags`: the configuration has a server ID map.
pub const ROT_HAS_MAP: u8 = 2;

/// `Config::multi_cid`: route by the first CID.
pub const MULTI_FIRST: u8 = 0;
/// `Config::multi_cid`: drop.
pub const MULTI_DROP: u8 = 1;

/// `Backend::state`: no such backend.
pub const STATE_ABSENT: u8 = 0;
/// `Backend::state`: up.
pub const STATE_UP: u8 = 1;
/// `Backend::state`: draining.
pub const STATE_DRAINING: u8 = 2;
/// `Backend::state`: down.
pub const STATE_DOWN: u8 = 3;

/// `Binding::source`: learned from a ServerHello.
pub const LEARNED: u8 = 1;
/// `Binding::source`: seeded from a flow.
pub const SEEDED: u8 = 2;

/// `SidKey::kind` of a routing ID (other kinds: a rotation's encoded server ID).
pub const SID_ROUTING: u8 = 0xfe;

/// `Decoded::status`: the CID carries this routing ID.
pub const DECODED_SID: u8 = 1;
/// `Decoded::status`: the CID does not decode.
pub const DECODED_UNDECODABLE: u8 = 2;

/// One QUIC-LB configuration as the program reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// `ROT_*`.
    pub mode: u8,
    /// Server ID length.
    pub sid_len: u8,
    /// Shortest CID: 1 + server ID + nonce.
    pub min_len: u8,
    /// `ROT_SELF_DESCRIBING | ROT_HAS_MAP`.
    pub flags: u8,
}

/// The listener's settings (`struct cidlb_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The listener's address, IPv4 as IPv4-mapped IPv6.
    pub vip: [u8; 16],
    /// The listener's port, network order.
    pub port: u16,
    /// 4 or 6 (0: the program passes everything).
    pub family: u8,
    /// `RouterConfig::route_by_cid`.
    pub route_by_cid: u8,
    /// `MULTI_*`.
    pub multi_cid: u8,
    /// `FORMAT_*`.
    pub format: u8,
    /// The prefix format's server ID length.
    pub prefix_len: u8,
    /// The CID length when the datagram ends where the CID starts.
    pub len_if_empty: u8,
    /// The interface's MAC: the source of forwarded frames.
    pub src_mac: [u8; 6],
    /// Which half of the Maglev map is live.
    pub maglev_half: u8,
    /// Interfaces the program runs on ([`Port`]s); 0 or 1: `XDP_TX` only.
    pub n_ports: u8,
    /// Slots of the live half (0: no backend takes new flows).
    pub maglev_len: u32,
    /// Where half 1 starts.
    pub maglev_stride: u32,
    /// Flow idle timeout, seconds.
    pub flow_idle: u32,
    /// Binding idle timeout, seconds.
    pub binding_idle: u32,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: u32,
    /// `RouterConfig::hash_seed`.
    pub hash_seed: u64,
    /// Keys the bindings' address tags.
    pub tag_key: u64,
    /// QUIC-LB configurations by rotation codepoint.
    pub rot: [Rotation; 8],
    /// The CID length by its first octet (`LEN_*` besides 0..=32).
    pub cid_len: [u8; 256],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vip: [0; 16],
            port: 0,
            family: 0,
            route_by_cid: 0,
            multi_cid: 0,
            format: 0,
            prefix_len: 0,
            len_if_empty: LEN_UNKNOWN,
            src_mac: [0; 6],
            maglev_half: 0,
            n_ports: 0,
            maglev_len: 0,
            maglev_stride: 0,
            flow_idle: 0,
            binding_idle: 0,
            pad1: 0,
            pad2: 0,
            hash_seed: 0,
            tag_key: 0,
            rot: [Rotation::default(); 8],
            cid_len: [LEN_UNKNOWN; 256],
        }
    }
}

/// A backend as the program sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Its MAC: the destination of frames forwarded to it.
    pub mac: [u8; 6],
    /// `STATE_*`.
    pub state: u8,
    /// The interface it is reached through (a [`Port`] slot).
    pub port: u8,
}

/// Interfaces a listener runs on, at most (`CIDLB_MAX_PORTS`).
pub const MAX_PORTS: usize = 8;

/// One interface of a listener that runs on several (`ports` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Port {
    /// Its index.
    pub ifindex: u32,
    /// Its MAC: the source of frames sent out of it.
    pub mac: [u8; 6],
    /// Padding.
    pub pad: [u8; 2],
}

/// A CID, zero-padded: the key of `bindings` and `decoded`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CidKey {
    /// Octets, zero after `len` (first: the program copies them in aligned words).
    pub cid: [u8; MAX_CID_LEN],
    /// Length.
    pub len: u8,
    /// Padding (keys of 4-byte multiples hash by words).
    pub pad: [u8; 3],
}

impl CidKey {
    /// `None` when longer than [`MAX_CID_LEN`].
    pub fn new(cid: &[u8]) -> Option<CidKey> {
        if cid.len() > MAX_CID_LEN {
            return None;
        }
        let mut k = CidKey {
            len: cid.len() as u8,
            cid: [0; MAX_CID_LEN],
            pad: [0; 3],
        };
        k.cid[..cid.len()].copy_from_slice(cid);
        Some(k)
    }

    /// The CID.
    pub fn as_bytes(&self) -> &[u8] {
        &self.cid[..usize::from(self.len).min(MAX_CID_LEN)]
    }
}

/// A CID's binding (`bindings` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// The backend id.
    pub backend: u16,
    /// `LEARNED` or `SEEDED`.
    pub source: u8,
    /// Padding.
    pub pad: u8,
    /// Last used, seconds of `CLOCK_MONOTONIC_COARSE`.
    pub last_seen: u32,
    /// Tag of the client address that last used it.
    pub addr_tag: u32,
}

/// A client address (`flows` key): its first 18 bytes are `FlowKey::hash_input()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The address, IPv4 as IPv4-mapped IPv6.
    pub ip: [u8; 16],
    /// The port, big-endian.
    pub port: [u8; 2],
    /// Padding.
    pub pad: [u8; 2],
}

impl From<std::net::SocketAddr> for FlowKey {
    fn from(a: std::net::SocketAddr) -> Self {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        FlowKey {
            ip,
            port: a.port().to_be_bytes(),
            pad: [0; 2],
        }
    }
}

impl FlowKey {
    /// The program's `addr_tag`: a keyed 32-bit tag of the address that a binding
    /// remembers (the last client address that used it).
    pub fn tag(&self, key: u64) -> u32 {
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&self.ip);
        b[16..18].copy_from_slice(&self.port);
        let w = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let mut h = ((u64::from(w(0) ^ w(1)) << 32) | u64::from(w(2) ^ w(3))) ^ key;
        h ^= u64::from(w(4)).wrapping_mul(0x9E37_79B1_85EB_CA87);
        h = h.wrapping_mul(0x9FB2_1C65_1E98_DF25);
        h ^= h >> 29;
        h = h.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        (h >> 32) as u32
    }

    /// The 18 bytes the Maglev hash of a new flow is computed over.
    pub fn hash_input(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[..16].copy_from_slice(&self.ip);
        b[16..].copy_from_slice(&self.port);
        b
    }
}

/// A client address's flow (`flows` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// The backend id.
    pub backend: u16,
    /// Bindings seeded from it.
    pub seeds: u8,
    /// Padding.
    pub pad: u8,
    /// Last used, seconds of `CLOCK_MONOTONIC_COARSE`.
    pub last_seen: u32,
}

/// A server ID (`sids` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SidKey {
    /// `SID_ROUTING`, or the rotation whose map this encoded server ID is in.
    pub kind: u8,
    /// Length.
    pub len: u8,
    /// Octets, zero after `len`.
    pub id: [u8; 15],
    /// Padding.
    pub pad: u8,
}

impl SidKey {
    /// A key of `kind` for `id` (at most 15 octets).
    pub fn new(kind: u8, id: &[u8]) -> SidKey {
        let mut k = SidKey {
            kind,
            len: id.len().min(15) as u8,
            ..SidKey::default()
        };
        k.id[..usize::from(k.len)].copy_from_slice(&id[..usize::from(k.len)]);
        k
    }
}

/// What a server ID leads to (`sids` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SidVal {
    /// For a routing ID: the backend id.
    pub backend: u32,
    /// For a rotation's map: the routing ID's length...
    pub len: u8,
    /// ...and octets.
    pub id: [u8; 15],
}

/// The slow path's decoding of an encrypted CID (`decoded` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// `DECODED_SID` or `DECODED_UNDECODABLE`.
    pub status: u8,
    /// The routing ID's length...
    pub len: u8,
    /// ...and octets.
    pub id: [u8; 15],
    /// Padding.
    pub pad: u8,
}

/// Datagrams and bytes forwarded to one backend (`traffic` value, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams.
    pub datagrams: u64,
    /// UDP payload bytes.
    pub bytes: u64,
}

/// Bytes of a punted frame a [`Punt`] record holds (`CIDLB_PUNT_FRAME`).
pub const PUNT_FRAME: usize = 1536;

/// A datagram with an encrypted CID queued for the slow path (`punts` ring buffer
/// record): the CID, and the whole frame to route again once the CID is decoded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Punt {
    /// The CID, as the program read it.
    pub cid: CidKey,
    /// Bytes of `frame` that hold the frame (0: not copied, the frame was passed).
    pub len: u16,
    /// Padding.
    pub pad: [u8; 2],
    /// `bpf_ktime_get_coarse_ns()` when queued (CLOCK_MONOTONIC_COARSE).
    pub queued_ns: u64,
    /// The frame, from its Ethernet header.
    pub frame: [u8; PUNT_FRAME],
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Rotation>() == 4);
    assert!(size_of::<Config>() == 360);
    assert!(size_of::<Backend>() == 8);
    assert!(size_of::<CidKey>() == 36);
    assert!(size_of::<Binding>() == 12);
    assert!(size_of::<FlowKey>() == 20);
    assert!(size_of::<Flow>() == 8);
    assert!(size_of::<SidKey>() == 18);
    assert!(size_of::<SidVal>() == 20);
    assert!(size_of::<Decoded>() == 18);
    assert!(size_of::<Traffic>() == 16);
    assert!(size_of::<Punt>() == 1584);
    assert!(size_of::<Port>() == 12);
};
