/*
 * TLS transport for client connections: OpenSSL server objects driven by the connection's
 * reads and flushes (struct xport). Instead of a pair of memory BIOs, each SSL talks to a
 * small custom BIO that reads straight from the bytes handed to `input` and appends records
 * straight to the caller's output buffer. Memory BIOs would keep their peak-sized buffers for
 * the life of the connection and cost one more copy each way; this BIO holds no bytes at all
 * between calls, so with SSL_MODE_RELEASE_BUFFERS an idle connection costs only the SSL
 * object, its BIO and struct tls.
 *
 * A struct tls_ctx is shared by a listener and its connections through a reference count:
 * SSL_new takes its own reference on the SSL_CTX, so a reload can drop the old SSL_CTX at
 * once and connections that started under it keep working.
 */
#include "node/tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "conf/conf.h"
#include "conf/conf_tls.h"
#include "node/buf.h"
#include "node/err.h"
#include "node/log.h"

/* Largest plaintext of one TLS record: reads decrypt a whole record per call, and small
 * writes are gathered up to this so that a header and its payload share one record. */
#define TLS_RECORD_MAX 16384u

struct tls_ctx {
    const struct conf_listener *cl;
    SSL_CTX *sctx;
    uint32_t refs; /* the owner's plus one per connection */
    uint64_t fails[TLS_FAIL_N];
};

struct tls {
    struct xport x;
    SSL *s;
    struct tls_ctx *t;
    bool is_established;
    bool is_dead;       /* fatal error: no more records either way */
    bool is_peer_done;  /* close_notify received */
    bool has_shut_down; /* our close_notify sent */
    uint8_t first_byte; /* of the client's first record: 0x16 when it speaks TLS at all */
    char peer[];
};

/* What the BIO may read and where it writes, valid only during one xport call. */
struct tls_io {
    const uint8_t *p;
    size_t n;
    struct buf *down;
};

static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *tls_bio_method;

static int tls_bio_write(BIO *b, const char *data, int len)
{
    struct tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (NEVER(!io || !io->down || len < 0))
        return -1;
    buf_append(io->down, data, (size_t)len);
    return len;
}

static int tls_bio_read(BIO *b, char *out, int len)
{
    struct tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!io || io->n == 0 || len <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t k = io->n < (size_t)len ? io->n : (size_t)len;
    memcpy(out, io->p, k);
    io->p += k;
    io->n -= k;
    return (int)k;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    /* Writes land in the caller's buffer at once, so a flush always succeeds; everything
     * else (pending counts, kTLS, fds) does not apply. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int tls_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void tls_bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "shoal-xport");
    if (!m || BIO_meth_set_write(m, tls_bio_write) != 1 ||
        BIO_meth_set_read(m, tls_bio_read) != 1 || BIO_meth_set_ctrl(m, tls_bio_ctrl) != 1 ||
        BIO_meth_set_create(m, tls_bio_create) != 1) {
        (void)fprintf(stderr, "shoal: cannot create the TLS BIO method\n");
        abort();
    }
    tls_bio_method = m;
}

static void tls_io_begin(struct tls *c, struct tls_io *io)
{
    ERR_clear_error(); /* SSL_get_error reads the queue: it must start empty */
    BIO_set_data(SSL_get_rbio(c->s), io);
}

static void tls_io_end(struct tls *c)
{
    BIO_set_data(SSL_get_rbio(c->s), NULL);
    ERR_clear_error();
}

/* ---- contexts ---- */

/* A CRL past its nextUpdate makes OpenSSL reject every client its CA issued, so the operator
 * hears about it as soon as the file is loaded rather than from the first refused client. */
static void tls_ctx_report_crls(const struct tls_ctx *t)
{
    if (!t->cl->crlfile)
        return;
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(t->sctx));
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
        const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
        if (!next || X509_cmp_current_time(next) >= 0)
            continue;
        char when[32] = "?";
        struct tm tm;
        if (ASN1_TIME_to_tm(next, &tm) == 1)
            (void)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        log_warn("tls",
                 "crl past nextUpdate file=%s next_update=%s (clients of its CA are refused "
                 "until the file is refreshed)",
                 t->cl->crlfile, when);
    }
}

struct tls_ctx *tls_ctx_create(const struct conf_listener *cl, char *err, size_t errlen)
{
    if (pthread_once(&tls_bio_once, tls_bio_method_make) != 0)
        abort();
    SSL_CTX *sctx = conf_tls_build(cl, err, errlen);
    if (!sctx)
        return NULL;
    struct tls_ctx *t = xcalloc(1, sizeof(*t));
    t->cl = cl;
    t->sctx = sctx;
    t->refs = 1;
    tls_ctx_report_crls(t);
    return t;
}

/* Ticket keys are not carried over: a reload that revokes a certificate must not let
 * sessions established under it resume without a full verification. Clients pay one full
 * handshake after a reload. */
int tls_ctx_reload(struct tls_ctx *t, char *err, size_t errlen)
{
    SSL_CTX *sctx = conf_tls_build(t->cl, err, errlen);
    if (!sctx)
        return ERR_INVALID;
    SSL_CTX_free(t->sctx);
    t->sctx = sctx;
    tls_ctx_report_crls(t);
    return 0;
}

static void tls_ctx_unref(struct tls_ctx *t)
{
    if (--t->refs > 0)
        return;
    SSL_CTX_free(t->sctx);
    t->sctx = NULL;
    free(t);
}

void tls_ctx_destroy(struct tls_ctx **t)
{
    if (!*t)
        return;
    tls_ctx_unref(*t);
    *t = NULL;
}

uint64_t tls_ctx_failures(const struct tls_ctx *t, enum tls_fail why)
{
    if (NEVER((unsigned)why >= TLS_FAIL_N))
        return 0;
    return t->fails[why];
}

/* ---- handshake failures ---- */

struct tls_why {
    enum tls_fail fail;
    const char *reason; /* the log word */
    char detail[160];
};

static void tls_why_verify(struct tls_why *w, long vr)
{
    const char *s = X509_verify_cert_error_string(vr);
    w->fail = TLS_FAIL_OTHER;
    w->reason = "other";
    switch (vr) {
    case X509_V_ERR_CERT_REVOKED:
        w->fail = TLS_FAIL_REVOKED;
        w->reason = "revoked";
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        w->fail = TLS_FAIL_EXPIRED;
        w->reason = "expired";
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
    case X509_V_ERR_INVALID_CA:
        w->fail = TLS_FAIL_UNKNOWN_CA;
        w->reason = "unknown-ca";
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
        w->reason = "crl-expired";
        s = "the CRL is past its nextUpdate: refresh crlfile";
        break;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        s = "no CRL from the certificate's issuer in crlfile";
        break;
    default:
        break;
    }
    (void)snprintf(w->detail, sizeof(w->detail), "client certificate: %s", s);
}

/* An alert the client sent: mostly it refusing our certificate or our protocol offer. */
static void tls_why_alert(struct tls_why *w, int reason, const char *s)
{
    switch (reason) {
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        w->fail = TLS_FAIL_PROTOCOL;
        w->reason = "protocol";
        (void)snprintf(w->detail, sizeof(w->detail), "client refused our offer: %s", s);
        break;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        w->fail = TLS_FAIL_OTHER;
        w->reason = "other";
        (void)snprintf(w->detail, sizeof(w->detail), "client rejected the server certificate: %s",
                       s);
        break;
    default:
        w->fail = TLS_FAIL_OTHER;
        w->reason = "other";
        (void)snprintf(w->detail, sizeof(w->detail), "client sent alert: %s", s);
        break;
    }
}

/* Classifies a failed handshake from the verify result and the error queue (which the caller
 * clears afterwards). */
static void tls_why_classify(struct tls *c, int ssl_err, struct tls_why *w)
{
    long vr = SSL_get_verify_result(c->s);
    unsigned long e, first = 0, ssl_e = 0;
    while ((e = ERR_get_error()) != 0) {
        if (!first)
            first = e;
        if (!ssl_e && ERR_GET_LIB(e) == ERR_LIB_SSL)
            ssl_e = e;
    }
    e = ssl_e ? ssl_e : first;
    int reason = ERR_GET_REASON(e);
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    if (!s)
        s = "unknown error";

    if (vr != X509_V_OK) {
        tls_why_verify(w, vr);
    } else if (ssl_e && reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        w->fail = TLS_FAIL_NO_CERT;
        w->reason = "no-certificate";
        (void)snprintf(w->detail, sizeof(w->detail), "client sent no certificate");
    } else if (ssl_e && reason >= SSL_AD_REASON_OFFSET) {
        tls_why_alert(w, reason, s);
    } else if (ssl_e) {
        /* Version, cipher, record framing, or not TLS at all (plain MQTT, HTTP). */
        w->fail = TLS_FAIL_PROTOCOL;
        w->reason = "protocol";
        if (c->first_byte == 0x10)
            (void)snprintf(w->detail, sizeof(w->detail), "plain MQTT on a TLS port (%s)", s);
        else if (c->first_byte != 0x16)
            (void)snprintf(w->detail, sizeof(w->detail), "not TLS, first byte 0x%02x (%s)",
                           c->first_byte, s);
        else
            (void)snprintf(w->detail, sizeof(w->detail), "%s", s);
    } else {
        w->fail = TLS_FAIL_OTHER;
        w->reason = "other";
        (void)snprintf(w->detail, sizeof(w->detail), "%s",
                       ssl_err == SSL_ERROR_ZERO_RETURN ? "client closed during the handshake" : s);
    }
}

static int tls_handshake_failed(struct tls *c, int ssl_err)
{
    struct tls_why w;
    tls_why_classify(c, ssl_err, &w);
    c->t->fails[w.fail]++;
    c->is_dead = true;
    log_ratelimited(LOG_LEVEL_INFO, "conn", "tls handshake failed peer=%s reason=%s detail=\"%s\"",
                    c->peer, w.reason, w.detail);
    return ERR_TLS;
}

/* A failure after the handshake: a bad record, a renegotiation attempt. */
static int tls_record_failed(struct tls *c, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    c->is_dead = true;
    log_ratelimited(LOG_LEVEL_INFO, "conn", "tls %s failed peer=%s detail=\"%s\"", what, c->peer,
                    s ? s : "unknown error");
    return ERR_TLS;
}

/* ---- the transport ---- */

static int tls_read_records(struct tls *c, struct buf *up)
{
    for (;;) {
        size_t got = 0;
        uint8_t *dst = buf_reserve(up, TLS_RECORD_MAX);
        if (SSL_read_ex(c->s, dst, TLS_RECORD_MAX, &got) == 1) {
            buf_commit(up, got);
            continue;
        }
        switch (SSL_get_error(c->s, 0)) {
        case SSL_ERROR_WANT_READ:
            return 0;
        case SSL_ERROR_ZERO_RETURN:
            /* Deliver what came before close_notify (a DISCONNECT, typically); the socket's
             * EOF follows. */
            c->is_peer_done = true;
            return 0;
        default:
            return tls_record_failed(c, "read");
        }
    }
}

static int tls_input(struct xport *x, const uint8_t *p, size_t n, struct buf *up, struct buf *down)
{
    struct tls *c = (struct tls *)x;
    struct tls_io io = {p, n, down};
    int rc = 0;

    if (c->is_dead)
        return ERR_TLS;
    if (c->is_peer_done)
        return n > 0 ? ERR_CLOSED : 0;
    if (!c->is_established && n > 0 && c->first_byte == 0)
        c->first_byte = p[0];
    tls_io_begin(c, &io);
    if (!c->is_established) {
        int r = SSL_do_handshake(c->s);
        if (r != 1) {
            int e = SSL_get_error(c->s, r);
            if (e != SSL_ERROR_WANT_READ)
                rc = tls_handshake_failed(c, e);
            goto out;
        }
        c->is_established = true;
    }
    /* Application data may follow the handshake's last flight in the same read. */
    rc = tls_read_records(c, up);
out:
    tls_io_end(c);
    return rc;
}

static int tls_write_all(struct tls *c, const uint8_t *p, size_t n)
{
    size_t done = 0;
    /* The BIO never refuses a write, so SSL_write_ex takes everything in one call. */
    if (SSL_write_ex(c->s, p, n, &done) != 1 || NEVER(done != n))
        return tls_record_failed(c, "write");
    return 0;
}

static int tls_output(struct xport *x, const uv_buf_t *iov, unsigned n, struct buf *down)
{
    struct tls *c = (struct tls *)x;
    struct tls_io io = {NULL, 0, down};
    uint8_t stage[TLS_RECORD_MAX];
    size_t used = 0;
    int rc = 0;

    if (c->is_dead || !c->is_established || c->has_shut_down)
        return ERR_TLS;
    tls_io_begin(c, &io);
    for (unsigned i = 0; i < n && rc == 0; i++) {
        const uint8_t *p = (const uint8_t *)iov[i].base;
        size_t len = iov[i].len;
        if (len > sizeof(stage) - used) {
            if (used > 0)
                rc = tls_write_all(c, stage, used);
            used = 0;
            if (rc == 0 && len >= sizeof(stage)) {
                rc = tls_write_all(c, p, len);
                continue;
            }
        }
        if (rc == 0 && len > 0) {
            memcpy(stage + used, p, len);
            used += len;
        }
    }
    if (rc == 0 && used > 0)
        rc = tls_write_all(c, stage, used);
    tls_io_end(c);
    return rc;
}

static void tls_shutdown(struct xport *x, struct buf *down)
{
    struct tls *c = (struct tls *)x;
    struct tls_io io = {NULL, 0, down};

    if (c->is_dead || !c->is_established || c->has_shut_down)
        return;
    c->has_shut_down = true;
    tls_io_begin(c, &io);
    (void)SSL_shutdown(c->s); /* 0: close_notify sent; we do not wait for the client's */
    tls_io_end(c);
}

static void tls_destroy(struct xport *x)
{
    struct tls *c = (struct tls *)x;
    SSL_free(c->s); /* frees the BIO too */
    c->s = NULL;
    tls_ctx_unref(c->t);
    c->t = NULL;
    free(c);
}

static const struct xport_ops tls_ops = {
    .name = "tls",
    .input = tls_input,
    .output = tls_output,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
};

struct xport *tls_create(struct tls_ctx *t, const char *peer)
{
    size_t len = strlen(peer);
    struct tls *c = xcalloc(1, sizeof(*c) + len + 1);
    memcpy(c->peer, peer, len + 1);
    c->x.ops = &tls_ops;
    c->s = SSL_new(t->sctx);
    BIO *b = c->s ? BIO_new(tls_bio_method) : NULL;
    if (!b) {
        (void)fprintf(stderr, "shoal: out of memory creating a TLS connection\n");
        abort();
    }
    SSL_set_bio(c->s, b, b); /* one BIO both ways: SSL takes the single reference */
    SSL_set_accept_state(c->s);
    (void)SSL_set_mode(c->s, SSL_MODE_RELEASE_BUFFERS);
    c->t = t;
    t->refs++;
    return &c->x;
}

bool tls_is_established(const struct xport *x)
{
    return ((const struct tls *)x)->is_established;
}

static int tls_copy_out(char *out, size_t cap, const char *p, size_t len)
{
    /* Never truncate: a shortened name could be somebody else's. */
    if (len + 1 > cap || len > INT32_MAX)
        return ERR_INVALID;
    memcpy(out, p, len);
    out[len] = '\0';
    return (int)len;
}

static int tls_subject_cn(const X509_NAME *name, char *out, size_t cap)
{
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0)
        return ERR_NOT_FOUND;
    const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, d);
    if (len <= 0) {
        OPENSSL_free(utf8);
        ERR_clear_error();
        return ERR_NOT_FOUND;
    }
    /* An embedded NUL would let "admin\0.evil" pass as "admin" further down. */
    int rc = memchr(utf8, '\0', (size_t)len) ? ERR_NOT_FOUND
                                             : tls_copy_out(out, cap, (char *)utf8, (size_t)len);
    OPENSSL_free(utf8);
    return rc;
}

static int tls_subject_rfc2253(const X509_NAME *name, char *out, size_t cap)
{
    BIO *m = BIO_new(BIO_s_mem());
    if (!m)
        return ERR_NOMEM;
    char *p = NULL;
    int rc = ERR_NOT_FOUND;
    if (X509_NAME_print_ex(m, name, 0, XN_FLAG_RFC2253) >= 0) {
        long len = BIO_get_mem_data(m, &p);
        if (len > 0)
            rc = tls_copy_out(out, cap, p, (size_t)len);
    }
    BIO_free(m);
    ERR_clear_error();
    return rc;
}

int tls_peer_username(const struct xport *x, char *out, size_t cap)
{
    const struct tls *c = (const struct tls *)x;
    const struct conf_listener *cl = c->t->cl;

    if (!cl->use_identity_as_username && !cl->use_subject_as_username)
        return 0;
    X509 *cert = SSL_get0_peer_certificate(c->s);
    if (!cert)
        return ERR_NOT_FOUND;
    const X509_NAME *name = X509_get_subject_name(cert);
    if (cl->use_identity_as_username)
        return tls_subject_cn(name, out, cap);
    return tls_subject_rfc2253(name, out, cap);
}
