/*
 * Session lifecycle and subscriptions. A session lives in the broker's table from CONNECT until
 * it ends: at disconnect when its expiry is 0, or when its expiry timer fires. Subscription
 * records are owned here and registered in the trie with the session as owner, so routing hands
 * the record straight back without a lookup.
 */
#include "node/session.h"

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/conn.h"
#include "node/drain.h"
#include "node/err.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/topic.h"
#include "node/topic_tree.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Defined in session_queue.c and will.c. */
void session__queue_free(struct session *s);
void session__resend_inflight(struct session *s);
void session__will_detach(struct session *s, int err);

struct session *session_create(struct broker *b, const char *client_id, size_t len)
{
    struct session *s = xcalloc(1, offsetof(struct session, client_id) + len + 1);
    s->b = b;
    memcpy(s->client_id, client_id, len);
    s->client_id_len = len;
    s->id = ++b->next_session_id;
    s->next_pid = 1;
    broker_session_insert(b, s);
    return s;
}

/* The trie counts subscribers per route (a plain filter, or one shared group on a filter):
 * the cluster hears of a route when its count leaves or reaches 0. */
static void route_changed(struct broker *b, const char *filter, size_t len, bool is_added)
{
    mesh_route_change(b, filter, len, is_added);
}

void session_destroy(struct session **sp)
{
    struct session *s = *sp;
    *sp = NULL;
    if (!s)
        return;
    struct broker *b = s->b;
    if (NEVER(s->conn != NULL))
        s->conn = NULL;
    session_uncongest(s);
    if (s->q)
        keepalive_cancel(&s->q->expiry);
    session_will_set(s, NULL, 0, false, 0, 0);
    for (uint32_t i = 0; i < s->n_subs; i++) {
        struct session_sub *sub = s->subs[i];
        if (b->subs && topic_tree_remove(b->subs, sub->filter, sub->filter_len, s) == 1)
            route_changed(b, sub->filter, sub->filter_len, false);
        free(sub->filter);
        free(sub);
    }
    free(s->subs);
    session__queue_free(s);
    mesh_moved_free(s);
    drain_session_gone(s);
    broker_session_remove(b, s);
    free(s->username);
    s->username = NULL;
    free(s);
}

static void on_expiry(struct keepalive_entry *e, uint64_t now_ms)
{
    struct session *s = container_of(e, struct session_q, expiry)->s;
    (void)now_ms;
    if (s->conn)
        return;
    log_debug("session", "session expired client_id_len=%zu", s->client_id_len);
    session_will_publish(s);
    persist_forget(s);
    session_destroy(&s);
}

void session_offline_expiry(struct session *s)
{
    if (s->expiry_s != 0 && s->expiry_s != UINT32_MAX)
        keepalive_arm(&s->b->wheel, &session_q_get(s)->expiry,
                      clock_now_ms() + (uint64_t)s->expiry_s * 1000u, on_expiry);
}

void session_attach(struct session *s, struct conn *c)
{
    s->conn = c;
    c->s = s;
    if (s->q)
        keepalive_cancel(&s->q->expiry);
    if (s->will)
        keepalive_cancel(&s->will->timer); /* a delayed will is cancelled by reconnecting */
    session__resend_inflight(s);
    session_pump(s);
}

void session_detach(struct session *s, int err)
{
    struct conn *c = s->conn;
    if (c)
        c->s = NULL;
    s->conn = NULL;
    session_uncongest(s);
    session__will_detach(s, err);
    if (s->expiry_s == 0) {
        session_will_publish(s);
        session_destroy(&s);
        return;
    }
    persist_detach(s);
    session_offline_expiry(s);
}

static int find_sub(const struct session *s, const char *f, size_t len)
{
    for (uint32_t i = 0; i < s->n_subs; i++)
        if (s->subs[i]->filter_len == len && memcmp(s->subs[i]->filter, f, len) == 0)
            return (int)i;
    return -1;
}

struct session_sub *session_sub_add(struct session *s, const char *filter, size_t len, bool *is_new)
{
    int i = find_sub(s, filter, len);
    if (i >= 0) {
        *is_new = false;
        return s->subs[i];
    }
    if (s->n_subs == s->cap_subs) {
        s->cap_subs = s->cap_subs ? s->cap_subs * 2 : 4;
        s->subs = xrealloc(s->subs, s->cap_subs * sizeof(*s->subs));
    }
    struct session_sub *sub = xcalloc(1, sizeof(*sub));
    sub->s = s;
    sub->filter = xstrndup(filter, len);
    sub->filter_len = (uint16_t)len;
    s->subs[s->n_subs++] = sub;
    if (topic_tree_add(s->b->subs, sub->filter, len, s, sub) == TOPIC_TREE_FIRST)
        route_changed(s->b, sub->filter, len, true);
    *is_new = true;
    return sub;
}

int session_sub_remove(struct session *s, const char *filter, size_t len)
{
    int i = find_sub(s, filter, len);
    if (i < 0)
        return ERR_NOT_FOUND;
    struct session_sub *sub = s->subs[i];
    if (topic_tree_remove(s->b->subs, sub->filter, sub->filter_len, s) == 1)
        route_changed(s->b, sub->filter, sub->filter_len, false);
    s->subs[i] = s->subs[--s->n_subs];
    free(sub->filter);
    free(sub);
    return 0;
}

struct session_q *session_q_get(struct session *s)
{
    if (!s->q) {
        s->q = xcalloc(1, sizeof(*s->q));
        s->q->s = s;
    }
    return s->q;
}

bool session_rx_qos2_seen(struct session *s, uint16_t pid)
{
    struct session_q *q = session_q_get(s);
    for (uint32_t i = 0; i < q->n_rx_qos2; i++)
        if (q->rx_qos2[i] == pid)
            return true;
    if (q->n_rx_qos2 == q->cap_rx_qos2) {
        q->cap_rx_qos2 = q->cap_rx_qos2 ? q->cap_rx_qos2 * 2 : 4;
        q->rx_qos2 = xrealloc(q->rx_qos2, q->cap_rx_qos2 * sizeof(*q->rx_qos2));
    }
    q->rx_qos2[q->n_rx_qos2++] = pid;
    return false;
}

int session_rx_qos2_release(struct session *s, uint16_t pid)
{
    struct session_q *q = s->q;
    for (uint32_t i = 0; q && i < q->n_rx_qos2; i++) {
        if (q->rx_qos2[i] == pid) {
            q->rx_qos2[i] = q->rx_qos2[--q->n_rx_qos2];
            return 0;
        }
    }
    return ERR_PACKET_ID_NOT_FOUND;
}
