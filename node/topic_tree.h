#ifndef SHOAL_NODE_TOPIC_TREE_H
#define SHOAL_NODE_TOPIC_TREE_H

/*
 * Subscription trie. Each node is one topic level; a node holds the subscribers whose filter
 * ends there, plain and in shared groups. Subscribers are opaque (owner, rec) pairs: owner
 * identifies the session, rec is the caller's per-subscription record handed back on match.
 * Matching never recurses on peer data: it walks with an explicit stack.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct topic_tree;

/* Called once per matching plain subscription, and once per matching shared group with the
 * member chosen for this message. */
typedef void (*topic_tree_match_cb)(void *ctx, void *owner, void *rec);
/* Tells whether a shared-group member can take a message now (e.g. its client is online).
 * The chooser round-robins over eligible members and falls back to any member. */
typedef bool (*topic_tree_eligible_cb)(void *owner);

struct topic_tree *topic_tree_create(void);
/* Frees the trie (not the owners or records). Sets *t to NULL. */
void topic_tree_destroy(struct topic_tree **t);

enum topic_tree_add_result {
    TOPIC_TREE_REPLACED = 0, /* owner was already subscribed with this filter: rec replaced */
    TOPIC_TREE_ADDED = 1,    /* new subscriber on a route that had others */
    TOPIC_TREE_FIRST = 2,    /* the route went from 0 to 1 subscriber (it appears) */
};

/*
 * Subscribes owner to filter (already validated; may be "$share/G/F"). Returns an
 * enum topic_tree_add_result. A route is a plain filter, or one shared group on a filter:
 * "a/+" and "$share/g/a/+" are two routes, counted apart.
 */
int topic_tree_add(struct topic_tree *t, const char *filter, size_t len, void *owner, void *rec);

/* Removes owner's subscription on filter. Returns 1 if the route's (the plain filter's, or
 * the shared group's) subscriber count reached 0, 0 if others remain, ERR_NOT_FOUND if owner
 * had no such subscription. */
int topic_tree_remove(struct topic_tree *t, const char *filter, size_t len, void *owner);

/* Calls cb for each match of topic (a valid topic name). eligible may be NULL. Does not
 * allocate once warm. cb and eligible must not add or remove subscriptions on t; a nested
 * topic_tree_match from inside cb is fine. */
void topic_tree_match(struct topic_tree *t, const char *topic, size_t len,
                      topic_tree_eligible_cb eligible, topic_tree_match_cb cb, void *ctx);

/* Number of (owner, filter) subscriptions held. */
size_t topic_tree_count(const struct topic_tree *t);

/* Number of trie nodes, root included: 1 for an empty tree (memory statistics, tests). */
size_t topic_tree_nodes(const struct topic_tree *t);

#endif
