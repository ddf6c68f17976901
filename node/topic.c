/*
 * Topic names and filters. Everything works on (pointer, length) views because topics arrive
 * as views into the read buffer; nothing here allocates.
 */
#include "node/topic.h"

#include <string.h>

#define SHARE_PREFIX     "$share/"
#define SHARE_PREFIX_LEN 7

bool topic_name_valid(const char *t, size_t len)
{
    if (len == 0 || len > 65535)
        return false;
    for (size_t i = 0; i < len; i++)
        if (t[i] == '+' || t[i] == '#' || t[i] == '\0')
            return false;
    return true;
}

static bool plain_filter_valid(const char *f, size_t len)
{
    if (len == 0 || len > 65535)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = f[i];
        if (ch == '\0')
            return false;
        if (ch != '+' && ch != '#')
            continue;
        bool starts_level = i == 0 || f[i - 1] == '/';
        bool ends_level = i + 1 == len || f[i + 1] == '/';
        if (!starts_level || !ends_level)
            return false;
        if (ch == '#' && i + 1 != len)
            return false;
    }
    return true;
}

bool topic_share_split(const char *f, size_t len, const char **group, size_t *group_len,
                       const char **filter, size_t *filter_len)
{
    if (len < SHARE_PREFIX_LEN || memcmp(f, SHARE_PREFIX, SHARE_PREFIX_LEN) != 0)
        return false;
    const char *g = f + SHARE_PREFIX_LEN;
    const char *end = f + len;
    const char *slash = memchr(g, '/', (size_t)(end - g));
    if (!slash)
        return false;
    *group = g;
    *group_len = (size_t)(slash - g);
    *filter = slash + 1;
    *filter_len = (size_t)(end - slash - 1);
    return true;
}

bool topic_filter_valid(const char *f, size_t len)
{
    const char *g, *inner;
    size_t glen, ilen;
    if (len >= SHARE_PREFIX_LEN && memcmp(f, SHARE_PREFIX, SHARE_PREFIX_LEN) == 0) {
        if (!topic_share_split(f, len, &g, &glen, &inner, &ilen) || glen == 0)
            return false;
        for (size_t i = 0; i < glen; i++)
            if (g[i] == '+' || g[i] == '#')
                return false;
        return plain_filter_valid(inner, ilen);
    }
    return plain_filter_valid(f, len);
}

bool topic_has_wildcard(const char *f, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (f[i] == '+' || f[i] == '#')
            return true;
    return false;
}

bool topic_match(const char *filter, size_t flen, const char *topic, size_t tlen)
{
    size_t fi = 0, ti = 0;

    if (tlen > 0 && topic[0] == '$' && flen > 0 && (filter[0] == '+' || filter[0] == '#'))
        return false;
    for (;;) {
        /* Current filter level [fi, fe) and topic level [ti, te). */
        size_t fe = fi;
        while (fe < flen && filter[fe] != '/')
            fe++;
        if (fe - fi == 1 && filter[fi] == '#')
            return true;
        if (ti > tlen)
            return false;
        size_t te = ti;
        while (te < tlen && topic[te] != '/')
            te++;
        bool is_plus = fe - fi == 1 && filter[fi] == '+';
        if (!is_plus && (fe - fi != te - ti || memcmp(filter + fi, topic + ti, fe - fi) != 0))
            return false;
        bool f_end = fe >= flen;
        bool t_end = te >= tlen;
        if (f_end && t_end)
            return true;
        if (t_end) {
            /* "a/#" matches "a": the only way a longer filter matches is a trailing "/#". */
            return fe + 2 == flen && filter[fe + 1] == '#';
        }
        if (f_end)
            return false;
        fi = fe + 1;
        ti = te + 1;
    }
}
