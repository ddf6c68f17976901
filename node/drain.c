/*
 * Graceful drain on SIGTERM, the way a Kubernetes rolling update or scale-down ends a node.
 *
 * 1. Stop accepting: the MQTT listeners close and /readyz turns 503 (b->draining).
 * 2. Send every client away: MQTT 5 ones get DISCONNECT 0x8B; each persistent session is
 *    written to the store with what it was owed, as on any disconnect.
 * 3. In a cluster, wait for those clients to reconnect elsewhere: each such session leaves
 *    this node through a takeover, and so stops being routed here. The cluster links and the
 *    store stay up meanwhile, so takeovers are answered and forwards still land in the store.
 * 4. Leave the member registry. Redis answers in order, so once the leave is answered every
 *    write issued before it is stored. Linger a moment for the cluster links to send their
 *    last answers, then stop.
 *
 * The whole drain is bounded (DRAIN_BOUND_MS); sessions that stay offline here are adopted by
 * a survivor once this node is gone, like those of a node that died.
 */
#include "node/drain.h"

#include <stddef.h>

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
#define DRAIN_LINGER_MS 300 /* for the cluster links to send what is queued on them */

static void leave(struct broker *b);

static void on_left(void *ctx, int rc)
{
    struct broker *b = ctx;
    if (rc == ERR_CANCELED)
        return;
    if (rc < 0)
        log_warn("broker", "drain: the store did not answer the leave rc=%s", err_str(rc));
    /* Answers to the last takeovers and route changes are queued on the cluster links:
     * closing them now would cancel those writes, and the new owners would wait for answers
     * that never come while nobody routes to the sessions. */
    b->drain_linger_ms = clock_now_ms() + DRAIN_LINGER_MS;
}

static void leave(struct broker *b)
{
    if (b->drain_leaving)
        return;
    b->drain_leaving = true;
    /* Their routes go now, while the links still carry the change: a member that kept
     * routing here would wait for this node's death to park what it sent. */
    mesh_hand_over_end(b);
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
    if (b->drain_linger_ms && now_ms >= b->drain_linger_ms) {
        log_info("broker", "drained in %llu ms",
                 (unsigned long long)(now_ms - b->drain_started_ms));
        broker_stop(b);
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

void drain_session_gone(struct session *s)
{
    struct broker *b = s->b;
    if (!s->drain_wait)
        return;
    s->drain_wait = false;
    if (b->drain_waiting > 0 && --b->drain_waiting == 0 && !b->stopping)
        leave(b); /* the last one moved: no need to wait for the next check */
}
