#ifndef SHOAL_BENCH_TLS_CLIENT_H
#define SHOAL_BENCH_TLS_CLIENT_H

/*
 * Client-side TLS for shoal-bench over OpenSSL memory BIOs: the caller moves ciphertext
 * between the socket and these functions, so TLS never touches libuv. The only file of bench/
 * that includes OpenSSL.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/buf.h"

struct tls_client_ctx;
struct tls_client;

/*
 * Creates a context. With cafile, the server's certificate is verified against it (host name
 * not checked: benchmarks dial addresses); without, anything is accepted. certfile/keyfile
 * (both or neither) give a client certificate. Returns NULL with a message in err on failure.
 */
struct tls_client_ctx *tls_client_ctx_create(const char *cafile, const char *certfile,
                                             const char *keyfile, char *err, size_t errlen);
void tls_client_ctx_destroy(struct tls_client_ctx **ctx);

/* A connection's TLS state; sni may be NULL. Starts the handshake: its first flight is
 * appended to wire, for the caller to send. Returns NULL on failure. */
struct tls_client *tls_client_create(struct tls_client_ctx *ctx, const char *sni, struct buf *wire);
void tls_client_destroy(struct tls_client **t);

/* True once the handshake has completed. */
bool tls_client_is_ready(const struct tls_client *t);

/*
 * Feeds n received ciphertext bytes. Plaintext is appended to plain; handshake or alert bytes
 * to send are appended to wire. Returns 0 or ERR_IO (fatal: close the connection).
 */
int tls_client_feed(struct tls_client *t, const uint8_t *in, size_t n, struct buf *plain,
                    struct buf *wire);

/* Encrypts n plaintext bytes into wire. Only after tls_client_is_ready(). Returns 0 or
 * ERR_IO. */
int tls_client_encrypt(struct tls_client *t, const uint8_t *p, size_t n, struct buf *wire);

#endif
