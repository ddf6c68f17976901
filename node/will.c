/*
 * Will messages: kept on the session, published when the network connection ends without a
 * normal DISCONNECT, after the MQTT 5 will delay (cancelled by a reconnect) or at once when the
 * session itself ends first.
 */
#include <stddef.h>

#include "node/broker.h"
#include "node/clock.h"
#include "node/msg.h"
#include "node/router.h"
#include "node/session.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

void session__will_detach(struct session *s, int err);

void session_will_set(struct session *s, struct msg *m, uint8_t qos, bool retain, uint32_t delay_s,
                      uint32_t expiry_s)
{
    keepalive_cancel(&s->will_timer);
    msg_unref(&s->will);
    s->will = m;
    s->will_qos = qos;
    s->will_retain = retain;
    s->will_delay_s = delay_s;
    s->will_expiry_s = expiry_s;
}

void session_will_publish(struct session *s)
{
    keepalive_cancel(&s->will_timer);
    struct msg *m = s->will;
    if (!m)
        return;
    s->will = NULL;
    if (s->will_expiry_s)
        m->expiry_ms = clock_now_ms() + (uint64_t)s->will_expiry_s * 1000u;
    m->origin = s->id;
    router_publish(s->b, m, s);
    msg_unref(&m);
}

static void on_will_delay(struct keepalive_entry *e, uint64_t now_ms)
{
    struct session *s = container_of(e, struct session, will_timer);
    (void)now_ms;
    session_will_publish(s);
}

void session__will_detach(struct session *s, int err)
{
    if (!s->will)
        return;
    if (err == 0) {
        session_will_set(s, NULL, 0, false, 0, 0);
        return;
    }
    if (s->will_delay_s == 0 || s->expiry_s == 0) {
        session_will_publish(s);
        return;
    }
    uint32_t d = s->will_delay_s < s->expiry_s ? s->will_delay_s : s->expiry_s;
    keepalive_arm(&s->b->wheel, &s->will_timer, clock_now_ms() + (uint64_t)d * 1000u,
                  on_will_delay);
}
