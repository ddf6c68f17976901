#ifndef SHOAL_NODE_AUTH_H
#define SHOAL_NODE_AUTH_H

/*
 * Password authentication against a mosquitto-compatible password file: `user:$7$…`
 * (PBKDF2-SHA512), `user:$6$…` (salted SHA-512) and `user:$argon2id$…` lines. A loaded file
 * is an immutable, reference-counted struct auth, so a reload swaps in a new one while checks
 * already running on the thread pool finish against the old one.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct auth;

/*
 * Reads path (through symlinks). Returns a new struct auth with one reference, or NULL with
 * "FILE:LINE: why" (or "FILE: why") in err. Pure and thread-safe: reloads run it off the loop.
 */
struct auth *auth_load(const char *path, char *err, size_t errlen);
struct auth *auth_ref(struct auth *a);
/* Drops a reference; sets *a to NULL. */
void auth_unref(struct auth **a);
/* Number of users in the file. */
size_t auth_count(const struct auth *a);

/* result: 0 when the password matches, ERR_BAD_AUTH when the user is unknown or the password
 * wrong, ERR_CANCELED when the loop is shutting down. */
typedef void (*auth_done_cb)(void *ctx, int result);

/*
 * Checks user/password on the libuv thread pool (hashing never runs on the loop), in time
 * that does not reveal whether the user exists. Copies user and pw (and wipes the copy of pw
 * after use). Holds a reference on a until cb has run, so the caller may unref a at once.
 * On 0, cb runs exactly once on a later loop pass; on error (negative) it never runs:
 * ERR_INVALID when ulen or pwlen is over 65535, or a UV_E* code from uv_queue_work.
 */
int auth_check(uv_loop_t *loop, struct auth *a, const char *user, size_t ulen, const uint8_t *pw,
               size_t pwlen, auth_done_cb cb, void *ctx);

/* Synchronous check, for tests and shoal-passwd: 0 or ERR_BAD_AUTH. */
int auth_check_sync(const struct auth *a, const char *user, size_t ulen, const uint8_t *pw,
                    size_t pwlen);

/* Hash kinds, numbered as mosquitto numbers them ($6$, $7$). */
enum auth_hash_kind {
    AUTH_HASH_SHA512 = 6,        /* $6$: SHA-512 over password then salt */
    AUTH_HASH_SHA512_PBKDF2 = 7, /* $7$: PBKDF2-HMAC-SHA512 */
    AUTH_HASH_ARGON2ID = 8,      /* $argon2id$ PHC string */
};

/* The cost parameter of auth_hash: PBKDF2 iterations or argon2id passes (time cost).
 * Defaults are those of mosquitto_passwd (101 in 2.0; argon2id t=1, m=46 MiB in 2.1); files
 * whose costs exceed the maxima are refused by auth_load. */
#define AUTH_PBKDF2_DEFAULT_ITER 101
#define AUTH_PBKDF2_MAX_ITER     10000000
#define AUTH_ARGON2ID_DEFAULT_T  1
#define AUTH_ARGON2ID_MAX_T      1000
/* Room for any string auth_hash writes, NUL included. */
#define AUTH_HASH_CAP 512

/*
 * Hashes pw with a fresh random salt into the hash part of a password-file line (the text
 * after "user:"), NUL-terminated in out. cost is the PBKDF2 iteration count or the argon2id
 * time cost, ignored for AUTH_HASH_SHA512. $6$/$7$ use 12-byte salts so that mosquitto 2.0
 * reads the result. Returns 0; ERR_INVALID for an unknown kind, a cost out of range or cap
 * smaller than needed; ERR_IO when no random bytes are available.
 */
int auth_hash(enum auth_hash_kind kind, uint32_t cost, const uint8_t *pw, size_t pwlen, char *out,
              size_t cap);

/* True when hash[0..len) is a hash auth_load accepts (used by shoal-passwd -U to leave lines
 * that are already hashed alone). */
bool auth_hash_is_valid(const char *hash, size_t len);

#endif
