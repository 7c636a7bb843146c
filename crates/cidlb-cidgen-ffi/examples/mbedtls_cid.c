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
 * The matching cidlb.toml listener section:
 *
 *   [listener.cid_format]
 *   format = "quic-lb"
 *     [[listener.cid_format.config]]
 *     rotation = 1
 *     server_id_length = 2
 *     nonce_length = 6
 *     key = "8f95f09245765f80256934e50c66207f"
 *   [[listener.backend]]
 *   address = "10.0.0.1:5684"
 *   server_id = "0a01"
 *
 * Build (from the workspace root, after `cargo build -p cidlb-cidgen-ffi`):
 *
 *   cc -I crates/cidlb-cidgen-ffi/include crates/cidlb-cidgen-ffi/examples/mbedtls_cid.c \
 *      target/debug/libcidlb_cidgen.a -lpthread -ldl -lm -o mbedtls_cid
 *
 * Add -DCIDLB_EXAMPLE_MBEDTLS (and Mbed TLS's include path and libraries) or
 * -DCIDLB_EXAMPLE_WOLFSSL to compile the stack-specific functions. Run without
 * arguments, it prints the CIDs it would hand to the stack, one per line:
 * "quic-lb <hex>" for the configuration above, then "prefix <hex>" for a Californium
 * style node-ID prefix. `cidlb cid decode --config cidlb.toml <hex>` names the backend.
 */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 4;
    /* The shared configuration; in a real server, read from its own config file. */
    static const unsigned char key[16] = {0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80,
                                          0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20, 0x7f};
    const cidlb_quic_lb_config config = {
        .rotation = 1,
        .server_id_length = 2,
        .nonce_length = 6,
        .self_describing_length = 0,
        .key = key,
    };
    /* This server's ID: the `server_id` of its [[listener.backend]] entry. */
    const unsigned char server_id[2] = {0x0a, 0x01};

    cidlb_cidgen *gen = NULL;
    int rc = cidlb_cidgen_new_quic_lb(&config, server_id, sizeof server_id, &gen);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_new_quic_lb: %s\n", cidlb_cidgen_strerror(rc));
        return 1;
    }
    printf("draft %s, cid_len %zu\n", cidlb_cidgen_quic_lb_draft(), cidlb_cidgen_cid_len(gen));
    for (int i = 0; i < count; i++) {
        unsigned char cid[CIDLB_CID_MAX_LEN];
        size_t len = 0;
        rc = cidlb_cidgen_next(gen, cid, sizeof cid, &len);
        if (rc != CIDLB_OK) {
            fprintf(stderr, "cidlb_cidgen_next: %s\n", cidlb_cidgen_strerror(rc));
            cidlb_cidgen_free(gen);
            return 1;
        }
        /* Here a server calls issue_cid_mbedtls() / issue_cid_wolfssl() instead. */
        print_cid("quic-lb", cid, len);
    }
    cidlb_cidgen_free(gen);

    /* Eclipse Californium's cluster format: node ID 0x2a in byte 0 of 6-octet CIDs. */
    const unsigned char node_id[1] = {0x2a};
    rc = cidlb_cidgen_new_prefix(node_id, sizeof node_id, 6, &gen);
    if (rc != CIDLB_OK) {
        fprintf(stderr, "cidlb_cidgen_new_prefix: %s\n", cidlb_cidgen_strerror(rc));
        return 1;
    }
    unsigned char cid[CIDLB_CID_MAX_LEN];
    size_t len = 0;
    if (cidlb_cidgen_next(gen, cid, sizeof cid, &len) == CIDLB_OK)
        print_cid("prefix", cid, len);
    cidlb_cidgen_free(gen);
    return 0;
}
