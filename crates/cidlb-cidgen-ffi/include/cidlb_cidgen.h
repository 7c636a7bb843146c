/*
 * cidlb_cidgen.h: routable DTLS Connection IDs for servers behind cidlb.
 *
 * A generator issues CIDs that carry this server's ID, in the QUIC-LB format pinned to
 * draft-ietf-quic-load-balancers-21 (plaintext, single-pass AES-128-ECB or four-pass
 * Feistel) or in the plain server-ID prefix format (Eclipse Californium's cluster
 * format). Any cidlb instance with the same configuration routes them to this server
 * without shared state. Under a key, nonces never repeat: when they run out,
 * cidlb_cidgen_next() returns CIDLB_ERR_EXHAUSTED instead of wrapping around. A server
 * that restarts can save its generator's counter and count, and resume them.
 *
 * Give each CID to the DTLS stack before the handshake:
 *   Mbed TLS: mbedtls_ssl_conf_cid(&conf, cidlb_cidgen_cid_len(gen), ...) once, then per
 *             session mbedtls_ssl_set_cid(&ssl, MBEDTLS_SSL_CID_ENABLED, cid, len);
 *   wolfSSL:  wolfSSL_dtls_cid_use(ssl); wolfSSL_dtls_cid_set(ssl, cid, len);
 * See examples/mbedtls_cid.c.
 *
 * Link with -lcidlb_cidgen (static: also -lpthread -ldl -lm). Generators are
 * thread-safe. Written by hand; tests/header.rs keeps it in step with src/lib.rs.
 */
#ifndef CIDLB_CIDGEN_H
#define CIDLB_CIDGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define CIDLB_OK 0
#define CIDLB_ERR_NULL (-1)             /* a required pointer is NULL */
#define CIDLB_ERR_INVALID (-2)          /* invalid configuration or server ID */
#define CIDLB_ERR_BUFFER_TOO_SMALL (-3) /* output buffer shorter than the CID */
#define CIDLB_ERR_EXHAUSTED (-4)        /* nonce space used up: new configuration */
#define CIDLB_ERR_RANDOM (-5)           /* the OS random source failed */
#define CIDLB_ERR_PANIC (-6)            /* internal error */

/* A buffer of this many octets holds any CID a generator issues. */
#define CIDLB_CID_MAX_LEN 32

/* A buffer of this many octets holds any counter cidlb_cidgen_counter() writes. */
#define CIDLB_COUNTER_MAX_LEN 18

/* cidlb_cidgen_remaining(): no limit, or more than fits 64 bits. */
#define CIDLB_REMAINING_UNLIMITED UINT64_MAX

/* A QUIC-LB configuration (draft-ietf-quic-load-balancers-21). */
typedef struct cidlb_quic_lb_config {
    uint8_t rotation;               /* config rotation codepoint, 0..6 */
    uint8_t server_id_length;       /* octets, 1..15 */
    uint8_t nonce_length;           /* octets, 4..18; server ID + nonce <= 19 */
    uint8_t self_describing_length; /* non-zero: first octet carries CID length - 1 */
    const uint8_t *key;             /* 16-octet AES-128 key, or NULL: plaintext */
} cidlb_quic_lb_config;

/* An opaque generator for one server ID. */
typedef struct cidlb_cidgen cidlb_cidgen;

/* Creates a QUIC-LB generator for server_id (server_id_len octets, the configuration's
 * server ID length). On CIDLB_OK, *out holds it; free it with cidlb_cidgen_free(). */
int cidlb_cidgen_new_quic_lb(const cidlb_quic_lb_config *config,
                             const uint8_t *server_id, size_t server_id_len,
                             cidlb_cidgen **out);

/* Creates a prefix-format generator: cid_len-octet CIDs starting with server_id
 * (1..15 octets; Californium: 1, the node ID), the rest random. */
int cidlb_cidgen_new_prefix(const uint8_t *server_id, size_t server_id_len,
                            size_t cid_len, cidlb_cidgen **out);

/* Writes the next CID into out (out_cap octets) and its length into *out_len. */
int cidlb_cidgen_next(cidlb_cidgen *generator, uint8_t *out, size_t out_cap,
                      size_t *out_len);

/* Length of the CIDs the generator issues; 0 for NULL. */
size_t cidlb_cidgen_cid_len(const cidlb_cidgen *generator);

/* Writes the generator's counter (QUIC-LB: the next nonce, nonce_length octets) into
 * out (out_cap octets) and its length into *out_len; length 0 for the prefix format.
 * Save it with cidlb_cidgen_issued() at a clean shutdown, after the last CID. */
int cidlb_cidgen_counter(const cidlb_cidgen *generator, uint8_t *out, size_t out_cap,
                         size_t *out_len);

/* Resumes a saved generator: a new generator of the same configuration and server ID,
 * before its first CID, continues the nonce sequence of the one whose counter and
 * issued count were saved (exhaustion counts both). CIDLB_ERR_INVALID for a wrong
 * counter length, a plaintext configuration (its nonce permutation is private to each
 * generator), the prefix format, or a generator that has issued a CID;
 * CIDLB_ERR_EXHAUSTED when issued exceeds the nonce space. Unchanged on error. */
int cidlb_cidgen_resume(cidlb_cidgen *generator, const uint8_t *counter,
                        size_t counter_len, uint64_t issued);

/* CIDs issued so far, counting those of the generators it resumes; 0 for NULL. */
uint64_t cidlb_cidgen_issued(const cidlb_cidgen *generator);

/* CIDs it can still issue before CIDLB_ERR_EXHAUSTED; CIDLB_REMAINING_UNLIMITED for no
 * limit (prefix format, nonces of 16 octets or more) or over 64 bits; 0 for NULL. */
uint64_t cidlb_cidgen_remaining(const cidlb_cidgen *generator);

/* Frees a generator; NULL is ignored. */
void cidlb_cidgen_free(cidlb_cidgen *generator);

/* A static English description of a status code. */
const char *cidlb_cidgen_strerror(int code);

/* "draft-ietf-quic-load-balancers-21": the QUIC-LB revision implemented. */
const char *cidlb_cidgen_quic_lb_draft(void);

#ifdef __cplusplus
}
#endif

#endif /* CIDLB_CIDGEN_H */
