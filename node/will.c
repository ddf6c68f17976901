/*
 * Will messages: kept on the session (in a block allocated only for clients that set one),
 * published when the network connection ends without a normal DISCONNECT, after the MQTT 5
 * will delay (cancelled by a reconnect) or at once when the session itself ends first.
 */
#include <stddef.h>
#include <stdlib.h>

#include "node/acl.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/router.h"
#include "node/session.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

void session__will_detach(struct session *s, int err);

void session_will_set(struct session *s, struct msg *m, uint8_t qos, bool retain, uint32_t delay_s,
                      uint32_t expiry_s)
{
    struct session_will *w = s->will;
    if (!m) {
        if (w) {
            keepalive_cancel(&w->timer);
            msg_unref(&w->m);
            free(w);
            s->will = NULL;
        }
        return;
    }
    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->s = s;
        s->will = w;
    }
    keepalive_cancel(&w->timer);
    msg_unref(&w->m);
    w->m = m;
    w->qos = qos;
    w->retain = retain;
    w->delay_s = delay_s;
    w->expiry_s = expiry_s;
}

void session_will_publish(struct session *s)
{
    struct session_will *w = s->will;
    if (!w)
        return;
    struct msg *m = w->m;
    w->m = NULL;
    uint32_t expiry_s = w->expiry_s;
    session_will_set(s, NULL, 0, false, 0, 0);
    if (!m)
        return;
    if (expiry_s)
        m->expiry_ms = clock_now_ms() + (uint64_t)expiry_s * 1000u;
    m->origin = s->id;
    /* Judged when it goes out, by the rules in force then, like any publish. */
    const struct acl *acl = s->b->acl;
    if (!acl || acl_check(acl, s->client_id, s->username, m->topic, m->topic_len, ACL_WRITE))
        router_publish(s->b, m, s);
    else
        s->b->stats.acl_denied++;
    msg_unref(&m);
}

static void on_will_delay(struct keepalive_entry *e, uint64_t now_ms)
{
    struct session_will *w = container_of(e, struct session_will, timer);
    struct session *s = w->s;
    (void)now_ms;
    session_will_publish(s);
    persist_save(s); /* the stored state must not publish it again */
}

void session__will_detach(struct session *s, int err)
{
    struct session_will *w = s->will;
    if (!w)
        return;
    if (err == 0) {
        session_will_set(s, NULL, 0, false, 0, 0);
        return;
    }
    if (w->delay_s == 0 || s->expiry_s == 0) {
        session_will_publish(s);
        return;
    }
    uint32_t d = w->delay_s < s->expiry_s ? w->delay_s : s->expiry_s;
    keepalive_arm(&s->b->wheel, &w->timer, clock_now_ms() + (uint64_t)d * 1000u, on_will_delay);
}
