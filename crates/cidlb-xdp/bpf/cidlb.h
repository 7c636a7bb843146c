/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The layout of the maps that the XDP program and its loader share. Every struct here
 * has a #[repr(C)] mirror in src/abi.rs; both sides assert the sizes.
 */
#ifndef CIDLB_H
#define CIDLB_H

#include <linux/types.h>

/* cidlb_wire::MAX_CID_LEN */
#define CIDLB_MAX_CID_LEN 32
/* Records walked per datagram; a datagram with more is passed to the stack. */
#define CIDLB_MAX_RECORDS 16
/* Datagram offsets are masked with this for the verifier (a packet pointer's variable
 * offset must stay below 64 KiB): longer datagrams go to the stack. */
#define CIDLB_OFF_MASK 0x3fff
#define CIDLB_MAX_DATAGRAM CIDLB_OFF_MASK

/* Backend ids 0..CIDLB_MAX_BACKENDS-1 (cidlb_core::BackendId). */
#define CIDLB_MAX_BACKENDS 4096
#define CIDLB_NO_BACKEND 0xffffffffU
/* cidlb_core's MAX_SEEDS_PER_FLOW: bindings one flow may seed. */
#define CIDLB_MAX_SEEDS 4

/* cidlb_config.cid_len[] values besides 0..=32. */
#define CIDLB_LEN_TOO_LONG 0xfe
#define CIDLB_LEN_UNKNOWN 0xff

/* cidlb_config.format */
#define CIDLB_FORMAT_NONE 0
#define CIDLB_FORMAT_PREFIX 1
#define CIDLB_FORMAT_QUIC_LB 2

/* cidlb_rotation.mode */
#define CIDLB_ROT_NONE 0 /* no configuration at this codepoint */
#define CIDLB_ROT_PLAINTEXT 1
#define CIDLB_ROT_ENCRYPTED 2 /* decoded by the slow path, cached in `decoded` */
#define CIDLB_ROT_UNROUTABLE 3 /* 0b111 */

/* cidlb_rotation.flags */
#define CIDLB_ROT_SELF_DESCRIBING 1
#define CIDLB_ROT_HAS_MAP 2

/* cidlb_config.multi_cid */
#define CIDLB_MULTI_FIRST 0
#define CIDLB_MULTI_DROP 1

/* cidlb_backend.state */
#define CIDLB_STATE_ABSENT 0
#define CIDLB_STATE_UP 1
#define CIDLB_STATE_DRAINING 2
#define CIDLB_STATE_DOWN 3

/* cidlb_binding.source */
#define CIDLB_LEARNED 1
#define CIDLB_SEEDED 2

/* cidlb_sid_key.kind for routing IDs (other kinds: a rotation's encoded server ID). */
#define CIDLB_SID_ROUTING 0xfe

/* cidlb_decoded.status */
#define CIDLB_DECODED_SID 1
#define CIDLB_DECODED_UNDECODABLE 2

struct cidlb_rotation {
	__u8 mode;
	__u8 sid_len;
	__u8 min_len; /* 1 + server ID + nonce */
	__u8 flags;
};

struct cidlb_config {
	__u8 vip[16]; /* IPv4 as IPv4-mapped IPv6 */
	__u16 port; /* network order */
	__u8 family; /* 4 or 6 */
	__u8 route_by_cid;
	__u8 multi_cid;
	__u8 format;
	__u8 prefix_len;
	__u8 len_if_empty; /* the CID length when the datagram ends where the CID starts */
	__u8 src_mac[6];
	__u8 maglev_half; /* which half of `maglev` is live */
	__u8 n_ports; /* interfaces the program runs on (`ports`); 0 or 1: XDP_TX only */
	__u32 maglev_len; /* slots of the live half; 0: no backend takes new flows */
	__u32 maglev_stride; /* where half 1 starts */
	__u32 flow_idle; /* seconds */
	__u32 binding_idle;
	__u32 pad1;
	__u32 pad2;
	__u64 hash_seed; /* RouterConfig::hash_seed */
	__u64 tag_key; /* keys the binding's address tag */
	struct cidlb_rotation rot[8];
	__u8 cid_len[256]; /* by the first CID octet */
};

struct cidlb_backend {
	__u8 mac[6];
	__u8 state;
	__u8 port; /* the interface it is reached through (`ports`) */
};

/* The interfaces of a listener that runs on several: their index and MAC (the source
 * MAC of frames sent out of them). */
#define CIDLB_MAX_PORTS 8

struct cidlb_port {
	__u32 ifindex;
	__u8 mac[6];
	__u8 pad[2];
};

/* Keys are multiples of 4 bytes: the kernel's hash tables hash those by words. */
struct cidlb_cid_key {
	__u8 cid[CIDLB_MAX_CID_LEN]; /* first: 8-byte aligned words */
	__u8 len;
	__u8 pad[3];
};

struct cidlb_binding {
	__u16 backend;
	__u8 source;
	__u8 pad;
	__u32 last_seen; /* seconds of CLOCK_MONOTONIC_COARSE */
	__u32 addr_tag;
};

/* Byte for byte cidlb_core's FlowKey::hash_input(): address (IPv4-mapped), port (BE). */
struct cidlb_flow_key {
	__u8 ip[16];
	__u8 port[2];
	__u8 pad[2];
};

struct cidlb_flow {
	__u16 backend;
	__u8 seeds;
	__u8 pad;
	__u32 last_seen; /* seconds of CLOCK_MONOTONIC_COARSE */
};

struct cidlb_sid_key {
	__u8 kind;
	__u8 len;
	__u8 id[15];
	__u8 pad;
};

struct cidlb_sid_val {
	__u32 backend; /* kind CIDLB_SID_ROUTING: the backend */
	__u8 len; /* a rotation's map: the routing ID */
	__u8 id[15];
};

struct cidlb_decoded {
	__u8 status;
	__u8 len;
	__u8 id[15];
	__u8 pad;
};

struct cidlb_traffic {
	__u64 datagrams;
	__u64 bytes;
};

/* Bytes of a punted frame the ring buffer record holds (an Ethernet frame of a
 * 1500-byte MTU with a VLAN tag fits); a longer one is passed to the stack. */
#define CIDLB_PUNT_FRAME 1536

struct cidlb_punt {
	struct cidlb_cid_key cid;
	__u16 len; /* bytes of frame[] that hold the frame; 0: not copied (passed) */
	__u8 pad[2];
	__u64 queued_ns; /* bpf_ktime_get_coarse_ns() when queued */
	__u8 frame[CIDLB_PUNT_FRAME];
};

_Static_assert(sizeof(struct cidlb_rotation) == 4, "abi.rs");
_Static_assert(sizeof(struct cidlb_config) == 360, "abi.rs");
_Static_assert(sizeof(struct cidlb_backend) == 8, "abi.rs");
_Static_assert(sizeof(struct cidlb_cid_key) == 36, "abi.rs");
_Static_assert(sizeof(struct cidlb_binding) == 12, "abi.rs");
_Static_assert(sizeof(struct cidlb_flow_key) == 20, "abi.rs");
_Static_assert(sizeof(struct cidlb_flow) == 8, "abi.rs");
_Static_assert(sizeof(struct cidlb_sid_key) == 18, "abi.rs");
_Static_assert(sizeof(struct cidlb_sid_val) == 20, "abi.rs");
_Static_assert(sizeof(struct cidlb_decoded) == 18, "abi.rs");
_Static_assert(sizeof(struct cidlb_traffic) == 16, "abi.rs");
_Static_assert(sizeof(struct cidlb_punt) == 1584, "abi.rs");
_Static_assert(sizeof(struct cidlb_port) == 12, "abi.rs");

#endif
