#ifndef SHOAL_NODE_DIGEST_H
#define SHOAL_NODE_DIGEST_H

/*
 * The few cryptographic primitives outside TLS: SHA-1 (WebSocket accept keys), SHA-512 and
 * PBKDF2-SHA512 (mosquitto password hashes), base64, random bytes and a constant-time compare.
 * A thin layer over OpenSSL's libcrypto, so that no other module includes OpenSSL headers.
 * Every function is thread-safe (password checks run on the libuv thread pool).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_SHA1_LEN   20
#define DIGEST_SHA512_LEN 64

void digest_sha1(const void *p, size_t n, uint8_t out[DIGEST_SHA1_LEN]);
/* SHA-512 over a then b (either may be empty). */
void digest_sha512(const void *a, size_t alen, const void *b, size_t blen,
                   uint8_t out[DIGEST_SHA512_LEN]);
/* PBKDF2-HMAC-SHA512. Returns 0, or ERR_INVALID when iter is 0 or outlen is 0. */
int digest_pbkdf2_sha512(const void *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                         uint32_t iter, uint8_t *out, size_t outlen);

/* Standard base64 with padding. Writes a NUL-terminated string into out (cap bytes, at least
 * 4 * ceil(n / 3) + 1); returns its length, or 0 when cap is too small. */
size_t digest_base64_encode(const uint8_t *p, size_t n, char *out, size_t cap);
/* Decodes standard base64 (padding optional). Returns the byte count, or -1 when s is not
 * base64 or the result does not fit in cap bytes. */
long digest_base64_decode(const char *s, size_t len, uint8_t *out, size_t cap);

/* HMAC-SHA256 of data under key. */
void digest_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                        uint8_t out[32]);

/* Fills out with cryptographically strong random bytes. Returns 0 or ERR_IO. */
int digest_random(uint8_t *out, size_t n);

/* True when a[0..n) equals b[0..n); the time taken does not depend on the contents. */
bool digest_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
