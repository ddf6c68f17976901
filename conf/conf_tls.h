#ifndef SHOAL_CONF_CONF_TLS_H
#define SHOAL_CONF_CONF_TLS_H

/*
 * Builds an OpenSSL server context from a listener's TLS directives (certfile, keyfile,
 * cafile, capath, crlfile, require_certificate, tls_version, ciphers, ciphers_tls1.3). The
 * same builder serves `shoal -t` (every file is checked at load), start-up and reloads.
 */

#include <stdbool.h>
#include <stddef.h>

struct conf_listener;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* True when the listener has TLS settings (a certfile). */
bool conf_tls_enabled(const struct conf_listener *l);

/*
 * Returns a new SSL_CTX for l, or NULL with "FILE: why" (naming the file or directive) in
 * err. Files are opened through symlinks. Thread-safe. The caller frees it with SSL_CTX_free.
 * A CRL past its nextUpdate is not an error (OpenSSL then refuses that CA's clients): the CRLs
 * are in the context's X509_STORE, where node/tls.c looks for stale ones and warns.
 */
struct ssl_ctx_st *conf_tls_build(const struct conf_listener *l, char *err, size_t errlen);

/* Builds and frees l's context: 0, or ERR_INVALID with "FILE: why" in err. For validation. */
int conf_tls_check(const struct conf_listener *l, char *err, size_t errlen);

#endif
