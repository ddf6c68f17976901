#ifndef SHOAL_NODE_RETAIN_H
#define SHOAL_NODE_RETAIN_H

/*
 * Retained messages: a trie keyed by topic name holding one struct msg reference per topic.
 * Lookup by filter walks the trie with wildcards (explicit stack, no recursion) and skips
 * '$' topics for first-level wildcards. Expired messages are dropped lazily on lookup.
 */

#include <stddef.h>
#include <stdint.h>

#include "node/msg.h"

struct retain;

typedef void (*retain_match_cb)(void *ctx, struct msg *m);

struct retain *retain_create(void);
/* Drops every held reference and frees. Sets *r to NULL. */
void retain_destroy(struct retain **r);

/* Stores m (takes a new reference) for its topic, replacing any previous message; an empty
 * payload clears the topic instead. */
void retain_set(struct retain *r, struct msg *m);

/* Calls cb for every live retained message whose topic matches filter (a valid non-shared
 * filter). The msg is borrowed: take a ref to keep it. now_ms is used to skip and drop
 * expired messages. cb must not call retain_set on r. */
void retain_match(struct retain *r, const char *filter, size_t len, uint64_t now_ms,
                  retain_match_cb cb, void *ctx);

/* Number of retained messages and their payload bytes. */
size_t retain_count(const struct retain *r);
uint64_t retain_bytes(const struct retain *r);
/* Number of trie nodes, root included: 1 when empty (memory statistics, tests). */
size_t retain_nodes(const struct retain *r);

#endif
