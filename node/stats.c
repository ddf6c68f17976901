/*
 * $SYS/broker/ topics, published as retained messages through the normal router so that
 * subscribers to $SYS/# get the latest values at once.
 */
#include "node/stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "node/broker.h"
#include "node/clock.h"
#include "node/msg.h"
#include "node/retain.h"
#include "node/router.h"
#include "node/topic_tree.h"

static void pub(struct broker *b, const char *topic, const char *value)
{
    struct msg *m = msg_create(topic, strlen(topic), NULL, 0, value, strlen(value));
    m->retain = true;
    m->qos = 0;
    router_publish(b, m, NULL);
    msg_unref(&m);
}

static void pub_u64(struct broker *b, const char *topic, uint64_t v)
{
    char s[32];
    (void)snprintf(s, sizeof(s), "%" PRIu64, v);
    pub(b, topic, s);
}

void stats_publish_sys(struct broker *b)
{
    const struct stats *st = &b->stats;
    char s[64];

    pub(b, "$SYS/broker/version", "shoal " SHOAL_VERSION);
    (void)snprintf(s, sizeof(s), "%" PRIu64 " seconds", (clock_now_ms() - b->started_ms) / 1000);
    pub(b, "$SYS/broker/uptime", s);
    pub_u64(b, "$SYS/broker/clients/connected", st->clients_connected);
    pub_u64(b, "$SYS/broker/clients/active", st->clients_connected);
    pub_u64(b, "$SYS/broker/clients/total", b->sess_count);
    pub_u64(b, "$SYS/broker/clients/disconnected", b->sess_count - st->clients_connected);
    pub_u64(b, "$SYS/broker/clients/maximum", st->clients_maximum);
    pub_u64(b, "$SYS/broker/messages/received", st->msgs_received);
    pub_u64(b, "$SYS/broker/messages/sent", st->msgs_sent);
    pub_u64(b, "$SYS/broker/publish/messages/received", st->pub_received);
    pub_u64(b, "$SYS/broker/publish/messages/sent", st->pub_sent);
    pub_u64(b, "$SYS/broker/publish/messages/dropped", st->pub_dropped);
    pub_u64(b, "$SYS/broker/publish/messages/unrouted", st->pub_unrouted);
    pub_u64(b, "$SYS/broker/bytes/received", st->bytes_received);
    pub_u64(b, "$SYS/broker/bytes/sent", st->bytes_sent);
    pub_u64(b, "$SYS/broker/subscriptions/count", topic_tree_count(b->subs));
    pub_u64(b, "$SYS/broker/retained messages/count", retain_count(b->retained));
    pub_u64(b, "$SYS/broker/store/messages/count", msg_live_count());
}
