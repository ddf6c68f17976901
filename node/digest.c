/*
 * Hashes, base64 and randomness over OpenSSL's libcrypto. One-shot EVP calls keep this file
 * free of state, so it is safe on any thread.
 */
#include "node/digest.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "node/err.h"

void digest_sha1(const void *p, size_t n, uint8_t out[DIGEST_SHA1_LEN])
{
    unsigned len = DIGEST_SHA1_LEN;
    if (!EVP_Digest(p, n, out, &len, EVP_sha1(), NULL))
        memset(out, 0, DIGEST_SHA1_LEN);
}

void digest_sha512(const void *a, size_t alen, const void *b, size_t blen,
                   uint8_t out[DIGEST_SHA512_LEN])
{
    unsigned len = DIGEST_SHA512_LEN;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool is_ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) &&
                 EVP_DigestUpdate(ctx, a, alen) && EVP_DigestUpdate(ctx, b, blen) &&
                 EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
    if (!is_ok)
        memset(out, 0, DIGEST_SHA512_LEN);
}

int digest_pbkdf2_sha512(const void *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                         uint32_t iter, uint8_t *out, size_t outlen)
{
    if (iter == 0 || outlen == 0 || iter > INT32_MAX || pwlen > INT32_MAX || saltlen > INT32_MAX ||
        outlen > INT32_MAX)
        return ERR_INVALID;
    if (!PKCS5_PBKDF2_HMAC(pw, (int)pwlen, salt, (int)saltlen, (int)iter, EVP_sha512(), (int)outlen,
                           out))
        return ERR_INVALID;
    return 0;
}

size_t digest_base64_encode(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t need = 4 * ((n + 2) / 3) + 1;
    if (cap < need || n > INT32_MAX)
        return 0;
    return (size_t)EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Written out rather than EVP_DecodeBlock, which neither rejects stray padding nor reports the
 * true length of padded input. */
long digest_base64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    while (len > 0 && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)n;
}

int digest_random(uint8_t *out, size_t n)
{
    if (n > INT32_MAX || RAND_bytes(out, (int)n) != 1)
        return ERR_IO;
    return 0;
}

bool digest_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void digest_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                        uint8_t out[32])
{
    unsigned n = 32;
    if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &n))
        memset(out, 0, 32);
}
