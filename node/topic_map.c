/*
 * Linear probing with backward-shift deletion: no tombstones, so lookups stay short after
 * churn. FNV-1a is enough here: keys are topic levels and the tables are small.
 */
#include "node/topic_map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "node/buf.h"

uint32_t topic_map_hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)key[i]) * 16777619u;
    return h;
}

static struct topic_map_slot *find(const struct topic_map *m, const char *key, size_t len,
                                   uint32_t h)
{
    if (m->cap == 0)
        return NULL;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        struct topic_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
            return s;
    }
}

void *topic_map_get(const struct topic_map *m, const char *key, size_t len)
{
    struct topic_map_slot *s = find(m, key, len, topic_map_hash(key, len));
    return s ? s->val : NULL;
}

static void insert(struct topic_map *m, struct topic_map_slot v)
{
    uint32_t mask = m->cap - 1;
    uint32_t i = v.hash & mask;
    while (m->slots[i].key)
        i = (i + 1) & mask;
    m->slots[i] = v;
}

void topic_map_put(struct topic_map *m, const char *key, size_t len, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        uint32_t ncap = m->cap ? m->cap * 2 : 4;
        struct topic_map old = *m;
        m->slots = xcalloc(ncap, sizeof(*m->slots));
        m->cap = ncap;
        for (uint32_t i = 0; i < old.cap; i++)
            if (old.slots[i].key)
                insert(m, old.slots[i]);
        free(old.slots);
    }
    struct topic_map_slot v = {key, (uint32_t)len, topic_map_hash(key, len), val};
    insert(m, v);
    m->n++;
}

void topic_map_del(struct topic_map *m, const char *key, size_t len)
{
    struct topic_map_slot *s = find(m, key, len, topic_map_hash(key, len));
    if (!s)
        return;
    uint32_t mask = m->cap - 1;
    uint32_t i = (uint32_t)(s - m->slots);
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        uint32_t home = m->slots[j].hash & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    memset(&m->slots[i], 0, sizeof(m->slots[i]));
    m->n--;
    if (m->n == 0) {
        topic_map_free(m);
    }
}

void topic_map_free(struct topic_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
    m->n = 0;
}
