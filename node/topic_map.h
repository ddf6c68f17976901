#ifndef SHOAL_NODE_TOPIC_MAP_H
#define SHOAL_NODE_TOPIC_MAP_H

/*
 * Child tables of the topic tries: an open-addressing hash map from one topic level (bytes,
 * not NUL-terminated) to a child node. Keys are owned by the caller (the child node stores its
 * own level); the map stores the key pointer. Folder-internal to node/.
 */

#include <stddef.h>
#include <stdint.h>

struct topic_map_slot {
    const char *key;
    uint32_t len;
    uint32_t hash;
    void *val;
};

struct topic_map {
    struct topic_map_slot *slots;
    uint32_t cap; /* power of two, or 0 */
    uint32_t n;
};

uint32_t topic_map_hash(const char *key, size_t len);
void *topic_map_get(const struct topic_map *m, const char *key, size_t len);
/* Inserts key (must be absent); key must stay valid while present. */
void topic_map_put(struct topic_map *m, const char *key, size_t len, void *val);
/* Removes key if present. */
void topic_map_del(struct topic_map *m, const char *key, size_t len);
void topic_map_free(struct topic_map *m);

#endif
