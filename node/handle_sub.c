/*
 * SUBSCRIBE and UNSUBSCRIBE: filter checks, the session's subscription records, the trie, and
 * retained-message replay after the SUBACK (retain handling, never for shared subscriptions).
 */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/acl.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/log.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/retain.h"
#include "node/session.h"
#include "node/topic.h"
#include "node/topic_tree.h"

#define SUB_STACK 32

struct replay {
    struct session *s;
    const struct session_sub *sub;
};

static void on_retained(void *ctx, struct msg *m)
{
    struct replay *r = ctx;
    struct session_dlv d = {0};
    const struct acl *acl = r->s->b->acl;
    if (acl && !acl_check(acl, r->s->client_id, r->s->username, m->topic, m->topic_len, ACL_READ))
        return;
    d.m = m;
    d.qos = m->qos < r->sub->qos ? m->qos : r->sub->qos;
    d.retain = true;
    if (r->sub->sub_id) {
        d.sub_ids[0] = r->sub->sub_id;
        d.n_sub_ids = 1;
    }
    session_deliver(r->s, &d);
}

/* Subscribes one entry. Returns the granted QoS or a failure reason code. */
static uint8_t subscribe_one(struct conn *c, const struct codec_sub_entry *e, uint32_t sub_id,
                             struct session_sub **out, bool *is_new)
{
    struct broker *b = c->b;
    const char *f = (const char *)e->filter.p;
    size_t len = e->filter.len;
    const char *g, *inner;
    size_t glen, ilen;

    *out = NULL;
    if (!topic_filter_valid(f, len))
        return c->version == 5 ? 0x8F : 0x80;
    bool is_shared = topic_share_split(f, len, &g, &glen, &inner, &ilen);
    /* A shared subscription is judged by the filter inside it. */
    if (b->acl && !acl_check(b->acl, c->s->client_id, c->s->username, is_shared ? inner : f,
                             is_shared ? ilen : len, ACL_SUBSCRIBE)) {
        b->stats.acl_denied++;
        return c->version == 5 ? 0x87 : 0x80;
    }
    struct session_sub *sub = session_sub_add(c->s, f, len, is_new);
    sub->qos = e->qos;
    sub->no_local = e->no_local;
    sub->retain_as_published = e->retain_as_published;
    sub->retain_handling = e->retain_handling;
    sub->is_shared = is_shared;
    sub->sub_id = sub_id;
    if (b->conf->connection_messages)
        log_debug("sub", "subscribe client_id=%s filter_len=%zu qos=%u", conn_log_id(c), len,
                  e->qos);
    *out = sub;
    return e->qos;
}

int handle_subscribe(struct conn *c, struct codec_packet *p)
{
    struct codec_subscribe *sp = &p->u.subscribe;
    uint8_t rstack[SUB_STACK];
    struct session_sub *sstack[SUB_STACK];
    bool nstack[SUB_STACK];
    uint8_t *reasons = rstack;
    struct session_sub **subs = sstack;
    bool *fresh = nstack;
    uint32_t sub_id = 0;
    int rc = 0;

    if (c->version == 5 && CODEC_HAS(&p->props, CODEC_PROP_SUBSCRIPTION_ID))
        sub_id = p->props.sub_id;
    if (sp->count > SUB_STACK) {
        reasons = xmalloc(sp->count);
        subs = xmalloc(sp->count * sizeof(*subs));
        fresh = xmalloc(sp->count * sizeof(*fresh));
    }
    size_t pos = 0;
    uint32_t n = 0;
    struct codec_sub_entry e;
    while (n < sp->count && codec_sub_next(sp, c->version, &pos, &e)) {
        const char *g, *inner;
        size_t glen, ilen;
        if (e.no_local && topic_filter_valid((const char *)e.filter.p, e.filter.len) &&
            topic_share_split((const char *)e.filter.p, e.filter.len, &g, &glen, &inner, &ilen)) {
            rc = ERR_PROTOCOL; /* no-local on a shared subscription */
            goto out;
        }
        fresh[n] = false;
        reasons[n] = subscribe_one(c, &e, sub_id, &subs[n], &fresh[n]);
        n++;
    }
    struct codec_packet ack = {0};
    ack.type = CODEC_SUBACK;
    ack.u.suback.packet_id = sp->packet_id;
    ack.u.suback.count = n;
    ack.u.suback.reasons = reasons;
    (void)conn_send(c, &ack);
    persist_save_acked(c);

    for (uint32_t i = 0; i < n; i++) {
        struct session_sub *sub = subs[i];
        if (!sub || sub->is_shared || sub->retain_handling == 2 ||
            (sub->retain_handling == 1 && !fresh[i]))
            continue;
        struct replay r = {c->s, sub};
        retain_match(c->b->retained, sub->filter, sub->filter_len, clock_now_ms(), on_retained, &r);
    }
out:
    if (reasons != rstack) {
        free(reasons);
        free(subs);
        free(fresh);
    }
    return rc;
}

int handle_unsubscribe(struct conn *c, struct codec_packet *p)
{
    struct codec_unsubscribe *up = &p->u.unsubscribe;
    uint8_t rstack[SUB_STACK];
    uint8_t *reasons = up->count > SUB_STACK ? xmalloc(up->count) : rstack;
    size_t pos = 0;
    uint32_t n = 0;
    struct codec_str f;

    while (n < up->count && codec_unsub_next(up, &pos, &f)) {
        int rc = ERR_NOT_FOUND;
        if (topic_filter_valid((const char *)f.p, f.len)) {
            rc = session_sub_remove(c->s, (const char *)f.p, f.len);
        }
        reasons[n++] = rc == 0 ? 0x00 : 0x11;
    }
    struct codec_packet ack = {0};
    ack.type = CODEC_UNSUBACK;
    ack.u.suback.packet_id = up->packet_id;
    ack.u.suback.count = c->version == 5 ? n : 0;
    ack.u.suback.reasons = reasons;
    (void)conn_send(c, &ack);
    persist_save_acked(c);
    if (reasons != rstack)
        free(reasons);
    return 0;
}
