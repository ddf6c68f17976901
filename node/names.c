/*
 * The interned node ids: an open-addressing set of strings, grown at half full.
 */
#include "node/names.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/buf.h"

static char **slots;
static size_t cap, used;

static uint64_t hash(const char *p, size_t len)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211u;
    return h;
}

static void grow(void)
{
    size_t ncap = cap ? cap * 2 : 64;
    char **n = xcalloc(ncap, sizeof(*n));
    for (size_t i = 0; i < cap; i++) {
        if (!slots[i])
            continue;
        size_t j = hash(slots[i], strlen(slots[i])) & (ncap - 1);
        while (n[j])
            j = (j + 1) & (ncap - 1);
        n[j] = slots[i];
    }
    free(slots);
    slots = n;
    cap = ncap;
}

const char *names_intern(const char *id, size_t len)
{
    if (len == 0)
        return NULL;
    if ((used + 1) * 2 > cap)
        grow();
    size_t i = hash(id, len) & (cap - 1);
    for (; slots[i]; i = (i + 1) & (cap - 1))
        if (strncmp(slots[i], id, len) == 0 && slots[i][len] == '\0')
            return slots[i];
    slots[i] = xstrndup(id, len);
    used++;
    return slots[i];
}
