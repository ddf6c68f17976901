/*
 * Topic names and filters. Everything here is a single forward pass over a byte range with no
 * allocation, so the codec, the ACL and the tries can call it on the hot path. Levels are the
 * byte runs between '/' separators; empty levels are legal ("a//b", "/a", "a/"). The '$' rule
 * (first-level wildcards never match topics such as "$SYS/...") lives in topic_match and is
 * mirrored by the walks in topic_tree.c and retain.c.
 */
#include "node/topic.h"

#include <string.h>

#define TOPIC_MAX_LEN   65535
#define TOPIC_SHARE     "$share/"
#define TOPIC_SHARE_LEN (sizeof(TOPIC_SHARE) - 1)

bool topic_name_valid(const char *t, size_t len)
{
    if (len == 0 || len > TOPIC_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '+' || t[i] == '#' || t[i] == '\0')
            return false;
    }
    return true;
}

/* A non-shared filter: wildcards must fill their level and '#' must be the last level. */
static bool filter_plain_valid(const char *f, size_t len)
{
    if (len == 0 || len > TOPIC_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = f[i];
        if (c == '\0')
            return false;
        if (c != '+' && c != '#')
            continue;
        bool starts_level = i == 0 || f[i - 1] == '/';
        bool ends_level = i + 1 == len || f[i + 1] == '/';
        if (!starts_level || !ends_level)
            return false;
        if (c == '#' && i + 1 != len)
            return false;
    }
    return true;
}

static bool is_shared(const char *f, size_t len)
{
    return len >= TOPIC_SHARE_LEN && memcmp(f, TOPIC_SHARE, TOPIC_SHARE_LEN) == 0;
}

/* Splits "$share/GROUP/FILTER" after the prefix; false when there is no second '/'. */
static bool share_parts(const char *f, size_t len, const char **group, size_t *group_len,
                        const char **filter, size_t *filter_len)
{
    const char *g = f + TOPIC_SHARE_LEN;
    size_t rest = len - TOPIC_SHARE_LEN;
    const char *slash = memchr(g, '/', rest);
    if (!slash)
        return false;
    *group = g;
    *group_len = (size_t)(slash - g);
    *filter = slash + 1;
    *filter_len = rest - *group_len - 1;
    return true;
}

bool topic_filter_valid(const char *f, size_t len)
{
    if (!is_shared(f, len))
        return filter_plain_valid(f, len);
    if (len > TOPIC_MAX_LEN)
        return false;
    const char *g, *flt;
    size_t glen, flen;
    if (!share_parts(f, len, &g, &glen, &flt, &flen) || glen == 0)
        return false;
    for (size_t i = 0; i < glen; i++) {
        if (g[i] == '+' || g[i] == '#' || g[i] == '\0')
            return false;
    }
    return filter_plain_valid(flt, flen);
}

bool topic_share_split(const char *f, size_t len, const char **group, size_t *group_len,
                       const char **filter, size_t *filter_len)
{
    const char *g, *flt;
    size_t glen, flen;
    if (!is_shared(f, len) || !share_parts(f, len, &g, &glen, &flt, &flen))
        return false;
    *group = g;
    *group_len = glen;
    *filter = flt;
    *filter_len = flen;
    return true;
}

/* Length of the level starting at s (bytes up to the next '/' or the end). */
static size_t level_len(const char *s, size_t left)
{
    const char *slash = memchr(s, '/', left);
    return slash ? (size_t)(slash - s) : left;
}

bool topic_match(const char *filter, size_t flen, const char *topic, size_t tlen)
{
    if (flen == 0)
        return false;
    if (tlen > 0 && topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    size_t f = 0, t = 0;
    for (;;) {
        if (flen - f == 1 && filter[f] == '#')
            return true;
        size_t fl = level_len(filter + f, flen - f);
        size_t tl = level_len(topic + t, tlen - t);
        bool is_plus = fl == 1 && filter[f] == '+';
        if (!is_plus && (fl != tl || memcmp(filter + f, topic + t, fl) != 0))
            return false;
        bool f_end = f + fl == flen, t_end = t + tl == tlen;
        if (f_end || t_end) {
            if (f_end && t_end)
                return true;
            /* The topic ran out: only a trailing "/#" still matches ("a/#" matches "a"). */
            return t_end && flen - (f + fl) == 2 && filter[flen - 1] == '#';
        }
        f += fl + 1;
        t += tl + 1;
    }
}

bool topic_has_wildcard(const char *f, size_t len)
{
    return memchr(f, '+', len) != NULL || memchr(f, '#', len) != NULL;
}
