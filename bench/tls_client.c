/*
 * OpenSSL client over a pair of memory BIOs per connection. Reads: ciphertext goes into rbio,
 * SSL_read drains plaintext; writes: SSL_write fills wbio, which is drained into the caller's
 * wire buffer. The handshake is driven by the same calls, so there is no separate state
 * machine here.
 */
#include "bench/tls_client.h"

#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "node/err.h"

struct tls_client_ctx {
    SSL_CTX *ssl;
};

struct tls_client {
    SSL *ssl;
    BIO *rbio; /* network -> SSL */
    BIO *wbio; /* SSL -> network */
};

static void last_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char msg[256];
    ERR_error_string_n(e, msg, sizeof(msg));
    (void)snprintf(err, errlen, "%s %s: %s", what, file ? file : "", msg);
}

struct tls_client_ctx *tls_client_ctx_create(const char *cafile, const char *certfile,
                                             const char *keyfile, char *err, size_t errlen)
{
    struct tls_client_ctx *c = xcalloc(1, sizeof(*c));
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (!c->ssl) {
        last_error(err, errlen, "SSL_CTX_new", NULL);
        goto out_free;
    }
    SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
    if (cafile) {
        if (SSL_CTX_load_verify_locations(c->ssl, cafile, NULL) != 1) {
            last_error(err, errlen, "cannot load --cacertfile", cafile);
            goto out_ctx;
        }
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    }
    if (certfile) {
        if (SSL_CTX_use_certificate_chain_file(c->ssl, certfile) != 1) {
            last_error(err, errlen, "cannot load --certfile", certfile);
            goto out_ctx;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ssl, keyfile, SSL_FILETYPE_PEM) != 1) {
            last_error(err, errlen, "cannot load --keyfile", keyfile);
            goto out_ctx;
        }
    }
    return c;
out_ctx:
    SSL_CTX_free(c->ssl);
out_free:
    free(c);
    return NULL;
}

void tls_client_ctx_destroy(struct tls_client_ctx **ctx)
{
    if (!*ctx)
        return;
    SSL_CTX_free((*ctx)->ssl);
    free(*ctx);
    *ctx = NULL;
}

static void drain(struct tls_client *t, struct buf *wire)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(t->wbio)) > 0) {
        uint8_t *dst = buf_reserve(wire, pending);
        int n = BIO_read(t->wbio, dst, (int)pending);
        if (n <= 0)
            break;
        buf_commit(wire, (size_t)n);
    }
}

/* Runs the handshake or reads plaintext; returns 0 or ERR_IO. */
static int pump(struct tls_client *t, struct buf *plain, struct buf *wire)
{
    if (!SSL_is_init_finished(t->ssl)) {
        int rc = SSL_do_handshake(t->ssl);
        drain(t, wire);
        if (rc != 1) {
            int e = SSL_get_error(t->ssl, rc);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : ERR_IO;
        }
    }
    for (;;) {
        uint8_t *dst = buf_reserve(plain, 16384);
        int n = SSL_read(t->ssl, dst, 16384);
        if (n > 0) {
            buf_commit(plain, (size_t)n);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        drain(t, wire); /* post-handshake messages (key update, tickets) */
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : ERR_IO;
    }
}

struct tls_client *tls_client_create(struct tls_client_ctx *ctx, const char *sni, struct buf *wire)
{
    struct tls_client *t = xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx->ssl);
    if (!t->ssl) {
        free(t);
        return NULL;
    }
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL now owns both */
    SSL_set_connect_state(t->ssl);
    if (sni)
        SSL_set_tlsext_host_name(t->ssl, sni);
    int rc = SSL_do_handshake(t->ssl);
    drain(t, wire);
    if (rc != 1) {
        int e = SSL_get_error(t->ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            tls_client_destroy(&t);
            return NULL;
        }
    }
    return t;
}

void tls_client_destroy(struct tls_client **t)
{
    if (!*t)
        return;
    SSL_free((*t)->ssl);
    free(*t);
    *t = NULL;
}

bool tls_client_is_ready(const struct tls_client *t)
{
    return SSL_is_init_finished(t->ssl);
}

int tls_client_feed(struct tls_client *t, const uint8_t *in, size_t n, struct buf *plain,
                    struct buf *wire)
{
    while (n > 0) {
        int w = BIO_write(t->rbio, in, n > INT32_MAX ? INT32_MAX : (int)n);
        if (w <= 0)
            return ERR_IO;
        in += w;
        n -= (size_t)w;
        if (pump(t, plain, wire) < 0)
            return ERR_IO;
    }
    return 0;
}

int tls_client_encrypt(struct tls_client *t, const uint8_t *p, size_t n, struct buf *wire)
{
    while (n > 0) {
        int w = SSL_write(t->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (w <= 0)
            return ERR_IO;
        p += w;
        n -= (size_t)w;
        drain(t, wire);
    }
    return 0;
}
