#ifndef SHOAL_NODE_TLS_H
#define SHOAL_NODE_TLS_H

/*
 * TLS for client listeners: OpenSSL 3 over memory BIOs, driven by the connection's reads and
 * flushes on the libuv loop (a struct xport layer). One struct tls_ctx per TLS listener holds
 * the current SSL_CTX; a reload builds a new one and swaps it in, so connections already open
 * keep the context they started with and new handshakes use the new files.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/xport.h"

struct conf_listener;
struct tls_ctx;

/* Handshake failures by cause, for logs and metrics. */
enum tls_fail {
    TLS_FAIL_UNKNOWN_CA = 0,
    TLS_FAIL_REVOKED,
    TLS_FAIL_EXPIRED,
    TLS_FAIL_NO_CERT,
    TLS_FAIL_PROTOCOL, /* version, cipher, not TLS at all */
    TLS_FAIL_OTHER,
    TLS_FAIL_N
};

/*
 * Builds the context of listener cl (borrowed; it must outlive the context). Returns NULL and
 * writes "FILE: why" into err when a file cannot be used.
 */
struct tls_ctx *tls_ctx_create(const struct conf_listener *cl, char *err, size_t errlen);
/*
 * Re-reads the certificate, key, CA and CRL files. On failure keeps the current context,
 * writes "FILE: why" into err and returns ERR_INVALID; on success returns 0.
 */
int tls_ctx_reload(struct tls_ctx *t, char *err, size_t errlen);
/* Frees t once no connection uses it (connections hold a reference). Sets *t to NULL. */
void tls_ctx_destroy(struct tls_ctx **t);
/* Handshake failures counted so far, by cause. */
uint64_t tls_ctx_failures(const struct tls_ctx *t, enum tls_fail why);

/*
 * A new server-side TLS layer for one accepted connection. peer is the printable address used
 * in log lines (copied). Never fails (aborts on OOM like xmalloc).
 */
struct xport *tls_create(struct tls_ctx *t, const char *peer);
/* True once the handshake completed. */
bool tls_is_established(const struct xport *x);
/*
 * The user name a client certificate gives, per the listener's use_identity_as_username
 * (the subject's CN) or use_subject_as_username (the whole subject, RFC 2253). Writes it
 * NUL-terminated into out and returns its length; returns 0 when neither option is set,
 * and ERR_NOT_FOUND when the option is set but there is no certificate or no CN (or the CN
 * holds a NUL byte). A name that does not fit in cap is never truncated: ERR_INVALID.
 */
int tls_peer_username(const struct xport *x, char *out, size_t cap);

#endif
