// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * cidlb's in-kernel fast path: routes DTLS records by Connection ID (RFC 9146 / 9147)
 * and forwards them by direct routing (destination MAC := the backend's, XDP_TX).
 *
 * One program serves one listener (an address and a UDP port) on one interface. The
 * routing decision is cidlb-core's `decision.rs`, step by step, over maps that mirror the
 * Router's tables (docs/xdp.md):
 *
 *   with a CID:    learned binding, encoded (prefix, plaintext QUIC-LB; encrypted QUIC-LB
 *                  through the slow path's cache), seeded binding, flow (seeding a
 *                  binding), Maglev on the CID;
 *   without a CID: flow, Maglev on the address.
 *
 * Every outcome and drop reason is counted in `counters` at the slot of its cidlb-core
 * enum variant (counters.h is generated from the enums by build.rs).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "cidlb.h"
#include "counters.h"
#include "xxh3.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Two copies of the configuration; `config_live` says which one is in force, so that a
 * reload or a Maglev rebuild switches in one word (the loader writes the other copy,
 * then flips). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct cidlb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} config_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CIDLB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct cidlb_backend);
} backends SEC(".maps");

/* Maglev: two halves of `maglev_stride` slots, slot -> backend id. The loader sets the
 * size (2 x the table size). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 65537);
	__type(key, __u32);
	__type(value, __u32);
} maglev SEC(".maps");

/* The loader sets the sizes from the listener's max_bindings / max_flows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct cidlb_cid_key);
	__type(value, struct cidlb_binding);
} bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct cidlb_flow_key);
	__type(value, struct cidlb_flow);
} flows SEC(".maps");

/* Server IDs: routing ID -> backend, and each mapped plaintext rotation's server ID ->
 * routing ID. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8 * CIDLB_MAX_BACKENDS);
	__type(key, struct cidlb_sid_key);
	__type(value, struct cidlb_sid_val);
} sids SEC(".maps");

/* Encrypted QUIC-LB CIDs decoded by the slow path (a cache of a pure function). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct cidlb_cid_key);
	__type(value, struct cidlb_decoded);
} decoded SEC(".maps");

/* The interfaces the program runs on (a listener with several): index and MAC; and
 * the same as a device map, for XDP_REDIRECT to a backend behind another one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CIDLB_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct cidlb_port);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, CIDLB_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

/* Encrypted CIDs without a cached decoding, for the slow path. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024); /* 658 records of a frame each */
} punts SEC(".maps");

/* cid_masks[n]: 32 bytes, 0xff in the first n (the loader fills it): copies a CID of
 * length n out of the packet in four words, without a branch per byte. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CIDLB_MAX_CID_LEN + 1);
	__type(key, __u32);
	__type(value, __u64[4]);
} cid_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CIDLB_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CIDLB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct cidlb_traffic);
} traffic SEC(".maps");

/* What the pinned maps were made by (the loader's; the program never reads it): slot 0
 * the layout version (a hash of cidlb.h), 1 and 2 the flow and binding capacities,
 * 3-6 the instance secret (address tags and table keys stay valid across restarts). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} info SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1;
}

/* ------------------------------------------------------------------ routing state */

struct ctx {
	struct cidlb_cid_key ckey __attribute__((aligned(8))); /* zero-padded */
	struct cidlb_flow_key fkey;
	struct cidlb_config *cfg;
	__u32 now; /* seconds of CLOCK_MONOTONIC_COARSE */
};

static __always_inline __u32 now_secs(void)
{
	/* The coarse clock (CLOCK_MONOTONIC_COARSE, a tick's resolution) is enough for
	 * idle timeouts in seconds and costs a load instead of a clock read. */
	return (__u32)(bpf_ktime_get_coarse_ns() / 1000000000ULL);
}

static __always_inline int idle_expired(__u32 last_seen, __u32 now, __u32 idle)
{
	/* cidlb-core's table: alive while now - last_seen <= idle. */
	return now > last_seen && now - last_seen > idle;
}

static __always_inline struct cidlb_backend *backend(__u32 id)
{
	if (id >= CIDLB_MAX_BACKENDS)
		return NULL;
	return bpf_map_lookup_elem(&backends, &id);
}

/* Exists and is not down (cidlb-core's `serves`). */
static __always_inline int serves(__u32 id)
{
	struct cidlb_backend *b = backend(id);
	return b && (b->state == CIDLB_STATE_UP || b->state == CIDLB_STATE_DRAINING);
}

static __always_inline int exists(__u32 id)
{
	struct cidlb_backend *b = backend(id);
	return b && b->state != CIDLB_STATE_ABSENT;
}

/* The live binding of the CID, refreshed (the Router's `bindings.touch`). */
static __always_inline struct cidlb_binding *touch_binding(struct ctx *c)
{
	struct cidlb_binding *b = bpf_map_lookup_elem(&bindings, &c->ckey);
	if (!b)
		return NULL;
	if (idle_expired(b->last_seen, c->now, c->cfg->binding_idle)) {
		bpf_map_delete_elem(&bindings, &c->ckey);
		count(CIDLB_EVENT_BINDING_EXPIRED);
		return NULL;
	}
	if (b->last_seen != c->now)
		b->last_seen = c->now;
	return b;
}

/* The live flow of the sender, refreshed (the Router's `touch_flow`). */
static __always_inline struct cidlb_flow *touch_flow(struct ctx *c)
{
	struct cidlb_flow *f = bpf_map_lookup_elem(&flows, &c->fkey);
	if (!f)
		return NULL;
	if (idle_expired(f->last_seen, c->now, c->cfg->flow_idle)) {
		bpf_map_delete_elem(&flows, &c->fkey);
		count(CIDLB_EVENT_FLOW_EXPIRED);
		return NULL;
	}
	if (f->last_seen != c->now)
		f->last_seen = c->now;
	return f;
}

/* The Router's `insert_flow`; `had_flow`: a live flow is replaced (no FlowCreated). */
static __always_inline void insert_flow(struct ctx *c, __u32 backend_id, int had_flow)
{
	struct cidlb_flow f = { .backend = (__u16)backend_id, .seeds = 0, .last_seen = c->now };
	bpf_map_update_elem(&flows, &c->fkey, &f, BPF_ANY);
	if (!had_flow)
		count(CIDLB_EVENT_FLOW_CREATED);
}

/* Maglev's choice for `in` (the CID, or the flow key's 18 bytes); NO_BACKEND if none. */
static __always_inline __u32 maglev_pick(struct cidlb_config *cfg, const __u8 *in, __u32 len)
{
	__u32 n = cfg->maglev_len;
	if (n == 0 || n > cfg->maglev_stride)
		return CIDLB_NO_BACKEND;
	__u64 h = xxh3_64_upto32(in, len, cfg->hash_seed);
	__u32 slot = (__u32)(h % n);
	if (cfg->maglev_half)
		slot += cfg->maglev_stride;
	__u32 *v = bpf_map_lookup_elem(&maglev, &slot);
	return v ? *v : CIDLB_NO_BACKEND;
}

/* A keyed 32-bit tag of the sender's address: a binding remembers the last one, so that
 * the common case (same CID, same address) skips the flow table. Collisions only skip a
 * flow refresh, never change a route (as in the Router). */
static __always_inline __u32 addr_tag(struct ctx *c)
{
	__u32 w[5];
	__builtin_memcpy(w, &c->fkey, sizeof(w));
	__u64 h = ((__u64)(w[0] ^ w[1]) << 32 | (w[2] ^ w[3])) ^ c->cfg->tag_key;
	h ^= (__u64)w[4] * XXH_PRIME64_1;
	h *= XXH_PRIME_MX2;
	h ^= h >> 29;
	h *= XXH_PRIME64_2;
	return (__u32)(h >> 32);
}

/* ------------------------------------------------------------------ decoding */

/* What the CID format makes of the CID (cidlb-core's `Decoded`). */
enum dec_kind { DEC_NO_FORMAT, DEC_UNDECODABLE, DEC_UNKNOWN_SERVER, DEC_BACKEND, DEC_PUNT };

struct dec {
	enum dec_kind kind;
	__u32 backend;
};

/* Looks a routing ID up among the backends' server IDs. */
static __always_inline struct dec by_routing_id(struct cidlb_sid_key *k)
{
	struct dec d = { .kind = DEC_UNKNOWN_SERVER, .backend = CIDLB_NO_BACKEND };
	k->kind = CIDLB_SID_ROUTING;
	struct cidlb_sid_val *v = bpf_map_lookup_elem(&sids, k);
	if (v) {
		d.kind = DEC_BACKEND;
		d.backend = v->backend;
	}
	return d;
}

static __always_inline void copy_id(__u8 *dst, const __u8 *src, __u32 len)
{
#pragma clang loop unroll(full)
	for (int i = 0; i < 15; i++)
		if (i < len)
			dst[i] = src[i & 31];
}

static __always_inline struct dec decode(struct ctx *c)
{
	struct cidlb_config *cfg = c->cfg;
	struct dec d = { .kind = DEC_UNDECODABLE, .backend = CIDLB_NO_BACKEND };
	struct cidlb_sid_key k = {};
	__u32 n = c->ckey.len;

	if (cfg->format == CIDLB_FORMAT_NONE) {
		d.kind = DEC_NO_FORMAT;
		return d;
	}
	if (n == 0 || n > CIDLB_MAX_CID_LEN)
		return d;
	if (cfg->format == CIDLB_FORMAT_PREFIX) {
		/* cidlb-cidformat's PrefixFormat: the first octets, at least one more after. */
		__u32 p = cfg->prefix_len;
		if (p == 0 || p > 15 || n <= p)
			return d;
		k.len = p;
		copy_id(k.id, c->ckey.cid, p);
		return by_routing_id(&k);
	}
	/* QUIC-LB (draft-21): the first octet's three high bits select the configuration. */
	__u8 first = c->ckey.cid[0];
	struct cidlb_rotation *r = &cfg->rot[(first >> 5) & 7];
	if (r->mode == CIDLB_ROT_NONE || r->mode == CIDLB_ROT_UNROUTABLE)
		return d;
	if ((r->flags & CIDLB_ROT_SELF_DESCRIBING) && (__u32)(first & 0x1f) + 1 != n)
		return d;
	if (n < r->min_len)
		return d;
	if (r->mode == CIDLB_ROT_ENCRYPTED) {
		struct cidlb_decoded *e = bpf_map_lookup_elem(&decoded, &c->ckey);
		if (!e) {
			d.kind = DEC_PUNT;
			return d;
		}
		if (e->status != CIDLB_DECODED_SID || e->len == 0 || e->len > 15)
			return d;
		k.len = e->len;
		copy_id(k.id, e->id, e->len);
		return by_routing_id(&k);
	}
	/* Plaintext: the server ID follows the first octet. */
	__u32 sl = r->sid_len;
	if (sl == 0 || sl > 15)
		return d;
	k.len = sl;
	copy_id(k.id, c->ckey.cid + 1, sl);
	if (r->flags & CIDLB_ROT_HAS_MAP) {
		/* The configuration's server ID map: encoded server ID -> routing ID. */
		k.kind = (first >> 5) & 7;
		struct cidlb_sid_val *m = bpf_map_lookup_elem(&sids, &k);
		if (!m || m->len == 0 || m->len > 15)
			return d;
		struct cidlb_sid_key rk = { .len = m->len };
		copy_id(rk.id, m->id, m->len);
		return by_routing_id(&rk);
	}
	return by_routing_id(&k);
}

/* ------------------------------------------------------------------ forwarding */

static __always_inline int forward(struct xdp_md *xdp, struct ctx *c, __u32 backend_id,
				   __u32 outcome, __u32 bytes)
{
	void *data = (void *)(long)xdp->data;
	void *end = (void *)(long)xdp->data_end;
	struct ethhdr *eth = data;
	struct cidlb_backend *b = backend(backend_id);

	if (!b || (void *)(eth + 1) > end) {
		count(CIDLB_DROPPED_NO_BACKEND);
		return XDP_DROP;
	}
	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	/* One interface: back out of it. Several: out of the backend's, from its MAC
	 * (XDP_TX when that is where the frame came in, else a redirect). */
	struct cidlb_port *p = NULL;
	if (c->cfg->n_ports > 1) {
		__u32 port = b->port;
		p = bpf_map_lookup_elem(&ports, &port);
		if (!p) {
			count(CIDLB_DROPPED_NO_BACKEND);
			return XDP_DROP;
		}
		__builtin_memcpy(eth->h_source, p->mac, ETH_ALEN);
	} else {
		__builtin_memcpy(eth->h_source, c->cfg->src_mac, ETH_ALEN);
	}
	count(outcome);
	struct cidlb_traffic *t = bpf_map_lookup_elem(&traffic, &backend_id);
	if (t) {
		t->datagrams += 1;
		t->bytes += bytes;
	}
	if (p && p->ifindex != xdp->ingress_ifindex)
		return bpf_redirect_map(&tx_ports, b->port, XDP_DROP);
	return XDP_TX;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

/* decision.rs, a datagram without CID: the flow, else Maglev on the address. */
static __always_inline int route_by_address(struct xdp_md *xdp, struct ctx *c, __u32 bytes)
{
	struct cidlb_flow *f = touch_flow(c);
	if (f) {
		__u32 fb = f->backend;
		if (serves(fb))
			return forward(xdp, c, fb, CIDLB_ROUTED_FLOW, bytes);
	}
	__u32 h = maglev_pick(c->cfg, c->fkey.ip, 18);
	if (f)
		count(CIDLB_EVENT_FLOW_RESCHEDULED);
	if (h == CIDLB_NO_BACKEND)
		return drop(CIDLB_DROPPED_NO_BACKEND);
	insert_flow(c, h, f != NULL);
	return forward(xdp, c, h, CIDLB_ROUTED_HASHED, bytes);
}

/* Queues the CID and the whole frame for the slow path, which decodes the CID, caches
 * the decoding, runs this program again on the frame and sends what it forwards out of
 * the interface: the datagram is not lost. A frame too long for the record, or a full
 * queue, is passed to the stack (where the listener's address usually is not: lost). */
static __always_inline int punt(struct xdp_md *xdp, struct ctx *c)
{
	count(CIDLB_STAT_PUNTED_ENCRYPTED_CIDS);
	struct cidlb_punt *p = bpf_ringbuf_reserve(&punts, sizeof(*p), 0);
	if (!p) {
		count(CIDLB_STAT_PUNT_QUEUE_FULL);
		return XDP_PASS;
	}
	__builtin_memcpy(&p->cid, &c->ckey, sizeof(c->ckey));
	p->queued_ns = bpf_ktime_get_coarse_ns();
	/* 64-bit: a 32-bit length is compared on a zero-extended copy, and the verifier
	 * then knows no bound of the register passed. */
	__u64 len = (__u64)xdp->data_end - (__u64)xdp->data;
	__u16 copied = 0;
	/* Two checks the compiler must not fold into one (len - 1 < N, on a copy): the
	 * verifier needs both bounds on the register passed as the length. */
	asm volatile("" : "+r"(len));
	if (len <= CIDLB_PUNT_FRAME) {
		asm volatile("" : "+r"(len));
		if (len >= 1 && bpf_xdp_load_bytes(xdp, 0, p->frame, len) == 0)
			copied = (__u16)len;
	}
	p->len = copied;
	bpf_ringbuf_submit(p, 0);
	if (!copied) {
		count(CIDLB_STAT_PUNT_FRAME_TOO_LONG);
		return XDP_PASS;
	}
	return XDP_DROP;
}

/* decision.rs, a datagram with a CID (decide_cid), then what Router::route_cid does with
 * the decision. */
static __always_inline int route_cid(struct xdp_md *xdp, struct ctx *c, __u32 bytes)
{
	__u32 tag = addr_tag(c);
	int same_addr = 0;
	int have_binding = 0, b_learned = 0, b_serves = 0, b_exists = 0;
	__u32 b_backend = 0;
	__u32 target;
	__u32 outcome;

	/* Step 1: the CID's binding; a learned one is the backend's own word. */
	struct cidlb_binding *b = touch_binding(c);
	if (b) {
		have_binding = 1;
		b_backend = b->backend;
		b_learned = b->source == CIDLB_LEARNED;
		b_exists = exists(b_backend);
		b_serves = serves(b_backend);
		if (!b_serves) {
			count(CIDLB_EVENT_BINDING_BACKEND_UNAVAILABLE);
		} else {
			same_addr = b->addr_tag == tag;
			if (!same_addr)
				b->addr_tag = tag;
		}
	}
	if (have_binding && b_learned && b_serves) {
		target = b_backend;
		outcome = CIDLB_ROUTED_LEARNED;
		goto known;
	}
	/* Step 2: the encoding. */
	struct dec d = decode(c);
	if (d.kind == DEC_PUNT)
		return punt(xdp, c);
	if (d.kind == DEC_BACKEND && serves(d.backend)) {
		target = d.backend;
		outcome = CIDLB_ROUTED_ENCODED;
		goto known;
	}
	if (d.kind == DEC_UNDECODABLE)
		count(CIDLB_EVENT_ENCODED_UNDECODABLE);
	else if (d.kind == DEC_UNKNOWN_SERVER || d.kind == DEC_BACKEND)
		count(CIDLB_EVENT_ENCODED_UNKNOWN_SERVER);
	/* Step 3: a seeded binding. */
	if (have_binding && !b_learned && b_serves) {
		target = b_backend;
		outcome = CIDLB_ROUTED_SEEDED;
		goto known;
	}
	/* Step 4: the sender's flow; never seed over a binding whose backend still exists. */
	struct cidlb_flow *f = touch_flow(c);
	if (f) {
		__u32 fb = f->backend;
		if (serves(fb)) {
			if (f->seeds < CIDLB_MAX_SEEDS && (!have_binding || !b_exists)) {
				struct cidlb_binding nb = {
					.backend = (__u16)fb,
					.source = CIDLB_SEEDED,
					.last_seen = c->now,
					.addr_tag = tag,
				};
				bpf_map_update_elem(&bindings, &c->ckey, &nb, BPF_ANY);
				count(CIDLB_EVENT_BINDING_SEEDED);
				f->seeds += 1;
			}
			return forward(xdp, c, fb, CIDLB_ROUTED_CID_BY_FLOW, bytes);
		}
	}
	/* Step 5: Maglev on the CID. */
	__u32 h = maglev_pick(c->cfg, c->ckey.cid, c->ckey.len);
	if (f)
		count(CIDLB_EVENT_FLOW_RESCHEDULED);
	if (h == CIDLB_NO_BACKEND)
		return drop(CIDLB_DROPPED_NO_BACKEND);
	insert_flow(c, h, f != NULL);
	return forward(xdp, c, h, CIDLB_ROUTED_UNKNOWN_CID, bytes);

known:
	/* The CID said where to go. The sender's flow (the path replies would take) is only
	 * created when missing, never moved. */
	if (same_addr && outcome != CIDLB_ROUTED_ENCODED)
		return forward(xdp, c, target, outcome, bytes);
	{
		struct cidlb_flow *kf = touch_flow(c);
		if (!kf) {
			count(CIDLB_EVENT_CID_NEW_ADDRESS);
			insert_flow(c, target, 0);
		} else if (kf->backend != target) {
			if (serves(kf->backend)) {
				//= https://www.rfc-editor.org/rfc/rfc9146#section-6
				//# the receiver MUST NOT replace the address it uses for
				//# sending records to its peer with the source address
				//# specified in the received datagram, unless [...] The
				//# received datagram has been cryptographically verified
				//
				// The datagram goes where its CID says; the address's flow stays.
				count(CIDLB_EVENT_CID_FLOW_CONFLICT);
			} else {
				count(CIDLB_EVENT_FLOW_RESCHEDULED);
				insert_flow(c, target, 1);
			}
		}
	}
	return forward(xdp, c, target, outcome, bytes);
}

/* ------------------------------------------------------------------ the record walk */

struct cid_words {
	__u64 w[4];
};

/*
 * Reads the n-byte CID at frame offset `off` into a zero-padded buffer: directly (four
 * words and a mask) when 32 bytes follow it in the frame, else through the helper. A
 * global function: the verifier checks it once, not once per path of the record walk.
 */
__attribute__((noinline)) int cidlb_load_cid(struct xdp_md *xdp, __u32 off, __u32 n,
					     struct cid_words *out)
{
	if (!xdp || !out)
		return -1;
	out->w[0] = 0;
	out->w[1] = 0;
	out->w[2] = 0;
	out->w[3] = 0;
	if (n == 0)
		return 0;
	if (n > CIDLB_MAX_CID_LEN)
		return -1;
	off &= CIDLB_OFF_MASK;
	const __u8 *p = (void *)(long)xdp->data + off;
	__u32 idx = n;
	__u64 *m = bpf_map_lookup_elem(&cid_masks, &idx);
	if (m && (const void *)(p + CIDLB_MAX_CID_LEN) <= (void *)(long)xdp->data_end) {
		__builtin_memcpy(out, p, sizeof(*out));
		out->w[0] &= m[0];
		out->w[1] &= m[1];
		out->w[2] &= m[2];
		out->w[3] &= m[3];
		return 0;
	}
	__u64 len = n & 0x3f;
	asm volatile("" : "+r"(len));
	if (len == 0 || len > CIDLB_MAX_CID_LEN)
		return -1;
	return bpf_xdp_load_bytes(xdp, off, out, len) < 0 ? -1 : 0;
}

struct walk {
	struct xdp_md *xdp;
	struct ctx *c;
	__u32 dg_off; /* where the datagram starts in the frame */
	__u32 dlen;
	__u32 pos; /* where the next record starts */
	__u32 err; /* the drop slot of the first malformed record */
	__u32 cid_len;
	__u8 has_cid;
	__u8 mixed;
	__u8 client_hello;
	__u8 done;
};

#define CID_TRUNCATED (-2)

/* The length of the CID at `off` in record `r` (`rest` bytes of the datagram from `r`):
 * the listener's table by the CID's first octet (or `len_if_empty` where the datagram
 * ends there). -1 with `w->err` set for an unknown or too long length, CID_TRUNCATED
 * when the CID does not fit. One step of both header forms (DTLS 1.2 `tls12_cid`, the
 * DTLS 1.3 unified header). */
static __always_inline int cid_len_at(struct walk *w, const struct cidlb_config *cfg,
				      const __u8 *r, __u32 rest, __u32 off, const void *end)
{
	__u32 n;
	if (rest > off) {
		if ((const void *)(r + off + 1) > end)
			return CID_TRUNCATED;
		n = cfg->cid_len[r[off]];
	} else {
		n = cfg->len_if_empty;
	}
	if (n == CIDLB_LEN_UNKNOWN) {
		w->err = CIDLB_DROPPED_UNKNOWN_CID_LENGTH;
		return -1;
	}
	if (n > CIDLB_MAX_CID_LEN) {
		w->err = CIDLB_DROPPED_CID_TOO_LONG;
		return -1;
	}
	if (rest < off + n)
		return CID_TRUNCATED;
	return (int)n;
}

/*
 * One record of the walk (cidlb-wire's `Records` and `inspect`), a bpf_loop callback so
 * that the verifier checks it once however many records a datagram has: returns 1 to
 * stop (the datagram ended, or `err` is set), 0 for the next record.
 */
static long walk_record(__u64 index, void *arg)
{
	struct walk *w = arg;
	struct xdp_md *xdp = w->xdp;
	struct ctx *c = w->c;
	struct cidlb_config *cfg = c->cfg;
	const void *end = (void *)(long)xdp->data_end;
	const __u8 *dg = (void *)(long)xdp->data + (w->dg_off & 0xff);
	__u32 dlen = w->dlen & CIDLB_OFF_MASK;
	__u32 pos = w->pos & CIDLB_OFF_MASK;

	if (pos >= dlen) {
		w->done = 1;
		return 1;
	}
	__u32 rest = dlen - pos;
	const __u8 *r = dg + pos;
	if ((const void *)(r + 1) > end)
		goto truncated;
	__u8 first = r[0];
	__u32 hdr, len, cid_at = 0, n = 0;
	int has_cid = 0;

	//= https://www.rfc-editor.org/rfc/rfc9147#section-4.1
	//# If the first byte is alert(21), handshake(22), or ack(proposed, 26), the
	//# record MUST be interpreted as a DTLSPlaintext record.
	//
	//# If the first byte is any other value, then receivers MUST check to see if the
	//# leading bits of the first byte are 001.  If so, the implementation MUST
	//# process the record as DTLSCiphertext; the true content type will be inside
	//# the protected portion.
	//
	//# Otherwise, the record MUST be rejected as if it had failed deprotection
	//
	// As in cidlb-wire: all of 20..=27 are plaintext-format headers (DTLS 1.2 also
	// sends 20, 23, 24, 25 in that form; RFC 9853 adds 27).
	if (first >= 20 && first <= 27) {
		if (rest < 11 || (const void *)(r + 11) > end)
			goto truncated;
		if (r[1] != 0xfe) {
			w->err = CIDLB_DROPPED_BAD_VERSION;
			return 1;
		}
		hdr = 11;
		if (first == 25) {
			//= https://www.rfc-editor.org/rfc/rfc9146#section-4
			//# opaque cid[cid_length];               // New field
			//
			// The CID sits between the sequence number and the length; its length
			// is known only to the receiver.
			int got = cid_len_at(w, cfg, r, rest, 11, end);
			if (got == CID_TRUNCATED)
				goto truncated;
			if (got < 0)
				return 1;
			n = got;
			has_cid = 1;
			cid_at = pos + 11;
			hdr = 11 + n;
		}
		if (rest < hdr + 2)
			goto truncated;
		const __u8 *l = dg + ((pos + hdr) & CIDLB_OFF_MASK);
		if ((const void *)(l + 2) > end)
			goto truncated;
		len = ((__u32)l[0] << 8) | l[1];
		hdr += 2;
		/* A plaintext epoch-0 handshake record whose first message is a ClientHello
		 * (cidlb-wire's `inspect`). */
		if (first == 22 && r[3] == 0 && r[4] == 0 && len > 0 && rest > hdr) {
			const __u8 *m = dg + ((pos + hdr) & CIDLB_OFF_MASK);
			if ((const void *)(m + 1) <= end && m[0] == 1 && len <= rest - hdr)
				w->client_hello = 1;
		}
	} else if (first >= 32 && first <= 63) {
		//= https://www.rfc-editor.org/rfc/rfc9147#section-4
		//# 0 1 2 3 4 5 6 7
		//# +-+-+-+-+-+-+-+-+
		//# |0|0|1|C|S|L|E E|
		//# +-+-+-+-+-+-+-+-+
		//# | Connection ID |   Legend:
		//# | (if any,      |
		//# /  length as    /   C   - Connection ID (CID) present
		//# |  negotiated)  |   S   - Sequence number length
		//# +-+-+-+-+-+-+-+-+   L   - Length present
		//# |  8 or 16 bit  |   E   - Epoch
		//# |Sequence Number|
		//# +-+-+-+-+-+-+-+-+
		//# | 16 bit Length |
		//# | (if present)  |
		//# +-+-+-+-+-+-+-+-+
		hdr = 1;
		if (first & 0x10) {
			int got = cid_len_at(w, cfg, r, rest, 1, end);
			if (got == CID_TRUNCATED)
				goto truncated;
			if (got < 0)
				return 1;
			n = got;
			has_cid = 1;
			cid_at = pos + 1;
			hdr = 1 + n;
		}
		hdr += (first & 0x08) ? 2 : 1;
		if (rest < hdr)
			goto truncated;
		if (first & 0x04) {
			if (rest < hdr + 2)
				goto truncated;
			const __u8 *l = dg + ((pos + hdr) & CIDLB_OFF_MASK);
			if ((const void *)(l + 2) > end)
				goto truncated;
			len = ((__u32)l[0] << 8) | l[1];
			hdr += 2;
		} else {
			//= https://www.rfc-editor.org/rfc/rfc9147#section-4
			//# The length field MAY be omitted by clearing the L bit, which
			//# means that the record consumes the entire rest of the datagram
			//# in the lower level transport.
			len = rest - hdr;
		}
	} else {
		w->err = CIDLB_DROPPED_NOT_DTLS;
		return 1;
	}
	//= https://www.rfc-editor.org/rfc/rfc9147#section-4.3
	//# Records MUST NOT span datagrams.
	if (len > rest - hdr) {
		w->err = CIDLB_DROPPED_LENGTH_OVERRUN;
		return 1;
	}
	if (has_cid) {
		if (!w->has_cid) {
			w->has_cid = 1;
			w->cid_len = n;
			c->ckey.len = n;
			if (cidlb_load_cid(xdp, w->dg_off + cid_at, n,
					   (struct cid_words *)c->ckey.cid) < 0)
				goto truncated;
		} else if (!w->mixed) {
			if (n != w->cid_len) {
				w->mixed = 1;
			} else {
				struct cid_words other;
				if (cidlb_load_cid(xdp, w->dg_off + cid_at, n, &other) < 0)
					goto truncated;
				__u64 *a = (__u64 *)c->ckey.cid;
				if (a[0] != other.w[0] || a[1] != other.w[1] || a[2] != other.w[2] ||
				    a[3] != other.w[3])
					w->mixed = 1;
			}
		}
	}
	w->pos = pos + hdr + len;
	return 0;

truncated:
	w->err = CIDLB_DROPPED_TRUNCATED_HEADER;
	return 1;
}

/* ------------------------------------------------------------------ entry */

SEC("xdp")
int cidlb_xdp(struct xdp_md *xdp)
{
	void *data = (void *)(long)xdp->data;
	void *end = (void *)(long)xdp->data_end;
	struct ctx c = {};
	__u32 zero = 0;

	__u32 *live = bpf_map_lookup_elem(&config_live, &zero);
	if (!live)
		return XDP_PASS;
	__u32 which = *live & 1;
	c.cfg = bpf_map_lookup_elem(&config, &which);
	if (!c.cfg || c.cfg->family == 0)
		return XDP_PASS;
	struct cidlb_config *cfg = c.cfg;

	/* Ethernet, with at most one 802.1Q tag. */
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		goto other;
	__u16 proto = eth->h_proto;
	__u32 l3 = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q)) {
		__u8 *tag = data + l3;
		if ((void *)(tag + 4) > end)
			goto other;
		proto = *(__u16 *)(tag + 2);
		l3 += 4;
	}

	__u32 l4;
	__u32 ip_end; /* end of the IP packet (frames may be padded) */
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
			goto other;
		if (cfg->family != 4 || ip->protocol != IPPROTO_UDP ||
		    ip->daddr != *(__u32 *)&cfg->vip[12])
			goto other;
		/* Fragments go to the stack: only the first carries the UDP header. */
		if (ip->frag_off & bpf_htons(0x3fff)) {
			count(CIDLB_STAT_PASSED_FRAGMENTS);
			return XDP_PASS;
		}
		__u32 ihl = (__u32)ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl + sizeof(struct udphdr))
			goto bad_udp;
		l4 = l3 + ihl;
		ip_end = l3 + tot;
		__builtin_memset(c.fkey.ip, 0, 10);
		c.fkey.ip[10] = 0xff;
		c.fkey.ip[11] = 0xff;
		__builtin_memcpy(&c.fkey.ip[12], &ip->saddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) > end || ip6->version != 6 || cfg->family != 6)
			goto other;
		__u32 *d = (__u32 *)&ip6->daddr;
		__u32 *v = (__u32 *)cfg->vip;
		if (d[0] != v[0] || d[1] != v[1] || d[2] != v[2] || d[3] != v[3])
			goto other;
		__u8 nh = ip6->nexthdr;
		if (nh != IPPROTO_UDP) {
			/* Extension headers (hop-by-hop, routing, fragment, ESP, AH,
			 * destination options, mobility, HIP, shim6, experiments) go to the
			 * stack. */
			if (nh == 0 || nh == 43 || nh == 44 || nh == 50 || nh == 51 || nh == 60 ||
			    nh == 135 || nh == 139 || nh == 140 || nh == 253 || nh == 254) {
				count(CIDLB_STAT_PASSED_IPV6_EXTENSIONS);
				return XDP_PASS;
			}
			goto other;
		}
		l4 = l3 + sizeof(*ip6);
		ip_end = l4 + bpf_ntohs(ip6->payload_len);
		__builtin_memcpy(c.fkey.ip, &ip6->saddr, 16);
	} else {
		goto other;
	}

	l4 &= 0xff;
	struct udphdr *udp = data + l4;
	if ((void *)(udp + 1) > end)
		goto other;
	if (udp->dest != cfg->port)
		goto other;
	__u32 ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || l4 + ulen > ip_end || data + l4 + ulen > end)
		goto bad_udp;
	__builtin_memcpy(c.fkey.port, &udp->source, 2);

	__u32 dg_off = l4 + sizeof(*udp);
	__u32 dlen = ulen - sizeof(*udp);
	if (dlen > CIDLB_MAX_DATAGRAM)
		goto bad_udp;
	c.now = now_secs();

	if (dlen == 0)
		return drop(CIDLB_DROPPED_EMPTY);
	if (!cfg->route_by_cid)
		/* Address-only mode: any datagram, by address (no DTLS validation). */
		return route_by_address(xdp, &c, dlen);

	struct walk w = { .xdp = xdp, .c = &c, .dg_off = dg_off, .dlen = dlen };
	bpf_loop(CIDLB_MAX_RECORDS, walk_record, &w, 0);
	if (w.err)
		return drop(w.err);
	if (!w.done && w.pos < dlen) {
		/* The datagram ended after the last record walked: done, else too many. */
		count(CIDLB_STAT_PASSED_TOO_MANY_RECORDS);
		return XDP_PASS;
	}
	if (w.client_hello)
		count(CIDLB_EVENT_CLIENT_HELLO);
	if (!w.has_cid)
		return route_by_address(xdp, &c, dlen);
	if (w.mixed) {
		if (cfg->multi_cid == CIDLB_MULTI_DROP)
			return drop(CIDLB_DROPPED_MIXED_CIDS);
		count(CIDLB_EVENT_MIXED_CIDS_ROUTED_BY_FIRST);
	}
	return route_cid(xdp, &c, dlen);

bad_udp:
	count(CIDLB_STAT_PASSED_BAD_UDP);
	return XDP_PASS;
other:
	count(CIDLB_STAT_PASSED_OTHER);
	return XDP_PASS;
}

/*
 * XDP_PASS, nothing else. XDP_TX out of a veth reaches the peer only when the peer has
 * an XDP program too: attach this one there (XdpPass in the loader).
 */
SEC("xdp")
int cidlb_pass(struct xdp_md *xdp)
{
	return XDP_PASS;
}
