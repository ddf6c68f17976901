/*
 * The topic ACL: a mosquitto acl_file compiled once into an immutable struct acl. Loading is
 * pure (no libuv, no logging, no shared state), so a reload compiles the next ACL on the
 * thread pool while the loop keeps checking against the current one, then swaps pointers.
 *
 * Key design choice: acl_check runs on every delivery, so it must not allocate. Each rule's
 * topic is split into typed levels at load (literal, '+', '#', %c, %u), users are found through
 * an open-addressing hash table, and a check walks the topic's bytes level by level alongside
 * each rule's levels. Walking instead of splitting the topic into an array first means there
 * is no bound on topic depth and no slow or deny-by-default path for deep topics. Deny rules
 * are kept in their own lists so that every deny is tried before the first grant can answer.
 */
#include "node/acl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "node/buf.h"
#include "node/err.h"

/*
 * The exact semantics (mosquitto.conf(5), acl_file; where shoal differs it is stricter):
 *
 * File syntax, one directive a line:
 *   topic [read|write|readwrite|deny] TOPIC
 *   pattern [read|write|readwrite|deny] TOPIC
 *   user NAME
 * Leading and trailing white space is ignored (so a CRLF file reads the same); blank lines
 * and lines whose first non-blank character is '#' are comments. Words are separated by
 * spaces or tabs. With no access word the access is readwrite. As in mosquitto, TOPIC is the
 * rest of the line after the access word, so it may hold spaces, but then the access word is
 * required: "topic a b" is an error (unknown access "a"), and "topic read" alone is the topic
 * "read" with readwrite access. NAME is the rest of the line too (names may hold spaces).
 * TOPIC must be a valid filter ('+' and '#' fill a whole level, '#' only last, at most 65535
 * bytes). In a pattern, %c (client id) and %u (username) must each be a whole level; in a
 * topic line they are ordinary text. Unknown keywords, a missing name or topic, an unknown
 * access word, an invalid filter, a misplaced %c/%u and NUL bytes are errors "FILE:LINE: why".
 *
 * Who a rule applies to:
 *  - topic lines before the first user line: anonymous clients (username NULL) only;
 *  - topic lines after "user NAME": clients authenticated as NAME (several blocks for one
 *    name merge). A client with a username but no block gets only the patterns;
 *  - pattern lines: EVERY client, anonymous ones included, wherever the line sits in the
 *    file. A pattern written inside a user block is not limited to that user; mosquitto
 *    documents this and people keep tripping over it.
 *
 * Decision: a client may do something only if a rule with that access matches, and no deny
 * rule (from its own rules or from any pattern) matches. A deny always wins; mosquitto lets a
 * user's own grant win over a deny pattern, shoal does not. ACL_READ and ACL_SUBSCRIBE need
 * read or readwrite, ACL_WRITE needs write or readwrite.
 *
 * Matching a rule R against the checked string S (a topic name for ACL_READ and ACL_WRITE, a
 * filter for ACL_SUBSCRIBE) is MQTT filter matching of R against S's levels, where S's levels
 * are taken literally: a '+' or '#' in a subscribed filter is just a level holding that
 * character. So R = "#", "a/#" or "a/+" grants subscribing to "a/+" ('+' in R matches the
 * level "+"), but R = "a/b" grants neither "a/+" nor "a/#". A deny rule blocks a subscription
 * only when it matches the filter that way: "deny a/secret" does not block subscribing to
 * "a/#"; the ACL_READ check on each delivery then withholds a/secret. Within R, '+' matches
 * any one level (empty included), '#' matches the rest, including none ("a/#" matches "a").
 * The '$' rule: when S starts with '$', a rule whose text does not start with '$' never
 * matches (so "#" does not grant "$SYS/x" but "$SYS/#" does); for deny rules a %c or %u
 * first level is the one exception, see below.
 *
 * %c and %u: a usable value (present, non-empty, without '+', '#' or '/') must equal the
 * level exactly. An unusable value can never grant: an allow rule that uses it matches
 * nothing (so a client id "#" gains nothing from "pattern readwrite devices/%c/#", nor does
 * an anonymous client from a %u pattern). A deny rule that uses it still applies, with the
 * placeholder standing for any one level when the value is absent, empty or holds '+', and
 * for one or more levels (every topic below that point) when it holds '/' or '#', because
 * mosquitto's textual substitution would make those span several levels. mosquitto instead
 * refuses every pattern to a client whose id or username holds '+' or '#', and substitutes
 * '/' and empty values as text. In a deny rule a %c or %u first level is compared against
 * '$' topics too, so "pattern deny %c/#" still covers a client whose id is "$x".
 */

#define ACL_TOPIC_MAX  65535
#define ACL_RULE_READ  1u
#define ACL_RULE_WRITE 2u
#define ACL_SHOW_MAX   120 /* bytes of a topic or word quoted in an error message */

enum acl_level_kind {
    ACL_LEVEL_LITERAL,
    ACL_LEVEL_PLUS,
    ACL_LEVEL_HASH,
    ACL_LEVEL_CLIENT, /* %c in a pattern */
    ACL_LEVEL_USER,   /* %u in a pattern */
};

struct acl_level {
    uint32_t off; /* into the rule's text */
    uint16_t len;
    uint8_t kind; /* enum acl_level_kind */
};

struct acl_rule {
    char *text;
    struct acl_level *levels;
    uint32_t n_levels;
    uint8_t access; /* ACL_RULE_* bits; unused in a deny list */
    bool has_client;
    bool has_user;
};

struct acl_list {
    struct acl_rule *v;
    size_t n, cap;
};

struct acl_rules {
    struct acl_list deny;
    struct acl_list allow;
};

struct acl_user {
    char *name;
    size_t len;
    uint64_t hash;
    struct acl_rules rules;
};

struct acl {
    struct acl_rules anon;
    struct acl_rules patterns;
    struct acl_user *users;
    size_t n_users, users_cap;
    uint32_t *slots; /* user index + 1, 0 = free; linear probing */
    size_t n_slots;  /* 0 or a power of two at least twice n_users, so probes end */
};

/* How a %c or %u value may be used; see the semantics above. */
enum acl_value_class {
    ACL_VALUE_USABLE,
    ACL_VALUE_ONE_LEVEL,   /* absent, empty or holds '+' */
    ACL_VALUE_MANY_LEVELS, /* holds '/' or '#' */
};

struct acl_value {
    const char *s;
    size_t len;
    enum acl_value_class cls;
};

struct acl_subject {
    struct acl_value client;
    struct acl_value user;
};

struct acl_parser {
    struct acl *a;
    const char *path;
    unsigned long line;
    char *err;
    size_t errlen;
    size_t user; /* current user block: index + 1, 0 before the first user line */
};

/* ---- matching ---- */

static void value_init(struct acl_value *v, const char *s)
{
    v->s = s;
    v->len = s ? strlen(s) : 0;
    if (v->len > 0 && strpbrk(s, "/#"))
        v->cls = ACL_VALUE_MANY_LEVELS;
    else if (v->len == 0 || strchr(s, '+'))
        v->cls = ACL_VALUE_ONE_LEVEL;
    else
        v->cls = ACL_VALUE_USABLE;
}

/*
 * Whether rule r matches t (tlen > 0), whose levels are compared as plain bytes. is_deny
 * selects how unusable placeholder values behave; allow rules with one never get here.
 */
static bool rule_match(const struct acl_rule *r, bool is_deny, const struct acl_subject *s,
                       const char *t, size_t tlen)
{
    bool is_dollar = t[0] == '$';
    size_t pos = 0; /* start of t's next level; tlen + 1 once every level is used */

    for (uint32_t i = 0; i < r->n_levels; i++) {
        const struct acl_level *l = &r->levels[i];
        if (l->kind == ACL_LEVEL_HASH)
            return !(i == 0 && is_dollar);
        if (pos > tlen)
            return false;
        const char *lv = t + pos;
        const char *slash = memchr(lv, '/', tlen - pos);
        size_t lvlen = slash ? (size_t)(slash - lv) : tlen - pos;

        if (l->kind == ACL_LEVEL_LITERAL) {
            if (l->len != lvlen || memcmp(r->text + l->off, lv, lvlen) != 0)
                return false;
        } else if (l->kind == ACL_LEVEL_PLUS) {
            if (i == 0 && is_dollar)
                return false;
        } else {
            const struct acl_value *v = l->kind == ACL_LEVEL_CLIENT ? &s->client : &s->user;
            if (v->cls == ACL_VALUE_USABLE) {
                if (v->len != lvlen || memcmp(v->s, lv, lvlen) != 0)
                    return false;
                if (i == 0 && is_dollar && !is_deny)
                    return false;
            } else if (NEVER(!is_deny)) {
                return false;
            } else if (v->cls == ACL_VALUE_MANY_LEVELS) {
                return true;
            }
        }
        pos += lvlen + 1;
    }
    return pos > tlen;
}

static bool list_denies(const struct acl_list *l, const struct acl_subject *s, const char *t,
                        size_t tlen)
{
    for (size_t i = 0; i < l->n; i++) {
        if (rule_match(&l->v[i], true, s, t, tlen))
            return true;
    }
    return false;
}

static bool list_grants(const struct acl_list *l, unsigned need, const struct acl_subject *s,
                        const char *t, size_t tlen)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct acl_rule *r = &l->v[i];
        if (!(r->access & need))
            continue;
        if (r->has_client && s->client.cls != ACL_VALUE_USABLE)
            continue;
        if (r->has_user && s->user.cls != ACL_VALUE_USABLE)
            continue;
        if (rule_match(r, false, s, t, tlen))
            return true;
    }
    return false;
}

/* FNV-1a: the table's keys come from the operator's file, so no flooding defence is needed. */
static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The slot holding name, or the free slot where it belongs. Needs n_slots > 0. */
static size_t user_slot(const struct acl *a, const char *name, size_t len, uint64_t h)
{
    size_t mask = a->n_slots - 1;
    size_t i = (size_t)h & mask;
    for (;;) {
        uint32_t idx = a->slots[i];
        if (idx == 0)
            return i;
        const struct acl_user *u = &a->users[idx - 1];
        if (u->hash == h && u->len == len && memcmp(u->name, name, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

static const struct acl_user *user_find(const struct acl *a, const char *name)
{
    if (a->n_slots == 0)
        return NULL;
    size_t len = strlen(name);
    uint32_t idx = a->slots[user_slot(a, name, len, name_hash(name, len))];
    return idx ? &a->users[idx - 1] : NULL;
}

bool acl_check(const struct acl *a, const char *client_id, const char *username, const char *topic,
               size_t topic_len, enum acl_access access)
{
    unsigned need;
    switch (access) {
    case ACL_READ:
    case ACL_SUBSCRIBE:
        need = ACL_RULE_READ;
        break;
    case ACL_WRITE:
        need = ACL_RULE_WRITE;
        break;
    default:
        return false;
    }
    if (NEVER(!a) || !topic || topic_len == 0)
        return false;

    struct acl_subject s;
    value_init(&s.client, client_id);
    value_init(&s.user, username);
    const struct acl_rules *own = &a->anon;
    if (username) {
        const struct acl_user *u = user_find(a, username);
        own = u ? &u->rules : NULL;
    }

    if (own && list_denies(&own->deny, &s, topic, topic_len))
        return false;
    if (list_denies(&a->patterns.deny, &s, topic, topic_len))
        return false;
    if (own && list_grants(&own->allow, need, &s, topic, topic_len))
        return true;
    return list_grants(&a->patterns.allow, need, &s, topic, topic_len);
}

/* ---- freeing ---- */

static void list_free(struct acl_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].text);
        free(l->v[i].levels);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}

static void rules_free(struct acl_rules *r)
{
    list_free(&r->deny);
    list_free(&r->allow);
}

void acl_free(struct acl **ap)
{
    struct acl *a = *ap;
    if (!a)
        return;
    rules_free(&a->anon);
    rules_free(&a->patterns);
    for (size_t i = 0; i < a->n_users; i++) {
        free(a->users[i].name);
        rules_free(&a->users[i].rules);
    }
    free(a->users);
    free(a->slots);
    free(a);
    *ap = NULL;
}

/* ---- parsing ---- */

__attribute__((format(printf, 2, 3))) static int parse_error(struct acl_parser *p, const char *fmt,
                                                             ...)
{
    if (!p->err || p->errlen == 0)
        return ERR_INVALID;
    int n = snprintf(p->err, p->errlen, "%s:%lu: ", p->path, p->line);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return ERR_INVALID;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static int show_len(size_t len)
{
    return (int)(len < ACL_SHOW_MAX ? len : ACL_SHOW_MAX);
}

static bool has_placeholder(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] == '%' && (s[i + 1] == 'c' || s[i + 1] == 'u'))
            return true;
    }
    return false;
}

/* Types one level of rule r; returns 0 or an error for the filter t. */
static int level_compile(struct acl_parser *p, struct acl_rule *r, struct acl_level *l,
                         bool is_last, bool is_pattern, const char *t, size_t len)
{
    const char *lv = r->text + l->off;
    bool has_wild = memchr(lv, '+', l->len) || memchr(lv, '#', l->len);

    l->kind = ACL_LEVEL_LITERAL;
    if (has_wild) {
        if (l->len != 1)
            return parse_error(p, "invalid topic \"%.*s\": '+' and '#' must fill a whole level",
                               show_len(len), t);
        if (lv[0] == '#' && !is_last)
            return parse_error(p, "invalid topic \"%.*s\": '#' must be the last level",
                               show_len(len), t);
        l->kind = lv[0] == '#' ? ACL_LEVEL_HASH : ACL_LEVEL_PLUS;
    } else if (is_pattern && l->len == 2 && lv[0] == '%' && (lv[1] == 'c' || lv[1] == 'u')) {
        l->kind = lv[1] == 'c' ? ACL_LEVEL_CLIENT : ACL_LEVEL_USER;
        r->has_client |= l->kind == ACL_LEVEL_CLIENT;
        r->has_user |= l->kind == ACL_LEVEL_USER;
    } else if (is_pattern && has_placeholder(lv, l->len)) {
        return parse_error(p, "invalid pattern \"%.*s\": %%c and %%u must fill a whole level",
                           show_len(len), t);
    }
    return 0;
}

/* Splits topic t into r's typed levels. On error r holds nothing. */
static int rule_compile(struct acl_parser *p, struct acl_rule *r, const char *t, size_t len,
                        bool is_pattern)
{
    if (len > ACL_TOPIC_MAX)
        return parse_error(p, "topic longer than %d bytes", ACL_TOPIC_MAX);

    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += t[i] == '/';
    r->text = xstrndup(t, len);
    r->levels = xcalloc(n, sizeof(*r->levels));
    r->n_levels = (uint32_t)n;

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *slash = memchr(t + off, '/', len - off);
        size_t end = slash ? (size_t)(slash - t) : len;
        struct acl_level *l = &r->levels[i];
        l->off = (uint32_t)off;
        l->len = (uint16_t)(end - off);
        int rc = level_compile(p, r, l, i + 1 == n, is_pattern, t, len);
        if (rc < 0) {
            free(r->text);
            r->text = NULL;
            free(r->levels);
            r->levels = NULL;
            return rc;
        }
        off = end + 1;
    }
    return 0;
}

static void list_push(struct acl_list *l, const struct acl_rule *r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = *r;
}

static void slots_grow(struct acl *a)
{
    size_t n = a->n_slots ? a->n_slots * 2 : 16;
    free(a->slots);
    a->slots = xcalloc(n, sizeof(*a->slots));
    a->n_slots = n;
    for (size_t i = 0; i < a->n_users; i++) {
        const struct acl_user *u = &a->users[i];
        a->slots[user_slot(a, u->name, u->len, u->hash)] = (uint32_t)(i + 1);
    }
}

/* Makes name's block current, creating it on its first user line. */
static int user_select(struct acl_parser *p, const char *name, size_t len)
{
    struct acl *a = p->a;
    uint64_t h = name_hash(name, len);
    if (a->n_slots) {
        uint32_t idx = a->slots[user_slot(a, name, len, h)];
        if (idx) {
            p->user = idx;
            return 0;
        }
    }
    if (a->n_users >= UINT32_MAX / 4)
        return parse_error(p, "too many users");
    if ((a->n_users + 1) * 2 > a->n_slots)
        slots_grow(a);
    if (a->n_users == a->users_cap) {
        a->users_cap = a->users_cap ? a->users_cap * 2 : 16;
        a->users = xrealloc(a->users, a->users_cap * sizeof(*a->users));
    }
    struct acl_user *u = &a->users[a->n_users];
    memset(u, 0, sizeof(*u));
    u->name = xstrndup(name, len);
    u->len = len;
    u->hash = h;
    a->slots[user_slot(a, name, len, h)] = (uint32_t)(a->n_users + 1);
    p->user = ++a->n_users;
    return 0;
}

/* "topic|pattern [ACCESS] TOPIC": rest is everything after the keyword, trimmed. */
static int parse_rule(struct acl_parser *p, const char *kw, bool is_pattern, const char *rest,
                      size_t len)
{
    if (len == 0)
        return parse_error(p, "%s needs a topic", kw);
    size_t wlen = 0;
    while (wlen < len && !is_space(rest[wlen]))
        wlen++;
    const char *t = rest;
    size_t tlen = len;
    bool is_deny = false;
    uint8_t access = ACL_RULE_READ | ACL_RULE_WRITE;

    if (wlen < len) {
        if (wlen == 4 && memcmp(rest, "read", 4) == 0)
            access = ACL_RULE_READ;
        else if (wlen == 5 && memcmp(rest, "write", 5) == 0)
            access = ACL_RULE_WRITE;
        else if (wlen == 9 && memcmp(rest, "readwrite", 9) == 0)
            access = ACL_RULE_READ | ACL_RULE_WRITE;
        else if (wlen == 4 && memcmp(rest, "deny", 4) == 0)
            is_deny = true;
        else
            return parse_error(p, "unknown access \"%.*s\" (read, write, readwrite or deny)",
                               show_len(wlen), rest);
        t = rest + wlen;
        while (is_space(*t))
            t++;
        tlen = len - (size_t)(t - rest);
    }

    struct acl_rule r = {.access = is_deny ? 0 : access};
    int rc = rule_compile(p, &r, t, tlen, is_pattern);
    if (rc < 0)
        return rc;
    struct acl_rules *set = &p->a->anon;
    if (is_pattern)
        set = &p->a->patterns;
    else if (p->user)
        set = &p->a->users[p->user - 1].rules;
    list_push(is_deny ? &set->deny : &set->allow, &r);
    return 0;
}

static int parse_line(struct acl_parser *p, const char *s, size_t len)
{
    if (memchr(s, '\0', len))
        return parse_error(p, "NUL byte in line");
    while (len > 0 && is_space(s[len - 1]))
        len--;
    while (len > 0 && is_space(*s)) {
        s++;
        len--;
    }
    if (len == 0 || s[0] == '#')
        return 0;

    size_t kwlen = 0;
    while (kwlen < len && !is_space(s[kwlen]))
        kwlen++;
    const char *rest = s + kwlen;
    size_t rlen = len - kwlen;
    while (rlen > 0 && is_space(*rest)) {
        rest++;
        rlen--;
    }

    if (kwlen == 5 && memcmp(s, "topic", 5) == 0)
        return parse_rule(p, "topic", false, rest, rlen);
    if (kwlen == 7 && memcmp(s, "pattern", 7) == 0)
        return parse_rule(p, "pattern", true, rest, rlen);
    if (kwlen == 4 && memcmp(s, "user", 4) == 0) {
        if (rlen == 0)
            return parse_error(p, "user needs a name");
        return user_select(p, rest, rlen);
    }
    return parse_error(p, "unknown keyword \"%.*s\" (topic, pattern or user)", show_len(kwlen), s);
}

static void set_file_error(char *err, size_t errlen, const char *path, const char *what, int errnum)
{
    char msg[128];
    if (strerror_r(errnum, msg, sizeof(msg)) != 0)
        (void)snprintf(msg, sizeof(msg), "error %d", errnum);
    if (err && errlen)
        (void)snprintf(err, errlen, "%s: %s: %s", path, what, msg);
}

struct acl *acl_load(const char *path, char *err, size_t errlen)
{
    struct acl_parser p = {.path = path, .err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = '\0';

    FILE *f = fopen(path, "r");
    if (!f) {
        set_file_error(err, errlen, path, "cannot open", errno);
        return NULL;
    }
    p.a = xcalloc(1, sizeof(*p.a));

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    errno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        p.line++;
        rc = parse_line(&p, line, (size_t)n);
        if (rc < 0)
            goto out_close;
        errno = 0;
    }
    if (ferror(f)) {
        set_file_error(err, errlen, path, "read error", errno ? errno : EIO);
        rc = ERR_IO;
    }

out_close:
    free(line);
    (void)fclose(f);
    if (rc < 0)
        acl_free(&p.a);
    return p.a;
}
