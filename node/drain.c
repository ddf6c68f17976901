/*
 * Graceful drain on SIGTERM, the way a Kubernetes rolling update or scale-down ends a node.
 *
 * 1. Stop accepting: the MQTT listeners close and /readyz turns 503 (b->draining).
 * 2. Send every client away: MQTT 5 ones get DISCONNECT 0x8B; each persistent session is
 *    written to the store with what it was owed, as on any disconnect.
 * 3. In a cluster, wait for those clients to reconnect elsewhere: each such session leaves
 *    this node through a takeover, and so stops being routed here. The cluster links and the
 *    store stay up meanwhile, so takeovers are answered and forwards still land in the store.
 * 4. Drop the routes of the sessions still here and fence the cluster links (cluster_fence):
 *    once every member answered, none forwards here any more, and what they sent before is
 *    answered. Meanwhile leave the member registry: Redis answers in order, so once the leave
 *    is answered every write issued before it is stored. Then stop.
 *
 * The whole drain is bounded (DRAIN_BOUND_MS); sessions that stay offline here are adopted by
 * a survivor once this node is gone, like those of a node that died.
 */
#include "node/drain.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/keepalive.h"
#include "node/listener.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/persist.h"
#include "node/session.h"
#include "store/store.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define DRAIN_BOUND_MS  20000 /* the chart's terminationGracePeriodSeconds is 30 */
#define DRAIN_MOVE_MS   5000  /* how long sessions wait for their clients to reconnect elsewhere */
#define DRAIN_CHECK_MS  100
#define DRAIN_LINGER_MS 500  /* at least, for members that still send what they had routed */
#define DRAIN_SETTLE_MS 1000 /* at most, for the members to answer the fence */

static void leave(struct broker *b);

static void stop_drained(struct broker *b, uint64_t now_ms)
{
    log_info("broker", "drained in %llu ms", (unsigned long long)(now_ms - b->drain_started_ms));
    broker_stop(b);
}

static void on_left(void *ctx, int rc)
{
    struct broker *b = ctx;
    if (rc == ERR_CANCELED)
        return;
    if (rc < 0)
        log_warn("broker", "drain: the store did not answer the leave rc=%s", err_str(rc));
    /* Until the fence is answered, a member may still forward here, and answers to the last
     * takeovers may be queued on the links: stopping now would leave publishers waiting for
     * this node to be declared dead, and new owners waiting for answers that never come. */
    if (!b->cluster || cluster_members(b->cluster) == 0) {
        stop_drained(b, clock_now_ms()); /* no link to settle */
        return;
    }
    b->drain_left_ms = clock_now_ms();
    b->has_drain_left = true;
}

/* The linger is a floor as well as the fence: what a member routed here just before it
 * applied the route change, and takeovers answered at the last moment, are then answered
 * before the links close. */
static bool may_stop(const struct broker *b, uint64_t now_ms)
{
    if (!b->has_drain_left || now_ms < b->drain_left_ms + DRAIN_LINGER_MS)
        return false;
    return !b->cluster || cluster_is_settled(b->cluster) ||
           now_ms >= b->drain_left_ms + DRAIN_SETTLE_MS;
}

static void leave(struct broker *b)
{
    if (b->drain_leaving)
        return;
    b->drain_leaving = true;
    /* Their routes go now, while the links still carry the change: a member that kept
     * routing here would wait for this node's death to park what it sent. */
    mesh_hand_over_end(b);
    if (b->cluster)
        cluster_fence(b->cluster); /* answered while the store answers the leave */
    if (b->drain_waiting)
        log_warn("broker", "drain: sessions not taken over by another node n=%u", b->drain_waiting);
    if (store_member_leave(b->store, b->conf->node_id, on_left, b) < 0)
        broker_stop(b);
}

static void on_check(struct keepalive_entry *e, uint64_t now_ms)
{
    struct broker *b = container_of(e, struct broker, drain_timer);
    if (b->stopping)
        return;
    if (now_ms >= b->drain_started_ms + DRAIN_BOUND_MS) {
        log_warn("broker", "drain: bound reached, stopping");
        broker_stop(b);
        return;
    }
    if (may_stop(b, now_ms)) {
        stop_drained(b, now_ms);
        return;
    }
    if (b->drain_waiting == 0 || now_ms >= b->drain_started_ms + DRAIN_MOVE_MS)
        leave(b);
    keepalive_arm(&b->wheel, &b->drain_timer, now_ms + DRAIN_CHECK_MS, on_check);
}

void drain_start(struct broker *b)
{
    if (b->stopping)
        return;
    if (b->draining) {
        log_info("broker", "second stop signal: stopping now");
        broker_stop(b);
        return;
    }
    b->draining = true;
    clock_refresh(); /* the signal came after the loop slept */
    b->drain_started_ms = clock_now_ms();
    listener_close_all(b);
    bool is_clustered = b->cluster && cluster_members(b->cluster) > 0;
    uint32_t n = 0;
    for (struct conn *c = b->conns; c;) {
        struct conn *next = c->next;
        struct session *s = c->s;
        if (is_clustered && s && s->expiry_s != 0 && !s->drain_wait) {
            s->drain_wait = true;
            b->drain_waiting++;
        }
        conn_ref(c);
        handle_fail(c, ERR_SHUTTING_DOWN);
        conn_unref(c);
        n++;
        c = next;
    }
    log_info("broker", "draining: clients sent away n=%u, sessions to move n=%u", n,
             b->drain_waiting);
    if (b->drain_waiting == 0)
        leave(b);
    keepalive_arm(&b->wheel, &b->drain_timer, clock_now_ms() + DRAIN_CHECK_MS, on_check);
}

void drain_poll(struct broker *b)
{
    if (!b->stopping && may_stop(b, clock_now_ms()))
        stop_drained(b, clock_now_ms());
}

void drain_session_gone(struct session *s)
{
    struct broker *b = s->b;
    if (!s->drain_wait)
        return;
    s->drain_wait = false;
    if (b->drain_waiting > 0 && --b->drain_waiting == 0 && !b->stopping)
        leave(b); /* the last one moved: no need to wait for the next check */
}
