#ifndef SHOAL_NODE_ROUTER_H
#define SHOAL_NODE_ROUTER_H

/*
 * The publish pipeline: retained update, match against the subscription trie, merge of
 * overlapping subscriptions per session, delivery. Later, remote routes join here.
 */

#include <stdint.h>

struct broker;
struct msg;
struct session;

/* Routes m (borrowed) published by session `from` (NULL for the broker itself). If
 * m->retain, updates the retained store first. */
void router_publish(struct broker *b, struct msg *m, const struct session *from);

#endif
