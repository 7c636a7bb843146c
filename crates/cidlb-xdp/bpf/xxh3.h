/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * XXH3-64 with a seed, for inputs of 0 to 32 bytes: the CIDs (at most 32 bytes) and the
 * 18-byte flow keys that the Maglev table is keyed by. A port of the short-input paths
 * of xxHash's XXH3_64bits_withSeed (inputs up to 240 bytes use the default secret and
 * the seed directly, no derived secret), bit for bit the function `cidlb-core`'s Router
 * calls through `xxhash_rust::xxh3::xxh3_64_with_seed`, so that the XDP plane and the
 * NAT plane pick the same Maglev slot for the same CID or address.
 *
 * BPF has no 64x64->128 multiplication: mul128_fold64 uses four 32x32->64 products
 * (xxHash's portable XXH_mult64to128).
 *
 * Plain C: the golden tests check it against the Rust crate through the program.
 */
#ifndef CIDLB_XXH3_H
#define CIDLB_XXH3_H

#include <linux/types.h>

#define XXH_PRIME64_1 0x9E3779B185EBCA87ULL
#define XXH_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define XXH_PRIME64_3 0x165667B19E3779F9ULL
#define XXH_PRIME_MX1 0x165667919E3779F9ULL
#define XXH_PRIME_MX2 0x9FB21C651E98DF25ULL

/* The default secret's first 72 bytes, as little-endian words (kSecret[8*i..8*i+8]). */
#define XXH_S64_0 0xbe4ba423396cfeb8ULL /* bytes 0..8 */
#define XXH_S64_8 0x1cad21f72c81017cULL
#define XXH_S64_16 0xdb979083e96dd4deULL
#define XXH_S64_24 0x1f67b3b7a4a44072ULL
#define XXH_S64_32 0x78e5c0cc4ee679cbULL
#define XXH_S64_40 0x2172ffcc7dd05a82ULL
#define XXH_S64_48 0x8e2443f7744608b8ULL
#define XXH_S64_56 0x4c263a81e69035e0ULL
#define XXH_S64_64 0xcb00c391bb52283cULL
#define XXH_S32_0 0x396cfeb8U /* bytes 0..4 */
#define XXH_S32_4 0xbe4ba423U /* bytes 4..8 */

static __always_inline __u64 xxh_rd64(const __u8 *p)
{
	return (__u64)p[0] | (__u64)p[1] << 8 | (__u64)p[2] << 16 | (__u64)p[3] << 24 |
	       (__u64)p[4] << 32 | (__u64)p[5] << 40 | (__u64)p[6] << 48 | (__u64)p[7] << 56;
}

static __always_inline __u32 xxh_rd32(const __u8 *p)
{
	return (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

static __always_inline __u64 xxh_mul128_fold64(__u64 a, __u64 b)
{
	__u64 lo_lo = (a & 0xffffffffULL) * (b & 0xffffffffULL);
	__u64 hi_lo = (a >> 32) * (b & 0xffffffffULL);
	__u64 lo_hi = (a & 0xffffffffULL) * (b >> 32);
	__u64 hi_hi = (a >> 32) * (b >> 32);
	__u64 cross = (lo_lo >> 32) + (hi_lo & 0xffffffffULL) + lo_hi;
	__u64 upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
	__u64 lower = (cross << 32) | (lo_lo & 0xffffffffULL);
	return lower ^ upper;
}

static __always_inline __u64 xxh64_avalanche(__u64 h)
{
	h ^= h >> 33;
	h *= XXH_PRIME64_2;
	h ^= h >> 29;
	h *= XXH_PRIME64_3;
	h ^= h >> 32;
	return h;
}

static __always_inline __u64 xxh3_avalanche(__u64 h)
{
	h ^= h >> 37;
	h *= XXH_PRIME_MX1;
	h ^= h >> 32;
	return h;
}

static __always_inline __u64 xxh_rotl64(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static __always_inline __u64 xxh3_rrmxmx(__u64 h, __u64 len)
{
	h ^= xxh_rotl64(h, 49) ^ xxh_rotl64(h, 24);
	h *= XXH_PRIME_MX2;
	h ^= (h >> 35) + len;
	h *= XXH_PRIME_MX2;
	h ^= h >> 28;
	return h;
}

static __always_inline __u64 xxh_bswap64(__u64 x)
{
	return __builtin_bswap64(x);
}

static __always_inline __u64 xxh3_mix16(const __u8 *in, __u64 s_lo, __u64 s_hi, __u64 seed)
{
	__u64 lo = xxh_rd64(in) ^ (s_lo + seed);
	__u64 hi = xxh_rd64(in + 8) ^ (s_hi - seed);
	return xxh_mul128_fold64(lo, hi);
}

/*
 * XXH3-64 of in[0..len) with `seed`; `in` must have 32 readable bytes (a zero-padded
 * buffer), len 0..=32.
 */
static __always_inline __u64 xxh3_64_upto32(const __u8 *in, __u32 len, __u64 seed)
{
	/* Hide the buffer's alignment from the compiler: knowing it, clang turns `in +
	 * tail` into `in | tail`, which the verifier refuses on a pointer. */
	asm volatile("" : "+r"(in));
	if (len > 32)
		return 0;
	if (len > 16) {
		__u64 acc = (__u64)len * XXH_PRIME64_1;
		__u32 tail = (len - 16) & 31;
		acc += xxh3_mix16(in, XXH_S64_0, XXH_S64_8, seed);
		acc += xxh3_mix16(in + tail, XXH_S64_16, XXH_S64_24, seed);
		return xxh3_avalanche(acc);
	}
	if (len > 8) {
		__u64 flip1 = (XXH_S64_24 ^ XXH_S64_32) + seed;
		__u64 flip2 = (XXH_S64_40 ^ XXH_S64_48) - seed;
		__u32 tail = (len - 8) & 15;
		__u64 in_lo = xxh_rd64(in) ^ flip1;
		__u64 in_hi = xxh_rd64(in + tail) ^ flip2;
		__u64 acc = (__u64)len + xxh_bswap64(in_lo) + in_hi + xxh_mul128_fold64(in_lo, in_hi);
		return xxh3_avalanche(acc);
	}
	if (len >= 4) {
		__u64 s = seed ^ ((__u64)__builtin_bswap32((__u32)seed) << 32);
		__u32 tail = (len - 4) & 7;
		__u32 in1 = xxh_rd32(in);
		__u32 in2 = xxh_rd32(in + tail);
		__u64 flip = (XXH_S64_8 ^ XXH_S64_16) - s;
		__u64 in64 = (__u64)in2 + ((__u64)in1 << 32);
		return xxh3_rrmxmx(in64 ^ flip, len);
	}
	if (len > 0) {
		__u8 c1 = in[0];
		__u8 c2 = in[(len >> 1) & 3];
		__u8 c3 = in[(len - 1) & 3];
		__u32 combined = ((__u32)c1 << 16) | ((__u32)c2 << 24) | (__u32)c3 | (len << 8);
		__u64 flip = (__u64)(XXH_S32_0 ^ XXH_S32_4) + seed;
		return xxh64_avalanche((__u64)combined ^ flip);
	}
	return xxh64_avalanche(seed ^ (XXH_S64_56 ^ XXH_S64_64));
}

#endif
