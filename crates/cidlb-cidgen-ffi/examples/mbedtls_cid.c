/*
 * How a C DTLS server behind cidlb issues routable Connection IDs.
 *
 * The server creates one generator for its own server ID, with the QUIC-LB
 * configuration that every cidlb instance in front of it also has, and takes a fresh
 * CID from it for every new DTLS session, before the handshake:
 *
 *   Mbed TLS (3.x, MBEDTLS_SSL_DTLS_CONNECTION_ID):  issue_cid_mbedtls() below
 *   wolfSSL (built with WOLFSSL_DTLS_CID):           issue_cid_wolfssl() below
 *
 * The matching listener of crates/cidlb/examples/cidlb.toml, of which this server is
 * the backend "dtls-r1" issuing CIDs of the newest configuration, rotation 1
 * (tests/c_example.rs checks that this section, the constants in main() and the CIDs
 * this program prints all agree with that file):
 *
 * ```toml
 *   [[listener]]
 *   name = "coaps-routable"
 *   address = "0.0.0.0:5686"
 *   cid_length = 8
 *
 *     [listener.cid_format]
 *     format = "quic-lb"
 *
 *       [[listener.cid_format.config]]
 *       rotation = 0
 *       server_id_length = 1
 *       nonce_length = 6
 *       key = "8f95f09245765f80256934e50c66207f"
 *       self_describing_length = false
 *
 *       [[listener.cid_format.config]]
 *       rotation = 1
 *       server_id_length = 2
 *       nonce_length = 5
 *       key = "fdf726a9893ec05c0632d3956680baf0"
 *
 *     [[listener.backend]]
 *     name = "dtls-r1"
 *     address = "10.0.0.1:5686"
 *     server_id = { 0 = "01", 1 = "0a01" }
 * ```
 *
 * Build and run (from the workspace root; docs/routable-cids.md, "From C"):
 *
 *   cargo build --release -p cidlb-cidgen-ffi
 *   cc -std=c11 -Wall -Wextra -I crates/cidlb-cidgen-ffi/include \
 *      crates/cidlb-cidgen-ffi/examples/mbedtls_cid.c \
 *      target/release/libcidlb_cidgen.a -lpthread -ldl -lm -o mbedtls_cid
 *   ./mbedtls_cid
 *
 * Add -DCIDLB_EXAMPLE_MBEDTLS (and Mbed TLS's include path and libraries) or
 * -DCIDLB_EXAMPLE_WOLFSSL to compile the stack-specific functions. Run with a count N
 * (default 4), it prints the CIDs it would hand to the stack, one per line: N
 * "quic-lb <hex>" for the configuration above; the saved "counter <hex>" and
 * "issued"/"remaining" counts of a server shutting down; N "resumed <hex>" from the
 * generator that resumes them after the restart, continuing the same nonce sequence;
 * then "prefix <hex>" for a Californium style node-ID prefix.
 * `cidlb cid decode --config cidlb.toml <hex>` names the backend.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidlb_cidgen.h"

#if defined(CIDLB_EXAMPLE_MBEDTLS)
#include <mbedtls/ssl.h>

/* Once, when setting up the server's mbedtls_ssl_config: records from clients carry
 * CIDs of exactly this length (DTLS does not put the length on the wire). */
int setup_cid_length_mbedtls(mbedtls_ssl_config *conf, const cidlb_cidgen *gen)
{
    return mbedtls_ssl_conf_cid(conf, cidlb_cidgen_cid_len(gen),
                                MBEDTLS_SSL_UNEXPECTED_CID_IGNORE);
}

/* Per session, after mbedtls_ssl_setup() and before the handshake: the CID this server
 * announces in its ServerHello, which the client then puts in every record. */
int issue_cid_mbedtls(mbedtls_ssl_context *ssl, cidlb_cidgen *gen)
{
    unsigned char cid[CIDLB_CID_MAX_LEN];
    size_t len = 0;
    int rc = cidlb_cidgen_next(gen, cid, sizeof cid, &len);
    if (rc != CIDLB_OK) {
        /* CIDLB_ERR_EXHAUSTED: no nonce left under this key; the operator must roll
         * out a new configuration (see docs/routable-cids.md, "Rotation"). */
        fprintf(stderr, "cidlb_cidgen_next: %s\n", cidlb_cidgen_strerror(rc));
        return rc;
    }
    return mbedtls_ssl_set_cid(ssl, MBEDTLS_SSL_CID_ENABLED, cid, len);
}
#endif

#if defined(CIDLB_EXAMPLE_WOLFSSL)
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

/* Per session, before wolfSSL_accept(). */
int issue_cid_wolfssl(WOLFSSL *ssl, cidlb_cidgen *gen)
{
    unsigned char cid[CIDLB_CID_MAX_LEN];
    size_t len = 0;
    int rc = cidlb_cidgen_next(gen, cid, sizeof cid, &len);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_next: %s\n", cidlb_cidgen_strerror(rc));
        return rc;
    }
    if (wolfSSL_dtls_cid_use(ssl) != WOLFSSL_SUCCESS)
        return -1;
    return wolfSSL_dtls_cid_set(ssl, cid, (unsigned int)len) == WOLFSSL_SUCCESS ? 0 : -1;
}
#endif

static void print_cid(const char *label, const unsigned char *cid, size_t len)
{
    printf("%s ", label);
    for (size_t i = 0; i < len; i++)
        printf("%02x", cid[i]);
    printf("\n");
}

/* Issues count CIDs from gen, printed with label. */
static int issue(cidlb_cidgen *gen, const char *label, int count)
{
    for (int i = 0; i < count; i++) {
        unsigned char cid[CIDLB_CID_MAX_LEN];
        size_t len = 0;
        int rc = cidlb_cidgen_next(gen, cid, sizeof cid, &len);
        if (rc != CIDLB_OK) {
            fprintf(stderr, "cidlb_cidgen_next: %s\n", cidlb_cidgen_strerror(rc));
            return rc;
        }
        /* Here a server calls issue_cid_mbedtls() / issue_cid_wolfssl() instead. */
        print_cid(label, cid, len);
    }
    return CIDLB_OK;
}

/* Adds n to a big-endian counter of len octets, modulo 2^(8 len). */
static void counter_add(unsigned char *counter, size_t len, uint64_t n)
{
    for (size_t i = len; i-- > 0 && n != 0;) {
        uint64_t sum = counter[i] + (n & 0xff);
        counter[i] = (unsigned char)sum;
        n = (n >> 8) + (sum >> 8);
    }
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 4;
    if (count < 0)
        count = 0;
    /* The shared configuration, rotation 1 of the listener above; in a real server,
     * read from its own config file. */
    static const unsigned char key[16] = {0xfd, 0xf7, 0x26, 0xa9, 0x89, 0x3e, 0xc0, 0x5c,
                                          0x06, 0x32, 0xd3, 0x95, 0x66, 0x80, 0xba, 0xf0};
    const cidlb_quic_lb_config config = {
        .rotation = 1,
        .server_id_length = 2,
        .nonce_length = 5,
        .self_describing_length = 0,
        .key = key,
    };
    /* This server's ID: the `server_id` of its [[listener.backend]] entry, rotation 1. */
    const unsigned char server_id[2] = {0x0a, 0x01};

    cidlb_cidgen *gen = NULL;
    int rc = cidlb_cidgen_new_quic_lb(&config, server_id, sizeof server_id, &gen);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_new_quic_lb: %s\n", cidlb_cidgen_strerror(rc));
        return 1;
    }
    printf("draft %s, cid_len %zu\n", cidlb_cidgen_quic_lb_draft(), cidlb_cidgen_cid_len(gen));
    printf("config rotation %u, server_id_length %u, nonce_length %u, "
           "self_describing_length %u, server_id %02x%02x\n",
           config.rotation, config.server_id_length, config.nonce_length,
           config.self_describing_length, server_id[0], server_id[1]);
    if (issue(gen, "quic-lb", count) != CIDLB_OK) {
        cidlb_cidgen_free(gen);
        return 1;
    }

    /* A clean shutdown: save the counter and the count after the last CID (a real
     * server writes them to a file). Its counter starts at a random point, so without
     * this a restarted server would start at another random point, and its nonces could
     * (rarely, with short nonces) meet the ones it issued before. */
    unsigned char saved[CIDLB_COUNTER_MAX_LEN];
    size_t saved_len = 0;
    rc = cidlb_cidgen_counter(gen, saved, sizeof saved, &saved_len);
    const uint64_t issued = cidlb_cidgen_issued(gen);
    const uint64_t remaining = cidlb_cidgen_remaining(gen);
    cidlb_cidgen_free(gen);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_counter: %s\n", cidlb_cidgen_strerror(rc));
        return 1;
    }
    print_cid("counter", saved, saved_len);
    printf("issued %llu, remaining %llu\n", (unsigned long long)issued,
           (unsigned long long)remaining);

    /* The restart: a new generator for the same configuration and server ID resumes,
     * before its first CID. Resume only from a state saved after the last CID, and
     * delete the file once resumed: after a crash, a stale save would repeat the
     * nonces issued since, and a fresh generator (random start) is the safer choice. */
    rc = cidlb_cidgen_new_quic_lb(&config, server_id, sizeof server_id, &gen);
    if (rc == CIDLB_OK)
        rc = cidlb_cidgen_resume(gen, saved, saved_len, issued);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_resume: %s\n", cidlb_cidgen_strerror(rc));
        cidlb_cidgen_free(gen);
        return 1;
    }
    if (cidlb_cidgen_issued(gen) != issued || cidlb_cidgen_remaining(gen) != remaining) {
        fprintf(stderr, "the resumed generator lost the count\n");
        cidlb_cidgen_free(gen);
        return 1;
    }
    if (issue(gen, "resumed", count) != CIDLB_OK) {
        cidlb_cidgen_free(gen);
        return 1;
    }
    /* It continued the sequence: count more nonces past the saved counter, none of the
     * earlier ones again (under a key the nonce is the counter, encrypted). */
    unsigned char now[CIDLB_COUNTER_MAX_LEN], expected[CIDLB_COUNTER_MAX_LEN];
    size_t now_len = 0;
    memcpy(expected, saved, saved_len);
    counter_add(expected, saved_len, (uint64_t)count);
    if (cidlb_cidgen_counter(gen, now, sizeof now, &now_len) != CIDLB_OK ||
        now_len != saved_len || memcmp(now, expected, now_len) != 0 ||
        cidlb_cidgen_issued(gen) != issued + (uint64_t)count ||
        cidlb_cidgen_remaining(gen) != remaining - (uint64_t)count) {
        fprintf(stderr, "the resumed generator did not continue the sequence\n");
        cidlb_cidgen_free(gen);
        return 1;
    }
    cidlb_cidgen_free(gen);

    /* Eclipse Californium's cluster format: node ID 0x2a in byte 0 of 6-octet CIDs. */
    const unsigned char node_id[1] = {0x2a};
    rc = cidlb_cidgen_new_prefix(node_id, sizeof node_id, 6, &gen);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_new_prefix: %s\n", cidlb_cidgen_strerror(rc));
        return 1;
    }
    rc = issue(gen, "prefix", 1);
    cidlb_cidgen_free(gen);
    return rc == CIDLB_OK ? 0 : 1;
}
