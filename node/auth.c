/*
 * Password files in mosquitto's format, checked off the event loop. auth_load validates every
 * line up front, so a bad file fails at start or at reload and never at CONNECT, and keeps the
 * users in an array sorted by name (binary search; files hold tens of thousands of users).
 * Checks hash on the libuv thread pool against that immutable array.
 *
 * An unknown user is hashed against a stand-in entry shaped like the file's first one (same
 * kind and cost), so the time a check takes does not tell whether the name exists.
 *
 * The refcount is a plain integer: it is touched only on the loop thread. A check holds a
 * reference from auth_check until its after-work callback, so a reload can drop the old
 * struct auth while hashes still run against it.
 */
#include "node/auth.h"

#include <argon2.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/buf.h"
#include "node/digest.h"
#include "node/err.h"
#include "node/log.h"

#define AUTH_FILE_MAX         (256u << 20) /* bytes; a million $7$ users take about half of it */
#define AUTH_USER_MAX         65535        /* an MQTT string */
#define AUTH_HASH_MAX         1024         /* longest hash field we accept */
#define AUTH_LINE_MAX         (AUTH_USER_MAX + 1 + AUTH_HASH_MAX)
#define AUTH_PW_MAX           65535 /* MQTT binary data */
#define AUTH_DIGEST_LEN       64    /* SHA-512 output, the only length $6$/$7$ use */
#define AUTH_SALT_MAX         64
#define AUTH_SALT_SHORT       12 /* what mosquitto 2.0 writes and reads; 2.1 writes 64 */
#define AUTH_ARGON2ID_M       47104
#define AUTH_ARGON2ID_P       1
#define AUTH_ARGON2ID_SALT    64 /* mosquitto 2.1's salt and hash lengths */
#define AUTH_ARGON2ID_HASH    64
#define AUTH_ARGON2ID_MAX_M   (4u << 20) /* KiB: 4 GiB per running check is already absurd */
#define AUTH_ARGON2ID_MAX_P   64
#define AUTH_ARGON2ID_BIN_MAX 512 /* longest salt or hash in a PHC string, in bytes */
#define AUTH_NAME_SHOWN       64  /* bytes of an escaped user name in an error */

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct auth_entry {
    char *user; /* NUL-terminated copy; ulen bytes without the NUL */
    size_t ulen;
    char *phc;     /* argon2id: the whole PHC string, which libargon2 parses at each check */
    uint32_t line; /* where it was read, for the duplicate error */
    uint32_t iter;
    uint8_t kind; /* enum auth_hash_kind */
    uint8_t salt_len;
    uint8_t salt[AUTH_SALT_MAX];
    uint8_t hash[AUTH_DIGEST_LEN];
};

struct auth {
    uint32_t refs;
    size_t n;
    struct auth_entry *users; /* sorted by name */
    struct auth_entry dummy;  /* hashed against for unknown names */
};

struct auth_req {
    uv_work_t work;
    struct auth *a;
    auth_done_cb cb;
    void *ctx;
    int result;
    size_t ulen;
    size_t pwlen;
    uint8_t data[]; /* user name, then password */
};

struct span {
    const char *p;
    size_t n;
};

/* Called through a volatile pointer so the compiler cannot drop a wipe of a buffer that is
 * about to be freed. */
static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;

static void wipe(void *p, size_t n)
{
    if (n > 0)
        wipe_fn(p, 0, n);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static struct span trim(struct span s)
{
    while (s.n > 0 && is_blank(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_blank(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool span_eq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* Splits s at every sep into at most max fields; returns the field count, or max + 1 when
 * there are more. */
static size_t split(struct span s, char sep, struct span *out, size_t max)
{
    size_t k = 0;
    const char *start = s.p;
    const char *end = s.p + s.n;
    for (const char *q = s.p;; q++) {
        if (q == end || *q == sep) {
            if (k == max)
                return max + 1;
            out[k].p = start;
            out[k].n = (size_t)(q - start);
            k++;
            if (q == end)
                return k;
            start = q + 1;
        }
    }
}

/* Decimal without sign or blanks, value in [1, max]. Leading zeros are refused when strict,
 * as libargon2's own decoder refuses them. */
static bool parse_u32(struct span s, uint32_t max, bool is_strict, uint32_t *out)
{
    uint64_t v = 0;
    if (s.n == 0 || s.n > 10 || (is_strict && s.n > 1 && s.p[0] == '0'))
        return false;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    if (v == 0 || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

static int b64_digit(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Unpadded base64 as PHC strings carry it, with the unused low bits of the last digit zero
 * (libargon2 refuses anything else, and we want such a line refused at load, not at every
 * check). Returns the decoded length, or 0 when s is not such base64. */
static size_t phc_b64_len(struct span s)
{
    if (s.n == 0 || s.n % 4 == 1)
        return 0;
    for (size_t i = 0; i < s.n; i++) {
        if (b64_digit(s.p[i]) < 0)
            return 0;
    }
    int last = b64_digit(s.p[s.n - 1]);
    if ((s.n % 4 == 2 && (last & 15) != 0) || (s.n % 4 == 3 && (last & 3) != 0))
        return 0;
    return s.n / 4 * 3 + (s.n % 4 == 0 ? 0 : s.n % 4 - 1);
}

/* $6$SALT$HASH and $7$ITER$SALT$HASH, body being the text after "$6$" / "$7$". */
static bool parse_sha(struct auth_entry *e, struct span body, bool has_iter)
{
    struct span f[3];
    size_t want = has_iter ? 3 : 2;
    if (split(body, '$', f, 3) != want)
        return false;
    size_t i = 0;
    e->iter = 0;
    if (has_iter && !parse_u32(f[i++], AUTH_PBKDF2_MAX_ITER, false, &e->iter))
        return false;
    long n = digest_base64_decode(f[i].p, f[i].n, e->salt, sizeof(e->salt));
    if (f[i].n == 0 || (n != AUTH_SALT_SHORT && n != AUTH_SALT_MAX))
        return false;
    e->salt_len = (uint8_t)n;
    i++;
    n = digest_base64_decode(f[i].p, f[i].n, e->hash, sizeof(e->hash));
    return n == AUTH_DIGEST_LEN;
}

/* The fields after "$argon2id$": [v=16|v=19$]m=M,t=T,p=P$SALT$HASH, with the limits that
 * libargon2 enforces when it decodes the string, plus our caps on cost. */
static bool parse_argon2id(struct span body)
{
    struct span f[4];
    size_t k = split(body, '$', f, 4);
    size_t i = 0;
    if (k == 4) {
        if (!span_eq(f[0], "v=16") && !span_eq(f[0], "v=19"))
            return false;
        i = 1;
    } else if (k != 3) {
        return false;
    }
    struct span kv[3];
    if (split(f[i], ',', kv, 3) != 3)
        return false;
    static const char *const keys[3] = {"m=", "t=", "p="};
    static const uint32_t max[3] = {AUTH_ARGON2ID_MAX_M, AUTH_ARGON2ID_MAX_T, AUTH_ARGON2ID_MAX_P};
    uint32_t v[3];
    for (int j = 0; j < 3; j++) {
        if (kv[j].n < 2 || memcmp(kv[j].p, keys[j], 2) != 0)
            return false;
        struct span num = {kv[j].p + 2, kv[j].n - 2};
        if (!parse_u32(num, max[j], true, &v[j]))
            return false;
    }
    if (v[0] < 8 * v[2])
        return false; /* libargon2: at least 8 KiB per lane */
    size_t salt = phc_b64_len(f[i + 1]);
    size_t hash = phc_b64_len(f[i + 2]);
    return salt >= ARGON2_MIN_SALT_LENGTH && salt <= AUTH_ARGON2ID_BIN_MAX &&
           hash >= ARGON2_MIN_OUTLEN && hash <= AUTH_ARGON2ID_BIN_MAX;
}

/* Scheme ids short and plain enough to print ("$5$", "$argon2i$"): anything else may be a
 * plain-text password that happens to start with '$', which must never reach a log. */
static bool scheme_printable(struct span h, size_t *len)
{
    size_t i = 1;
    while (i < h.n && i <= 10 && h.p[i] != '$') {
        char c = h.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
        i++;
    }
    if (i == 1 || i >= h.n || h.p[i] != '$')
        return false;
    *len = i + 1;
    return true;
}

/* Fills e from the hash field h. On failure writes why (without any of h's secret parts). */
static bool parse_hash(struct auth_entry *e, struct span h, char *why, size_t whylen)
{
    static const char argon[] = "$argon2id$";
    size_t alen = sizeof(argon) - 1;
    size_t slen;

    if (h.n == 0) {
        (void)snprintf(why, whylen, "no password hash");
        return false;
    }
    if (h.p[0] != '$') {
        (void)snprintf(why, whylen,
                       "password is not hashed (convert the file with shoal-passwd -U)");
        return false;
    }
    if (h.n > AUTH_HASH_MAX) {
        (void)snprintf(why, whylen, "hash longer than %d bytes", AUTH_HASH_MAX);
        return false;
    }
    if (h.n >= 3 && (h.p[1] == '6' || h.p[1] == '7') && h.p[2] == '$') {
        bool has_iter = h.p[1] == '7';
        e->kind = has_iter ? AUTH_HASH_SHA512_PBKDF2 : AUTH_HASH_SHA512;
        struct span body = {h.p + 3, h.n - 3};
        if (parse_sha(e, body, has_iter))
            return true;
        (void)snprintf(why, whylen, "malformed $%c$ hash%s", h.p[1],
                       has_iter ? " (or iterations not in 1..10000000)" : "");
        return false;
    }
    if (h.n > alen && memcmp(h.p, argon, alen) == 0) {
        e->kind = AUTH_HASH_ARGON2ID;
        struct span body = {h.p + alen, h.n - alen};
        if (parse_argon2id(body)) {
            e->phc = xstrndup(h.p, h.n);
            return true;
        }
        (void)snprintf(why, whylen, "malformed $argon2id$ hash (or cost over m=%u,t=%d,p=%d)",
                       AUTH_ARGON2ID_MAX_M, AUTH_ARGON2ID_MAX_T, AUTH_ARGON2ID_MAX_P);
        return false;
    }
    if (scheme_printable(h, &slen))
        (void)snprintf(why, whylen, "unsupported hash '%.*s'", (int)slen, h.p);
    else
        (void)snprintf(why, whylen, "unsupported hash");
    return false;
}

bool auth_hash_is_valid(const char *hash, size_t len)
{
    struct auth_entry e = {0};
    char why[160];
    struct span h = {hash, len};
    bool is_ok = parse_hash(&e, h, why, sizeof(why));
    free(e.phc);
    return is_ok;
}

/* ---- loading ----------------------------------------------------------------------------- */

struct loader {
    const char *path;
    char *err;
    size_t errlen;
    struct auth_entry *v;
    size_t n;
    size_t cap;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *shown(char *out, size_t cap, const char *s, size_t n)
{
    return log_escape(out, cap, s, n);
}

/* Reads the whole file (through symlinks). Returns a malloc'd buffer or NULL with err set. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: %s", path,
                S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        goto out_close;
    }
    size_t cap =
        st.st_size > 0 && (uint64_t)st.st_size < AUTH_FILE_MAX ? (size_t)st.st_size + 1 : 4096;
    size_t n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap >= AUTH_FILE_MAX) {
                set_err(err, errlen, "%s: file larger than %u MiB", path, AUTH_FILE_MAX >> 20);
                goto out_free;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_err(err, errlen, "%s: %s", path, strerror(errno));
            goto out_free;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;

out_free:
    free(buf);
out_close:
    close(fd);
    return NULL;
}

/* Parses one line (without its newline). Returns false with err set. */
static bool load_line(struct loader *l, struct span line, uint32_t lineno)
{
    char name[AUTH_NAME_SHOWN];
    char why[160];

    if (line.n > 0 && line.p[line.n - 1] == '\r')
        line.n--;
    if (line.n > AUTH_LINE_MAX) {
        set_err(l->err, l->errlen, "%s:%u: line longer than %d bytes", l->path, lineno,
                AUTH_LINE_MAX);
        return false;
    }
    if (memchr(line.p, '\0', line.n)) {
        set_err(l->err, l->errlen, "%s:%u: line contains a NUL byte", l->path, lineno);
        return false;
    }
    struct span t = trim(line);
    if (t.n == 0 || t.p[0] == '#')
        return true;
    const char *colon = memchr(t.p, ':', t.n);
    if (!colon) {
        set_err(l->err, l->errlen, "%s:%u: expected 'user:hash'", l->path, lineno);
        return false;
    }
    struct span user = trim((struct span){t.p, (size_t)(colon - t.p)});
    struct span hash = trim((struct span){colon + 1, (size_t)(t.p + t.n - colon - 1)});
    if (user.n == 0) {
        set_err(l->err, l->errlen, "%s:%u: empty user name", l->path, lineno);
        return false;
    }
    if (user.n > AUTH_USER_MAX) {
        set_err(l->err, l->errlen, "%s:%u: user name longer than %d bytes", l->path, lineno,
                AUTH_USER_MAX);
        return false;
    }
    struct auth_entry e = {0};
    if (!parse_hash(&e, hash, why, sizeof(why))) {
        set_err(l->err, l->errlen, "%s:%u: user '%s': %s", l->path, lineno,
                shown(name, sizeof(name), user.p, user.n), why);
        return false;
    }
    e.user = xstrndup(user.p, user.n);
    e.ulen = user.n;
    e.line = lineno;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = e;
    return true;
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int entry_cmp(const void *x, const void *y)
{
    const struct auth_entry *a = x;
    const struct auth_entry *b = y;
    return name_cmp(a->user, a->ulen, b->user, b->ulen);
}

/* After sorting, equal names are neighbours; reports the duplicate that comes first in the
 * file, on the line of its second occurrence. */
static bool check_duplicates(struct loader *l)
{
    const struct auth_entry *dup = NULL;
    uint32_t first = 0;
    for (size_t i = 1; i < l->n; i++) {
        const struct auth_entry *a = &l->v[i - 1];
        const struct auth_entry *b = &l->v[i];
        if (entry_cmp(a, b) != 0)
            continue;
        const struct auth_entry *later = a->line > b->line ? a : b;
        uint32_t earlier = a->line > b->line ? b->line : a->line;
        if (!dup || later->line < dup->line) {
            dup = later;
            first = earlier;
        }
    }
    if (!dup)
        return true;
    char name[AUTH_NAME_SHOWN];
    set_err(l->err, l->errlen, "%s:%u: duplicate user '%s' (first on line %u)", l->path, dup->line,
            shown(name, sizeof(name), dup->user, dup->ulen), first);
    return false;
}

static void entry_free(struct auth_entry *e)
{
    free(e->user);
    e->user = NULL;
    free(e->phc);
    e->phc = NULL;
}

static void entries_free(struct auth_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        entry_free(&v[i]);
    free(v);
}

/* The stand-in for unknown names: the file's first entry's kind and cost, or mosquitto's
 * default PBKDF2 for an empty file. Its result is never used, only its time. */
static void make_dummy(struct auth_entry *d, const struct auth_entry *first)
{
    if (first) {
        *d = *first;
        d->user = NULL;
        d->phc = first->phc ? xstrdup(first->phc) : NULL;
        return;
    }
    memset(d, 0, sizeof(*d));
    d->kind = AUTH_HASH_SHA512_PBKDF2;
    d->iter = AUTH_PBKDF2_DEFAULT_ITER;
    d->salt_len = AUTH_SALT_SHORT;
}

struct auth *auth_load(const char *path, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = read_file(path, &len, err, errlen);
    if (!text)
        return NULL;

    struct loader l = {.path = path, .err = err, .errlen = errlen};
    uint32_t lineno = 0;
    const char *p = text;
    const char *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        lineno++;
        if (!load_line(&l, (struct span){p, (size_t)(stop - p)}, lineno))
            goto out_fail;
        p = nl ? nl + 1 : end;
    }
    free(text);
    text = NULL;

    struct auth *a = xcalloc(1, sizeof(*a));
    a->refs = 1;
    make_dummy(&a->dummy, l.n ? &l.v[0] : NULL);
    if (l.n > 1)
        qsort(l.v, l.n, sizeof(*l.v), entry_cmp);
    if (!check_duplicates(&l)) {
        entry_free(&a->dummy);
        free(a);
        entries_free(l.v, l.n);
        return NULL;
    }
    a->users = l.v;
    a->n = l.n;
    return a;

out_fail:
    free(text);
    entries_free(l.v, l.n);
    return NULL;
}

struct auth *auth_ref(struct auth *a)
{
    a->refs++;
    return a;
}

void auth_unref(struct auth **ap)
{
    struct auth *a = *ap;
    *ap = NULL;
    if (!a || --a->refs > 0)
        return;
    entries_free(a->users, a->n);
    a->users = NULL;
    entry_free(&a->dummy);
    free(a);
}

size_t auth_count(const struct auth *a)
{
    return a->n;
}

/* ---- checking ---------------------------------------------------------------------------- */

static const struct auth_entry *find(const struct auth *a, const char *user, size_t ulen)
{
    size_t lo = 0;
    size_t hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct auth_entry *e = &a->users[mid];
        int c = name_cmp(user, ulen, e->user, e->ulen);
        if (c == 0)
            return e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static bool entry_matches(const struct auth_entry *e, const uint8_t *pw, size_t pwlen)
{
    uint8_t out[AUTH_DIGEST_LEN];
    bool is_ok = false;

    switch (e->kind) {
    case AUTH_HASH_SHA512:
        digest_sha512(pw, pwlen, e->salt, e->salt_len, out);
        is_ok = digest_equal(out, e->hash, sizeof(out));
        break;
    case AUTH_HASH_SHA512_PBKDF2:
        is_ok =
            digest_pbkdf2_sha512(pw, pwlen, e->salt, e->salt_len, e->iter, out, sizeof(out)) == 0 &&
            digest_equal(out, e->hash, sizeof(out));
        break;
    case AUTH_HASH_ARGON2ID:
        /* libargon2 wants a non-NULL pointer even for an empty password. */
        is_ok = argon2id_verify(e->phc, pwlen ? (const void *)pw : "", pwlen) == ARGON2_OK;
        break;
    default:
        break;
    }
    wipe(out, sizeof(out));
    return is_ok;
}

int auth_check_sync(const struct auth *a, const char *user, size_t ulen, const uint8_t *pw,
                    size_t pwlen)
{
    const struct auth_entry *e = find(a, user, ulen);
    bool is_ok = entry_matches(e ? e : &a->dummy, pw, pwlen);
    return e && is_ok ? 0 : ERR_BAD_AUTH;
}

static void on_check_work(uv_work_t *w)
{
    struct auth_req *r = container_of(w, struct auth_req, work);
    r->result = auth_check_sync(r->a, (const char *)r->data, r->ulen, r->data + r->ulen, r->pwlen);
}

static void on_check_done(uv_work_t *w, int status)
{
    struct auth_req *r = container_of(w, struct auth_req, work);
    auth_done_cb cb = r->cb;
    void *ctx = r->ctx;
    int result = status == UV_ECANCELED ? ERR_CANCELED : r->result;

    auth_unref(&r->a);
    wipe(r->data, r->ulen + r->pwlen);
    free(r);
    cb(ctx, result);
}

int auth_check(uv_loop_t *loop, struct auth *a, const char *user, size_t ulen, const uint8_t *pw,
               size_t pwlen, auth_done_cb cb, void *ctx)
{
    if (ulen > AUTH_USER_MAX || pwlen > AUTH_PW_MAX)
        return ERR_INVALID;
    struct auth_req *r = xmalloc(sizeof(*r) + ulen + pwlen);
    r->a = auth_ref(a);
    r->cb = cb;
    r->ctx = ctx;
    r->result = ERR_BAD_AUTH;
    r->ulen = ulen;
    r->pwlen = pwlen;
    if (ulen)
        memcpy(r->data, user, ulen);
    if (pwlen)
        memcpy(r->data + ulen, pw, pwlen);
    int rc = uv_queue_work(loop, &r->work, on_check_work, on_check_done);
    if (rc != 0) {
        auth_unref(&r->a);
        wipe(r->data, ulen + pwlen);
        free(r);
        return rc;
    }
    return 0;
}

/* ---- hashing for shoal-passwd ------------------------------------------------------------ */

static int hash_sha(enum auth_hash_kind kind, uint32_t cost, const uint8_t *pw, size_t pwlen,
                    char *out, size_t cap)
{
    uint8_t salt[AUTH_SALT_SHORT];
    uint8_t h[AUTH_DIGEST_LEN];
    char salt64[4 * ((sizeof(salt) + 2) / 3) + 1];
    char hash64[4 * ((sizeof(h) + 2) / 3) + 1];
    int rc = ERR_INVALID;

    if (digest_random(salt, sizeof(salt)) != 0)
        return ERR_IO;
    if (kind == AUTH_HASH_SHA512)
        digest_sha512(pw, pwlen, salt, sizeof(salt), h);
    else if (digest_pbkdf2_sha512(pw, pwlen, salt, sizeof(salt), cost, h, sizeof(h)) != 0)
        goto out;
    if (!digest_base64_encode(salt, sizeof(salt), salt64, sizeof(salt64)) ||
        !digest_base64_encode(h, sizeof(h), hash64, sizeof(hash64)))
        goto out;
    int n = kind == AUTH_HASH_SHA512 ? snprintf(out, cap, "$6$%s$%s", salt64, hash64)
                                     : snprintf(out, cap, "$7$%u$%s$%s", cost, salt64, hash64);
    if (n > 0 && (size_t)n < cap)
        rc = 0;
out:
    wipe(h, sizeof(h));
    return rc;
}

static int hash_argon2id(uint32_t t, const uint8_t *pw, size_t pwlen, char *out, size_t cap)
{
    uint8_t salt[AUTH_ARGON2ID_SALT];
    size_t need = argon2_encodedlen(t, AUTH_ARGON2ID_M, AUTH_ARGON2ID_P, sizeof(salt),
                                    AUTH_ARGON2ID_HASH, Argon2_id);
    if (need > cap)
        return ERR_INVALID;
    if (digest_random(salt, sizeof(salt)) != 0)
        return ERR_IO;
    int rc =
        argon2id_hash_encoded(t, AUTH_ARGON2ID_M, AUTH_ARGON2ID_P, pwlen ? (const void *)pw : "",
                              pwlen, salt, sizeof(salt), AUTH_ARGON2ID_HASH, out, cap);
    return rc == ARGON2_OK ? 0 : ERR_INVALID;
}

int auth_hash(enum auth_hash_kind kind, uint32_t cost, const uint8_t *pw, size_t pwlen, char *out,
              size_t cap)
{
    switch (kind) {
    case AUTH_HASH_SHA512:
        return hash_sha(kind, 0, pw, pwlen, out, cap);
    case AUTH_HASH_SHA512_PBKDF2:
        if (cost == 0 || cost > AUTH_PBKDF2_MAX_ITER)
            return ERR_INVALID;
        return hash_sha(kind, cost, pw, pwlen, out, cap);
    case AUTH_HASH_ARGON2ID:
        if (cost == 0 || cost > AUTH_ARGON2ID_MAX_T)
            return ERR_INVALID;
        return hash_argon2id(cost, pw, pwlen, out, cap);
    }
    return ERR_INVALID;
}
