/*
 * Server SSL_CTX construction from a listener's TLS directives. Every file is opened here with
 * fopen (which follows symlinks, as Kubernetes secret mounts need) and parsed from that one
 * handle, so a missing or unreadable file is reported with its errno rather than as an opaque
 * OpenSSL error. Nothing here logs or keeps state: errors become "FILE: why" text for the
 * caller, and the OpenSSL error queue of the calling thread is left empty on every return.
 *
 * Session resumption is stateless only (tickets, cache off): a server-side session cache
 * would hold a session, peer certificate included, per recent client in memory, and the
 * broker is sized for many thousands of idle connections.
 */
#include "conf/conf_tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "conf/conf.h"
#include "node/err.h"

/* The same for every listener and every reload: a ticket only decrypts under the ticket keys
 * of the context that issued it, so the id context need not tell listeners apart. */
static const unsigned char tls_sid_ctx[] = "shoal";

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The most specific reason OpenSSL queued, in words. */
static const char *openssl_why(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    return s ? s : "unknown error";
}

/* True when the queue holds nothing but the "no more PEM blocks" that ends every read loop. */
static bool pem_at_end(void)
{
    unsigned long e = ERR_peek_last_error();
    return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

/* Refuses to prompt on the terminal for a key pass phrase (OpenSSL's default); records that
 * the key was encrypted so the error can say so. */
static int tls_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (u)
        *(bool *)u = true;
    return -1;
}

static BIO *pem_open(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        char why[128];
        if (strerror_r(errno, why, sizeof(why)) != 0)
            (void)snprintf(why, sizeof(why), "errno %d", errno);
        errf(err, errlen, "%s: cannot read (%s)", path, why);
        return NULL;
    }
    BIO *b = BIO_new_fp(f, BIO_CLOSE);
    if (!b) {
        (void)fclose(f);
        errf(err, errlen, "%s: cannot read (out of memory)", path);
    }
    return b;
}

/* The leaf certificate then any intermediates, in file order. Returns the leaf (a new
 * reference, for the key check) or NULL. */
static X509 *load_chain(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
    BIO *b = pem_open(path, err, errlen);
    if (!b)
        return NULL;
    X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, tls_no_password, NULL);
    if (!leaf) {
        errf(err, errlen, "%s: no PEM certificate (%s)", path, openssl_why());
        goto out_bio;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        errf(err, errlen, "%s: certificate not usable (%s)", path, openssl_why());
        goto out_leaf;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(b, NULL, tls_no_password, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            errf(err, errlen, "%s: chain certificate not usable (%s)", path, openssl_why());
            goto out_leaf;
        }
    }
    if (!pem_at_end()) {
        errf(err, errlen, "%s: bad certificate in chain (%s)", path, openssl_why());
        goto out_leaf;
    }
    BIO_free(b);
    return leaf;

out_leaf:
    X509_free(leaf);
out_bio:
    BIO_free(b);
    return NULL;
}

static int load_key(SSL_CTX *ctx, X509 *leaf, const char *path, char *err, size_t errlen)
{
    bool is_encrypted = false;
    int rc = ERR_INVALID;
    BIO *b = pem_open(path, err, errlen);
    if (!b)
        return ERR_INVALID;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, tls_no_password, &is_encrypted);
    if (!k) {
        if (is_encrypted)
            errf(err, errlen, "%s: key is encrypted (pass phrases are not supported)", path);
        else
            errf(err, errlen, "%s: no PEM private key (%s)", path, openssl_why());
        goto out_bio;
    }
    if (X509_check_private_key(leaf, k) != 1) {
        errf(err, errlen, "%s: key does not match certificate", path);
        goto out_key;
    }
    if (SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        errf(err, errlen, "%s: key not usable (%s)", path, openssl_why());
        goto out_key;
    }
    rc = 0;
out_key:
    EVP_PKEY_free(k);
out_bio:
    BIO_free(b);
    return rc;
}

static int load_cafile(X509_STORE *st, const char *path, char *err, size_t errlen)
{
    int n = 0;
    int rc = ERR_INVALID;
    BIO *b = pem_open(path, err, errlen);
    if (!b)
        return ERR_INVALID;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, tls_no_password, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(st, x);
        X509_free(x);
        if (ok != 1) {
            errf(err, errlen, "%s: CA certificate not usable (%s)", path, openssl_why());
            goto out;
        }
        n++;
    }
    if (!pem_at_end()) {
        errf(err, errlen, "%s: bad CA certificate (%s)", path, openssl_why());
        goto out;
    }
    if (n == 0) {
        errf(err, errlen, "%s: no PEM certificate found", path);
        goto out;
    }
    rc = 0;
out:
    BIO_free(b);
    return rc;
}

static int load_capath(X509_STORE *st, const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        char why[128];
        if (strerror_r(errno, why, sizeof(why)) != 0)
            (void)snprintf(why, sizeof(why), "errno %d", errno);
        errf(err, errlen, "%s: cannot read (%s)", path, why);
        return ERR_INVALID;
    }
    if (!S_ISDIR(sb.st_mode)) {
        errf(err, errlen, "%s: capath is not a directory", path);
        return ERR_INVALID;
    }
    /* Hashed names (openssl rehash) are looked up lazily at verification time. */
    if (X509_STORE_load_path(st, path) != 1) {
        errf(err, errlen, "%s: cannot use as capath (%s)", path, openssl_why());
        return ERR_INVALID;
    }
    return 0;
}

/* Every CRL in the file, then leaf revocation checking (as mosquitto does). */
static int load_crls(X509_STORE *st, const char *path, char *err, size_t errlen)
{
    int n = 0;
    int rc = ERR_INVALID;
    BIO *b = pem_open(path, err, errlen);
    if (!b)
        return ERR_INVALID;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, tls_no_password, NULL)) != NULL) {
        int ok = X509_STORE_add_crl(st, crl);
        X509_CRL_free(crl);
        if (ok != 1) {
            errf(err, errlen, "%s: CRL not usable (%s)", path, openssl_why());
            goto out;
        }
        n++;
    }
    if (!pem_at_end()) {
        errf(err, errlen, "%s: bad CRL (%s)", path, openssl_why());
        goto out;
    }
    if (n == 0) {
        errf(err, errlen, "%s: no PEM CRL found", path);
        goto out;
    }
    (void)X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    rc = 0;
out:
    BIO_free(b);
    return rc;
}

static int set_versions_and_ciphers(SSL_CTX *ctx, const struct conf_listener *l, char *err,
                                    size_t errlen)
{
    int min = TLS1_2_VERSION;
    if (l->tls_version) {
        if (strcmp(l->tls_version, "tlsv1.3") == 0) {
            min = TLS1_3_VERSION;
        } else if (strcmp(l->tls_version, "tlsv1.2") == 0) {
            min = TLS1_2_VERSION;
        } else if (strcmp(l->tls_version, "tlsv1.1") == 0) {
            min = TLS1_1_VERSION;
        } else {
            errf(err, errlen, "tls_version: unknown version '%s' (tlsv1.1, tlsv1.2 or tlsv1.3)",
                 l->tls_version);
            return ERR_INVALID;
        }
    }
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1) {
        errf(err, errlen, "tls_version: '%s' is not supported by this OpenSSL", l->tls_version);
        return ERR_INVALID;
    }
    if (l->ciphers && SSL_CTX_set_cipher_list(ctx, l->ciphers) != 1) {
        errf(err, errlen, "ciphers: no usable cipher in '%s' (%s)", l->ciphers, openssl_why());
        return ERR_INVALID;
    }
    if (l->ciphers_tls13 && SSL_CTX_set_ciphersuites(ctx, l->ciphers_tls13) != 1) {
        errf(err, errlen, "ciphers_tls1.3: no usable ciphersuite in '%s' (%s)", l->ciphers_tls13,
             openssl_why());
        return ERR_INVALID;
    }
    /* OpenSSL 3 refuses TLS 1.1 handshakes above security level 0 (SHA-1 in its PRF): a
     * minimum of 1.1 would silently mean 1.2 unless the cipher list lowers the level. */
    if (min == TLS1_1_VERSION && SSL_CTX_get_security_level(ctx) > 0) {
        errf(err, errlen,
             "tls_version: tlsv1.1 needs ciphers with @SECLEVEL=0 (OpenSSL %d refuses TLS 1.1 "
             "at security level %d)",
             OPENSSL_VERSION_MAJOR, SSL_CTX_get_security_level(ctx));
        return ERR_INVALID;
    }
    return 0;
}

/* Who may connect: mosquitto asks for a certificate whenever it has a CA to check one
 * against, and insists on one when told to or when the certificate names the user. */
static int set_client_auth(SSL_CTX *ctx, const struct conf_listener *l, char *err, size_t errlen)
{
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    bool has_ca = l->cafile || l->capath;
    const char *needs = l->require_certificate        ? "require_certificate"
                        : l->use_identity_as_username ? "use_identity_as_username"
                        : l->use_subject_as_username  ? "use_subject_as_username"
                                                      : NULL;

    if (needs && !has_ca) {
        errf(err, errlen, "%s: needs cafile or capath", needs);
        return ERR_INVALID;
    }
    if (l->cafile && load_cafile(st, l->cafile, err, errlen) < 0)
        return ERR_INVALID;
    if (l->capath && load_capath(st, l->capath, err, errlen) < 0)
        return ERR_INVALID;
    if (l->crlfile && load_crls(st, l->crlfile, err, errlen) < 0)
        return ERR_INVALID;
    if (needs)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else if (has_ca)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return 0;
}

bool conf_tls_enabled(const struct conf_listener *l)
{
    return l->certfile != NULL && l->certfile[0] != '\0';
}

static int configure(SSL_CTX *ctx, const struct conf_listener *l, char *err, size_t errlen)
{
    if (!l->keyfile) {
        errf(err, errlen, "keyfile: needed with certfile %s", l->certfile);
        return ERR_INVALID;
    }
    if (set_versions_and_ciphers(ctx, l, err, errlen) < 0)
        return ERR_INVALID;
    X509 *leaf = load_chain(ctx, l->certfile, err, errlen);
    if (!leaf)
        return ERR_INVALID;
    int rc = load_key(ctx, leaf, l->keyfile, err, errlen);
    X509_free(leaf);
    if (rc < 0)
        return rc;
    if (set_client_auth(ctx, l, err, errlen) < 0)
        return ERR_INVALID;

    /* Client-initiated renegotiation only costs the server CPU; MQTT clients never need it. */
    (void)SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                       SSL_OP_NO_COMPRESSION);
    (void)SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    (void)SSL_CTX_set_dh_auto(ctx, 1);
    /* Resumption through tickets only. The id context is required for resumption to be
     * allowed at all once client certificates are verified. One ticket per handshake: a
     * client resumes with one, and each costs an encryption and bytes on the wire. */
    (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_session_id_context(ctx, tls_sid_ctx, sizeof(tls_sid_ctx) - 1) != 1 ||
        SSL_CTX_set_num_tickets(ctx, 1) != 1) {
        errf(err, errlen, "%s: cannot set up session tickets (%s)", l->certfile, openssl_why());
        return ERR_INVALID;
    }
    return 0;
}

struct ssl_ctx_st *conf_tls_build(const struct conf_listener *l, char *err, size_t errlen)
{
    if (!conf_tls_enabled(l)) {
        errf(err, errlen, "certfile: not set");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        errf(err, errlen, "%s: cannot create a TLS context (%s)", l->certfile, openssl_why());
        ERR_clear_error();
        return NULL;
    }
    if (configure(ctx, l, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    ERR_clear_error();
    return ctx;
}

int conf_tls_check(const struct conf_listener *l, char *err, size_t errlen)
{
    if (!conf_tls_enabled(l))
        return 0;
    SSL_CTX *ctx = conf_tls_build(l, err, errlen);
    if (!ctx)
        return ERR_INVALID;
    SSL_CTX_free(ctx);
    return 0;
}
