/*
 * TLS transport: a server xport driven against an OpenSSL client over memory BIOs. The
 * certificates, keys and CRLs are made with OpenSSL's API in a temporary directory at start.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "conf/conf_tls.h"
#include "node/buf.h"
#include "node/err.h"
#include "node/log.h"
#include "node/tls.h"

#define DAY (24L * 3600L)

enum { SERIAL_GOOD = 10, SERIAL_REVOKED, SERIAL_EXPIRED, SERIAL_LATER, SERIAL_NOCN };

static char tmpdir[] = "/tmp/shoal-test-tls-XXXXXX";
static char pool[64][512];
static unsigned pool_next;

/* dir/name, the same pointer for the same name for the whole run (listeners keep them). */
static char *path(const char *name)
{
    char p[sizeof(pool[0])];
    (void)snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    for (unsigned i = 0; i < pool_next; i++)
        if (strcmp(pool[i], p) == 0)
            return pool[i];
    assert_true(pool_next < 64);
    memcpy(pool[pool_next], p, sizeof(p));
    return pool[pool_next++];
}

/* ---- making a PKI ---- */

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* A certificate for key, valid from now+from_s to now+to_s, signed by issuer (or itself). */
static X509 *cert_make(EVP_PKEY *key, const char *org, const char *cn, X509 *issuer, EVP_PKEY *ikey,
                       long from_s, long to_s, long serial)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from_s));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to_s));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    X509_NAME *n = X509_get_subject_name(x);
    if (org)
        assert_int_equal(
            X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0),
            1);
    if (cn)
        assert_int_equal(
            X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
            1);
    assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n), 1);
    if (!issuer) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
        if (cn && strcmp(cn, "localhost") == 0)
            add_ext(x, issuer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    }
    assert_true(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
    return x;
}

static void write_cert(const char *name, X509 *x)
{
    FILE *f = fopen(path(name), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    assert_int_equal(fclose(f), 0);
}

static void write_key(const char *name, EVP_PKEY *k)
{
    FILE *f = fopen(path(name), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
}

/* A CRL from ca revoking serials[0..n), next update at now+next_s. */
static void write_crl(const char *name, X509 *ca, EVP_PKEY *cakey, const long *serials, int n,
                      long next_s)
{
    X509_CRL *crl = X509_CRL_new();
    assert_non_null(crl);
    assert_int_equal(X509_CRL_set_version(crl, 1), 1);
    assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)), 1);
    ASN1_TIME *last = ASN1_TIME_adj(NULL, time(NULL), -2, 0);
    ASN1_TIME *next = ASN1_TIME_adj(NULL, time(NULL), 0, next_s);
    assert_int_equal(X509_CRL_set1_lastUpdate(crl, last), 1);
    assert_int_equal(X509_CRL_set1_nextUpdate(crl, next), 1);
    for (int i = 0; i < n; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *s = ASN1_INTEGER_new();
        assert_int_equal(ASN1_INTEGER_set(s, serials[i]), 1);
        assert_int_equal(X509_REVOKED_set_serialNumber(r, s), 1);
        assert_int_equal(X509_REVOKED_set_revocationDate(r, last), 1);
        assert_int_equal(X509_CRL_add0_revoked(crl, r), 1);
        ASN1_INTEGER_free(s);
    }
    assert_int_equal(X509_CRL_sort(crl), 1);
    assert_true(X509_CRL_sign(crl, cakey, EVP_sha256()) > 0);
    FILE *f = fopen(path(name), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
    assert_int_equal(fclose(f), 0);
    ASN1_TIME_free(last);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
}

static EVP_PKEY *ec_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

static void client_cert(const char *name, const char *org, const char *cn, X509 *ca,
                        EVP_PKEY *cakey, long from_s, long to_s, long serial)
{
    char fn[64];
    EVP_PKEY *k = ec_key();
    X509 *x = cert_make(k, org, cn, ca, cakey, from_s, to_s, serial);
    (void)snprintf(fn, sizeof(fn), "%s.crt", name);
    write_cert(fn, x);
    (void)snprintf(fn, sizeof(fn), "%s.key", name);
    write_key(fn, k);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    FILE *in = fopen(from, "r");
    assert_non_null(in);
    size_t n = fread(buf, 1, sizeof(buf), in);
    assert_int_equal(fclose(in), 0);
    char tmp[600];
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", to);
    FILE *out = fopen(tmp, "w");
    assert_non_null(out);
    assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(rename(tmp, to), 0);
}

static void remove_dir(const char *dir)
{
    char p[1024];
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            (void)snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            (void)unlink(p);
        }
        (void)closedir(d);
    }
    (void)rmdir(dir);
}

static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    EVP_PKEY *cakey = ec_key(), *roguekey = ec_key(), *rsa = EVP_RSA_gen(2048), *ec = ec_key();
    assert_non_null(rsa);
    X509 *ca = cert_make(cakey, "Shoal Test", "Test CA", NULL, NULL, -DAY, 30 * DAY, 1);
    X509 *rogue = cert_make(roguekey, NULL, "Rogue CA", NULL, NULL, -DAY, 30 * DAY, 1);
    write_cert("ca.crt", ca);
    write_cert("rogue-ca.crt", rogue);
    X509 *srv = cert_make(rsa, NULL, "localhost", ca, cakey, -DAY, 30 * DAY, 2);
    X509 *srv_ec = cert_make(ec, NULL, "localhost", ca, cakey, -DAY, 30 * DAY, 3);
    write_cert("server.crt", srv);
    write_key("server.key", rsa);
    write_cert("server-ec.crt", srv_ec);
    write_key("server-ec.key", ec);

    client_cert("good", "Shoal Test", "good-client", ca, cakey, -DAY, 30 * DAY, SERIAL_GOOD);
    client_cert("revoked", NULL, "revoked-client", ca, cakey, -DAY, 30 * DAY, SERIAL_REVOKED);
    client_cert("expired", NULL, "expired-client", ca, cakey, -30 * DAY, -DAY, SERIAL_EXPIRED);
    client_cert("later", NULL, "later-client", ca, cakey, -DAY, 30 * DAY, SERIAL_LATER);
    client_cert("nocn", "No Common Name", NULL, ca, cakey, -DAY, 30 * DAY, SERIAL_NOCN);
    client_cert("rogue", NULL, "good-client", rogue, roguekey, -DAY, 30 * DAY, 7);

    static const long one[] = {SERIAL_REVOKED};
    static const long two[] = {SERIAL_REVOKED, SERIAL_LATER};
    write_crl("crl.pem", ca, cakey, one, 1, 30 * DAY);
    write_crl("crl-later.pem", ca, cakey, two, 2, 30 * DAY);
    write_crl("crl-stale.pem", ca, cakey, one, 1, -DAY);

    /* An encrypted key, which must be refused rather than prompted for. */
    FILE *f = fopen(path("encrypted.key"), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, rsa, EVP_aes_128_cbc(), NULL, 0, NULL, "secret"), 1);
    assert_int_equal(fclose(f), 0);

    /* A hashed CA directory for capath. */
    char cmd[1024];
    assert_int_equal(mkdir(path("capath"), 0700), 0);
    copy_file(path("ca.crt"), path("capath/ca.crt"));
    (void)snprintf(cmd, sizeof(cmd), "openssl rehash %s", path("capath"));
    assert_int_equal(system(cmd), 0);

    X509_free(ca);
    X509_free(rogue);
    X509_free(srv);
    X509_free(srv_ec);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(roguekey);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);

    log_set_timestamp(false);
    assert_int_equal(log_set_dest(-1, path("log.txt")), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    log_close();
    remove_dir(path("capath"));
    remove_dir(tmpdir);
    return 0;
}

/* ---- driving a connection ---- */

static bool log_has(const char *needle)
{
    static char text[1 << 16];
    FILE *f = fopen(path("log.txt"), "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    assert_int_equal(fclose(f), 0);
    text[n] = '\0';
    return strstr(text, needle) != NULL;
}

static SSL_CTX *client_ctx(const char *name, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    /* The client checks the server too, so the server's chain and name are right. */
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, path("ca.crt"), NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_version)
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    if (name) {
        char fn[64];
        (void)snprintf(fn, sizeof(fn), "%s.crt", name);
        assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, path(fn)), 1);
        (void)snprintf(fn, sizeof(fn), "%s.key", name);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, path(fn), SSL_FILETYPE_PEM), 1);
    }
    return ctx;
}

static SSL *client_new(SSL_CTX *ctx)
{
    SSL *s = SSL_new(ctx);
    assert_non_null(s);
    SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(s);
    assert_int_equal(SSL_set_tlsext_host_name(s, "localhost"), 1);
    assert_int_equal(SSL_set1_host(s, "localhost"), 1);
    return s;
}

/* What the client has written, moved into the server; what the server answered, moved to
 * the client. Returns the server's input result. */
static int client_to_server(SSL *c, struct xport *x, struct buf *up, size_t *moved)
{
    uint8_t tmp[65536];
    struct buf down = {0};
    int k, rc = 0;
    while (rc == 0 && (k = BIO_read(SSL_get_wbio(c), tmp, sizeof(tmp))) > 0) {
        rc = x->ops->input(x, tmp, (size_t)k, up, &down);
        *moved += (size_t)k;
    }
    if (buf_used(&down) > 0) {
        assert_int_equal(BIO_write(SSL_get_rbio(c), buf_head(&down), (int)buf_used(&down)),
                         (int)buf_used(&down));
        *moved += buf_used(&down);
    }
    buf_free(&down);
    return rc;
}

/* Runs the handshake until nothing moves. Returns the server's result (0 or an ERR_*). */
static int pump(SSL *c, struct xport *x)
{
    struct buf up = {0};
    int rc = 0;
    for (int round = 0; round < 20 && rc == 0; round++) {
        size_t moved = 0;
        (void)SSL_do_handshake(c);
        rc = client_to_server(c, x, &up, &moved);
        if (moved == 0)
            break;
    }
    assert_int_equal(buf_used(&up), 0);
    buf_free(&up);
    ERR_clear_error();
    return rc;
}

/* Lets the client process what the server sent (session tickets) and returns what it read. */
static size_t client_read(SSL *c, char *out, size_t cap)
{
    size_t got = 0, n = 0;
    while (n < cap && SSL_read_ex(c, out + n, cap - n, &got) == 1)
        n += got;
    ERR_clear_error();
    return n;
}

static struct conf_listener listener(const char *cert, const char *key)
{
    struct conf_listener l;
    memset(&l, 0, sizeof(l));
    l.port = 8883;
    l.certfile = path(cert);
    l.keyfile = path(key);
    return l;
}

static struct conf_listener listener_mtls(void)
{
    struct conf_listener l = listener("server.crt", "server.key");
    l.cafile = path("ca.crt");
    l.require_certificate = true;
    return l;
}

static struct tls_ctx *ctx_ok(const struct conf_listener *l)
{
    char err[512] = "";
    struct tls_ctx *t = tls_ctx_create(l, err, sizeof(err));
    if (!t)
        fail_msg("tls_ctx_create: %s", err);
    return t;
}

/* One handshake of client `name` (NULL: no certificate) against t. Returns the server's
 * result; with cout and xout, the connection stays open for the caller. */
static int connect_as(struct tls_ctx *t, const char *name, int max_version, SSL **cout,
                      struct xport **xout)
{
    SSL_CTX *cctx = client_ctx(name, max_version);
    SSL *c = client_new(cctx);
    SSL_CTX_free(cctx);
    struct xport *x = tls_create(t, "test-peer");
    int rc = pump(c, x);
    if (rc == 0)
        assert_true(tls_is_established(x));
    if (cout) {
        *cout = c;
        *xout = x;
    } else {
        SSL_free(c);
        xport_destroy(&x);
    }
    return rc;
}

static void expect_failure(struct tls_ctx *t, const char *name, int max_version, enum tls_fail why)
{
    uint64_t before = tls_ctx_failures(t, why);
    assert_int_equal(connect_as(t, name, max_version, NULL, NULL), ERR_TLS);
    assert_int_equal(tls_ctx_failures(t, why), before + 1);
}

/* Client → server and server → client over an established pair. */
static void exchange(SSL *c, struct xport *x)
{
    struct buf up = {0}, down = {0};
    size_t moved = 0;
    const char hello[] = "hello server";
    assert_int_equal(SSL_write(c, hello, (int)strlen(hello)), (int)strlen(hello));
    assert_int_equal(client_to_server(c, x, &up, &moved), 0);
    assert_int_equal(buf_used(&up), strlen(hello));
    assert_memory_equal(buf_head(&up), hello, strlen(hello));

    /* Two small pieces become one record: 5 header + 12 + content type + 16 tag in 1.3. */
    uv_buf_t iov[2] = {uv_buf_init("hello ", 6), uv_buf_init("client", 6)};
    assert_int_equal(x->ops->output(x, iov, 2, &down), 0);
    if (SSL_version(c) == TLS1_3_VERSION)
        assert_int_equal(buf_used(&down), 5 + 12 + 1 + 16);
    assert_int_equal(BIO_write(SSL_get_rbio(c), buf_head(&down), (int)buf_used(&down)),
                     (int)buf_used(&down));
    char got[64];
    assert_int_equal(client_read(c, got, sizeof(got)), 12);
    assert_memory_equal(got, "hello client", 12);
    buf_free(&up);
    buf_free(&down);
}

/* ---- tests ---- */

static void test_rsa_data_both_ways(void **state)
{
    (void)state;
    struct conf_listener l = listener("server.crt", "server.key");
    struct tls_ctx *t = ctx_ok(&l);
    SSL *c;
    struct xport *x;
    assert_int_equal(connect_as(t, NULL, 0, &c, &x), 0);
    assert_int_equal(SSL_version(c), TLS1_3_VERSION);
    exchange(c, x);

    /* A record fed one byte at a time still arrives whole. */
    struct buf up = {0}, down = {0};
    const char msg[] = "split across reads";
    assert_int_equal(SSL_write(c, msg, (int)strlen(msg)), (int)strlen(msg));
    uint8_t rec[256];
    int k = BIO_read(SSL_get_wbio(c), rec, sizeof(rec));
    assert_true(k > (int)strlen(msg));
    for (int i = 0; i < k; i++)
        assert_int_equal(x->ops->input(x, rec + i, 1, &up, &down), 0);
    assert_int_equal(buf_used(&up), strlen(msg));
    assert_memory_equal(buf_head(&up), msg, strlen(msg));

    /* Large output (several records) after a small piece. */
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    uv_buf_t iov[3] = {uv_buf_init("ab", 2), uv_buf_init((char *)big, sizeof(big)),
                       uv_buf_init("", 0)};
    assert_int_equal(x->ops->output(x, iov, 3, &down), 0);
    assert_int_equal(BIO_write(SSL_get_rbio(c), buf_head(&down), (int)buf_used(&down)),
                     (int)buf_used(&down));
    static char back[sizeof(big) + 2];
    assert_int_equal(client_read(c, back, sizeof(back)), sizeof(back));
    assert_memory_equal(back, "ab", 2);
    assert_memory_equal(back + 2, big, sizeof(big));

    /* close_notify from the server reaches the client. */
    buf_reset(&down);
    x->ops->shutdown(x, &down);
    assert_true(buf_used(&down) > 0);
    assert_int_equal(BIO_write(SSL_get_rbio(c), buf_head(&down), (int)buf_used(&down)),
                     (int)buf_used(&down));
    char none[8];
    assert_int_equal(SSL_read(c, none, sizeof(none)), 0);
    assert_int_equal(SSL_get_error(c, 0), SSL_ERROR_ZERO_RETURN);
    ERR_clear_error();
    buf_reset(&down);
    x->ops->shutdown(x, &down); /* only once */
    assert_int_equal(buf_used(&down), 0);

    buf_free(&up);
    buf_free(&down);
    SSL_free(c);
    xport_destroy(&x);
    tls_ctx_destroy(&t);
    assert_null(t);
}

static void test_ecdsa_tls12_and_13(void **state)
{
    (void)state;
    struct conf_listener l = listener("server-ec.crt", "server-ec.key");
    struct tls_ctx *t = ctx_ok(&l);
    int versions[] = {TLS1_2_VERSION, 0};
    for (int i = 0; i < 2; i++) {
        SSL *c;
        struct xport *x;
        assert_int_equal(connect_as(t, NULL, versions[i], &c, &x), 0);
        assert_int_equal(SSL_version(c), versions[i] ? versions[i] : TLS1_3_VERSION);
        exchange(c, x);
        SSL_free(c);
        xport_destroy(&x);
    }
    tls_ctx_destroy(&t);
}

static void test_client_cert_required(void **state)
{
    (void)state;
    struct conf_listener l = listener_mtls();
    struct tls_ctx *t = ctx_ok(&l);
    expect_failure(t, NULL, 0, TLS_FAIL_NO_CERT);
    expect_failure(t, NULL, TLS1_2_VERSION, TLS_FAIL_NO_CERT);
    assert_int_equal(connect_as(t, "good", 0, NULL, NULL), 0);
    assert_int_equal(connect_as(t, "good", TLS1_2_VERSION, NULL, NULL), 0);
    tls_ctx_destroy(&t);
}

static void test_revoked(void **state)
{
    (void)state;
    struct conf_listener l = listener_mtls();
    l.crlfile = path("crl.pem");
    struct tls_ctx *t = ctx_ok(&l);
    expect_failure(t, "revoked", 0, TLS_FAIL_REVOKED);
    assert_true(log_has("tls handshake failed peer=test-peer reason=revoked detail="));
    expect_failure(t, "revoked", TLS1_2_VERSION, TLS_FAIL_REVOKED);
    assert_int_equal(connect_as(t, "good", 0, NULL, NULL), 0);
    assert_int_equal(tls_ctx_failures(t, TLS_FAIL_UNKNOWN_CA), 0);
    tls_ctx_destroy(&t);
}

static void test_garbage_is_protocol_failure(void **state)
{
    (void)state;
    struct conf_listener l = listener("server.crt", "server.key");
    struct tls_ctx *t = ctx_ok(&l);
    /* A plain MQTT 3.1.1 CONNECT, and an HTTP request. */
    static const uint8_t mqtt[] = {0x10, 0x10, 0x00, 0x04, 'M',  'Q', 'T', 'T', 0x04,
                                   0x02, 0x00, 0x3c, 0x00, 0x04, 'a', 'b', 'c', 'd'};
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    struct buf up = {0}, down = {0};
    struct xport *x = tls_create(t, "test-peer");
    assert_int_equal(x->ops->input(x, mqtt, sizeof(mqtt), &up, &down), ERR_TLS);
    assert_int_equal(tls_ctx_failures(t, TLS_FAIL_PROTOCOL), 1);
    assert_false(tls_is_established(x));
    assert_true(log_has("reason=protocol detail=\"plain MQTT on a TLS port"));
    /* Dead from now on, and counted once. */
    assert_int_equal(x->ops->input(x, mqtt, sizeof(mqtt), &up, &down), ERR_TLS);
    uv_buf_t v = uv_buf_init("x", 1);
    assert_int_equal(x->ops->output(x, &v, 1, &down), ERR_TLS);
    assert_int_equal(tls_ctx_failures(t, TLS_FAIL_PROTOCOL), 1);
    assert_int_equal(buf_used(&up), 0);
    xport_destroy(&x);

    x = tls_create(t, "test-peer");
    assert_int_equal(x->ops->input(x, (const uint8_t *)http, strlen(http), &up, &down), ERR_TLS);
    assert_int_equal(tls_ctx_failures(t, TLS_FAIL_PROTOCOL), 2);
    xport_destroy(&x);

    /* Nothing at all is not an error yet. */
    x = tls_create(t, "test-peer");
    assert_int_equal(x->ops->input(x, mqtt, 0, &up, &down), 0);
    xport_destroy(&x);
    assert_int_equal(ERR_peek_error(), 0);
    buf_free(&up);
    buf_free(&down);
    tls_ctx_destroy(&t);
}

static void test_rogue_ca(void **state)
{
    (void)state;
    /* cafile without require_certificate: a certificate is asked for, not required, and
     * checked when given. */
    struct conf_listener l = listener("server.crt", "server.key");
    l.cafile = path("ca.crt");
    struct tls_ctx *t = ctx_ok(&l);
    expect_failure(t, "rogue", 0, TLS_FAIL_UNKNOWN_CA);
    expect_failure(t, "rogue", TLS1_2_VERSION, TLS_FAIL_UNKNOWN_CA);
    assert_int_equal(connect_as(t, NULL, 0, NULL, NULL), 0);
    assert_int_equal(connect_as(t, "good", 0, NULL, NULL), 0);
    tls_ctx_destroy(&t);
}

static void test_expired(void **state)
{
    (void)state;
    struct conf_listener l = listener_mtls();
    struct tls_ctx *t = ctx_ok(&l);
    expect_failure(t, "expired", 0, TLS_FAIL_EXPIRED);
    tls_ctx_destroy(&t);
}

static void test_stale_crl(void **state)
{
    (void)state;
    struct conf_listener l = listener_mtls();
    l.crlfile = path("crl-stale.pem");
    struct tls_ctx *t = ctx_ok(&l);
    char want[700];
    (void)snprintf(want, sizeof(want), "crl past nextUpdate file=%s next_update=20", l.crlfile);
    assert_true(log_has(want));
    expect_failure(t, "good", 0, TLS_FAIL_OTHER);
    assert_true(log_has("reason=crl-expired"));
    tls_ctx_destroy(&t);
}

static void test_capath(void **state)
{
    (void)state;
    struct conf_listener l = listener("server.crt", "server.key");
    l.capath = path("capath");
    l.crlfile = path("crl.pem");
    l.require_certificate = true;
    struct tls_ctx *t = ctx_ok(&l);
    assert_int_equal(connect_as(t, "good", 0, NULL, NULL), 0);
    expect_failure(t, "rogue", 0, TLS_FAIL_UNKNOWN_CA);
    expect_failure(t, "revoked", 0, TLS_FAIL_REVOKED);
    tls_ctx_destroy(&t);
}

static void test_peer_username(void **state)
{
    (void)state;
    char name[256];
    SSL *c;
    struct xport *x;
    struct conf_listener l = listener("server.crt", "server.key");
    l.cafile = path("ca.crt");

    l.use_identity_as_username = true;
    struct tls_ctx *t = ctx_ok(&l);
    assert_int_equal(connect_as(t, "good", 0, &c, &x), 0);
    assert_int_equal(tls_peer_username(x, name, sizeof(name)), 11);
    assert_string_equal(name, "good-client");
    assert_int_equal(tls_peer_username(x, name, 11), ERR_INVALID); /* never truncated */
    SSL_free(c);
    xport_destroy(&x);
    assert_int_equal(connect_as(t, "nocn", 0, &c, &x), 0);
    assert_int_equal(tls_peer_username(x, name, sizeof(name)), ERR_NOT_FOUND);
    SSL_free(c);
    xport_destroy(&x);
    /* A certificate is required when it names the user. */
    expect_failure(t, NULL, 0, TLS_FAIL_NO_CERT);
    tls_ctx_destroy(&t);

    l.use_identity_as_username = false;
    l.use_subject_as_username = true;
    t = ctx_ok(&l);
    assert_int_equal(connect_as(t, "good", 0, &c, &x), 0);
    int n = tls_peer_username(x, name, sizeof(name));
    assert_string_equal(name, "CN=good-client,O=Shoal Test");
    assert_int_equal(n, (int)strlen(name));
    SSL_free(c);
    xport_destroy(&x);
    tls_ctx_destroy(&t);

    l.use_subject_as_username = false;
    t = ctx_ok(&l);
    assert_int_equal(connect_as(t, "good", 0, &c, &x), 0);
    assert_int_equal(tls_peer_username(x, name, sizeof(name)), 0);
    SSL_free(c);
    xport_destroy(&x);
    tls_ctx_destroy(&t);
}

static void expect_build_error(const struct conf_listener *l, const char *want)
{
    char err[512] = "";
    struct ssl_ctx_st *ctx = conf_tls_build(l, err, sizeof(err));
    assert_null(ctx);
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'", err, want);
    assert_int_equal(conf_tls_check(l, err, sizeof(err)), ERR_INVALID);
    assert_null(tls_ctx_create(l, err, sizeof(err)));
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_build_errors(void **state)
{
    (void)state;
    char want[700];
    struct conf_listener l = listener("missing.crt", "server.key");
    (void)snprintf(want, sizeof(want), "%s: cannot read (No such file or directory)", l.certfile);
    expect_build_error(&l, want);

    l = listener("server.crt", "server-ec.key");
    (void)snprintf(want, sizeof(want), "%s: key does not match certificate", l.keyfile);
    expect_build_error(&l, want);
    l = listener("server-ec.crt", "good.key"); /* same key type, other key */
    (void)snprintf(want, sizeof(want), "%s: key does not match certificate", l.keyfile);
    expect_build_error(&l, want);
    l = listener("server.crt", "server.crt");
    (void)snprintf(want, sizeof(want), "%s: no PEM private key", l.keyfile);
    expect_build_error(&l, want);
    l = listener("server.key", "server.key");
    (void)snprintf(want, sizeof(want), "%s: no PEM certificate", l.certfile);
    expect_build_error(&l, want);

    l = listener("server.crt", "encrypted.key");
    (void)snprintf(want, sizeof(want), "%s: key is encrypted", l.keyfile);
    expect_build_error(&l, want);

    l = listener("server.crt", "server.key");
    l.ciphers = "NO-SUCH-CIPHER";
    expect_build_error(&l, "ciphers: no usable cipher in 'NO-SUCH-CIPHER'");
    l.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
    l.ciphers_tls13 = "TLS_NOPE";
    expect_build_error(&l, "ciphers_tls1.3: ");
    l.ciphers_tls13 = NULL;
    l.tls_version = "tlsv9";
    expect_build_error(&l, "tls_version: unknown version 'tlsv9'");

    l = listener("server.crt", "server.key");
    l.require_certificate = true;
    expect_build_error(&l, "require_certificate: needs cafile or capath");
    l.cafile = path("nope.crt");
    (void)snprintf(want, sizeof(want), "%s: cannot read (No such file or directory)", l.cafile);
    expect_build_error(&l, want);
    l.cafile = path("server.key");
    (void)snprintf(want, sizeof(want), "%s: no PEM certificate found", l.cafile);
    expect_build_error(&l, want);
    l.cafile = path("ca.crt");
    l.crlfile = path("ca.crt");
    (void)snprintf(want, sizeof(want), "%s: no PEM CRL found", l.crlfile);
    expect_build_error(&l, want);
    l.crlfile = NULL;
    l.capath = path("ca.crt");
    (void)snprintf(want, sizeof(want), "%s: capath is not a directory", l.capath);
    expect_build_error(&l, want);
    l.capath = NULL;

    /* Files behind symlinks (as in Kubernetes secret volumes), and settings that work. */
    assert_int_equal(symlink(path("server.crt"), path("link.crt")), 0);
    assert_int_equal(symlink(path("server.key"), path("link.key")), 0);
    l = listener("link.crt", "link.key");
    l.tls_version = "tlsv1.3";
    l.ciphers_tls13 = "TLS_AES_128_GCM_SHA256";
    char err[512] = "";
    assert_int_equal(conf_tls_check(&l, err, sizeof(err)), 0);
    struct tls_ctx *t = ctx_ok(&l);
    expect_failure(t, NULL, TLS1_2_VERSION, TLS_FAIL_PROTOCOL);
    SSL *c;
    struct xport *x;
    assert_int_equal(connect_as(t, NULL, 0, &c, &x), 0);
    assert_string_equal(SSL_get_cipher_name(c), "TLS_AES_128_GCM_SHA256");
    SSL_free(c);
    xport_destroy(&x);
    tls_ctx_destroy(&t);
    l.tls_version = "tlsv1.2";
    assert_int_equal(conf_tls_check(&l, err, sizeof(err)), 0);
    l.tls_version = "tlsv1.1";
    expect_build_error(&l, "tls_version: tlsv1.1 needs ciphers with @SECLEVEL=0");
    l.ciphers = "DEFAULT:@SECLEVEL=0";
    assert_int_equal(conf_tls_check(&l, err, sizeof(err)), 0);
    l.ciphers = NULL;
    assert_true(conf_tls_enabled(&l));
    l.certfile = NULL;
    assert_false(conf_tls_enabled(&l));
    assert_int_equal(conf_tls_check(&l, err, sizeof(err)), 0);
    assert_null(conf_tls_build(&l, err, sizeof(err)));
}

static void test_reload_new_crl(void **state)
{
    (void)state;
    char err[512] = "";
    struct conf_listener l = listener_mtls();
    l.crlfile = path("crl-live.pem");
    copy_file(path("crl.pem"), l.crlfile);
    struct tls_ctx *t = ctx_ok(&l);
    SSL *c;
    struct xport *x;
    assert_int_equal(connect_as(t, "later", 0, &c, &x), 0);

    copy_file(path("crl-later.pem"), l.crlfile);
    assert_int_equal(tls_ctx_reload(t, err, sizeof(err)), 0);
    expect_failure(t, "later", 0, TLS_FAIL_REVOKED);
    assert_int_equal(connect_as(t, "good", 0, NULL, NULL), 0);
    /* The connection made before the reload is not affected. */
    exchange(c, x);
    SSL_free(c);
    xport_destroy(&x);

    /* The listener's reference outlives connections, and connections outlive it. */
    assert_int_equal(connect_as(t, "good", 0, &c, &x), 0);
    tls_ctx_destroy(&t);
    exchange(c, x);
    SSL_free(c);
    xport_destroy(&x);
}

static void test_reload_broken_keeps_old(void **state)
{
    (void)state;
    char err[512] = "";
    struct conf_listener l = listener("live.crt", "server.key");
    copy_file(path("server.crt"), l.certfile);
    struct tls_ctx *t = ctx_ok(&l);

    FILE *f = fopen(l.certfile, "w");
    assert_non_null(f);
    assert_true(fputs("not a certificate\n", f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(tls_ctx_reload(t, err, sizeof(err)), ERR_INVALID);
    char want[700];
    (void)snprintf(want, sizeof(want), "%s: no PEM certificate", l.certfile);
    assert_non_null(strstr(err, want));
    assert_int_equal(connect_as(t, NULL, 0, NULL, NULL), 0);

    copy_file(path("server-ec.crt"), l.certfile);
    l.keyfile = path("server-ec.key");
    assert_int_equal(tls_ctx_reload(t, err, sizeof(err)), 0);
    SSL *c;
    struct xport *x;
    assert_int_equal(connect_as(t, NULL, 0, &c, &x), 0);
    assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(SSL_get0_peer_certificate(c))),
                     EVP_PKEY_EC);
    SSL_free(c);
    xport_destroy(&x);
    tls_ctx_destroy(&t);
}

/* Connects as "good", lets the client read its ticket and returns the session. */
static SSL_SESSION *first_session(struct tls_ctx *t, SSL_CTX *cctx)
{
    SSL *c = client_new(cctx);
    struct xport *x = tls_create(t, "test-peer");
    assert_int_equal(pump(c, x), 0);
    assert_false(SSL_session_reused(c));
    exchange(c, x); /* the client reads its ticket on the way */
    SSL_SESSION *s = SSL_get1_session(c);
    assert_non_null(s);
    /* Freeing a client SSL that did not send close_notify spoils its session. */
    assert_true(SSL_shutdown(c) >= 0);
    assert_true(SSL_SESSION_is_resumable(s));
    SSL_free(c);
    xport_destroy(&x);
    return s;
}

static bool resumes(struct tls_ctx *t, SSL_CTX *cctx, SSL_SESSION *s)
{
    char name[64];
    SSL *c = client_new(cctx);
    assert_int_equal(SSL_set_session(c, s), 1);
    struct xport *x = tls_create(t, "test-peer");
    assert_int_equal(pump(c, x), 0);
    bool is_reused = SSL_session_reused(c);
    /* The user name survives resumption: the ticket carries the certificate. */
    assert_int_equal(tls_peer_username(x, name, sizeof(name)), 11);
    assert_string_equal(name, "good-client");
    exchange(c, x);
    SSL_free(c);
    xport_destroy(&x);
    return is_reused;
}

static void test_session_resumption(void **state)
{
    (void)state;
    char err[512] = "";
    struct conf_listener l = listener_mtls();
    l.use_identity_as_username = true;
    struct tls_ctx *t = ctx_ok(&l);
    int versions[] = {0, TLS1_2_VERSION};
    for (int i = 0; i < 2; i++) {
        SSL_CTX *cctx = client_ctx("good", versions[i]);
        SSL_SESSION *s = first_session(t, cctx);
        assert_true(resumes(t, cctx, s));
        SSL_SESSION_free(s);

        /* A reload brings new ticket keys: a full handshake, with the new files. */
        s = first_session(t, cctx);
        assert_int_equal(tls_ctx_reload(t, err, sizeof(err)), 0);
        assert_false(resumes(t, cctx, s));
        SSL_SESSION_free(s);
        SSL_CTX_free(cctx);
    }
    tls_ctx_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_data_both_ways),
        cmocka_unit_test(test_ecdsa_tls12_and_13),
        cmocka_unit_test(test_revoked),
        cmocka_unit_test(test_garbage_is_protocol_failure),
        cmocka_unit_test(test_stale_crl),
        cmocka_unit_test(test_client_cert_required),
        cmocka_unit_test(test_rogue_ca),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_capath),
        cmocka_unit_test(test_peer_username),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_reload_new_crl),
        cmocka_unit_test(test_reload_broken_keeps_old),
        cmocka_unit_test(test_session_resumption),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
