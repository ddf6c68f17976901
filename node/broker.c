/*
 * The node's root object: start-up in dependency order, the per-pass hook that refreshes the
 * clock and flushes every connection's batched output, the 250 ms tick that drives the timing
 * wheel and $SYS, the session table, and orderly shutdown.
 */
#include "node/broker.h"

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/clock.h"
#include "node/conn.h"
#include "node/drain.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/http.h"
#include "node/listener.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/retain.h"
#include "node/security.h"
#include "node/session.h"
#include "node/signals.h"
#include "node/tls.h"
#include "node/topic_tree.h"
#include "store/store.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

struct session *broker_session_find(struct broker *b, const char *id, size_t len)
{
    struct session *s = b->sess_buckets[hash_id(id, len) & (b->sess_nbuckets - 1)];
    for (; s; s = s->hnext)
        if (s->client_id_len == len && memcmp(s->client_id, id, len) == 0)
            return s;
    return NULL;
}

static void sess_grow(struct broker *b)
{
    size_t n = b->sess_nbuckets * 2;
    struct session **nb = xcalloc(n, sizeof(*nb));
    for (size_t i = 0; i < b->sess_nbuckets; i++) {
        struct session *s = b->sess_buckets[i];
        while (s) {
            struct session *next = s->hnext;
            size_t k = hash_id(s->client_id, s->client_id_len) & (n - 1);
            s->hnext = nb[k];
            nb[k] = s;
            s = next;
        }
    }
    free(b->sess_buckets);
    b->sess_buckets = nb;
    b->sess_nbuckets = n;
}

void broker_session_insert(struct broker *b, struct session *s)
{
    /* Two sessions per bucket on average before the table doubles: chains stay short, and
     * the table costs 4 to 8 bytes per session instead of 8 to 16. */
    if (b->sess_count >= 2 * b->sess_nbuckets)
        sess_grow(b);
    size_t k = hash_id(s->client_id, s->client_id_len) & (b->sess_nbuckets - 1);
    s->hnext = b->sess_buckets[k];
    b->sess_buckets[k] = s;
    b->sess_count++;
}

void broker_session_remove(struct broker *b, struct session *s)
{
    struct session **pp =
        &b->sess_buckets[hash_id(s->client_id, s->client_id_len) & (b->sess_nbuckets - 1)];
    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            s->hnext = NULL;
            b->sess_count--;
            return;
        }
    }
}

void broker_flush_later(struct broker *b, struct conn *c)
{
    if (c->in_flush_list)
        return;
    c->in_flush_list = true;
    conn_ref(c);
    c->flush_next = b->flush_head;
    b->flush_head = c;
}

void broker_resume_publishers(struct broker *b)
{
    /* Take the list first: a resumed publisher may congest someone again and be re-paused,
     * and then the rest must stay paused too. */
    struct conn *c = b->paused;
    b->paused = NULL;
    while (c) {
        struct conn *next = c->paused_next;
        c->paused_next = NULL;
        if (b->n_congested == 0 && b->n_links_pressed == 0) {
            conn_resume(c);
            conn_unref(c);
        } else {
            c->paused_next = b->paused;
            b->paused = c;
        }
        c = next;
    }
}

/* A congested consumer that acknowledges nothing for this long stops holding publishers back;
 * its own queue limit applies from then on. */
#define BROKER_CONGESTION_GIVEUP_MS 1000u

static void check_congestion(struct broker *b, uint64_t now)
{
    struct session_q *q = b->congested;
    while (q) {
        struct session_q *next = q->cong_next;
        struct conn *c = q->s->conn;
        if (c) {
            /* The kernel taking part of a large pending write is progress too. */
            uint64_t w = conn_bytes_written(c);
            if (w != q->progress_bytes) {
                q->progress_bytes = w;
                q->progress_ms = now;
            }
        }
        if (now - q->progress_ms > BROKER_CONGESTION_GIVEUP_MS) {
            struct session *s = q->s;
            log_ratelimited(LOG_LEVEL_WARN, "flow",
                            "slow consumer no longer holds publishers client_id_len=%zu "
                            "queued=%u",
                            s->client_id_len, session_queued(s));
            session_uncongest(s);
            s->is_flow_exempt = true;
        }
        q = next;
    }
}

static void flush_conns(struct broker *b)
{
    /* Flushing can queue more output (a close after a failed write); loop until quiet. */
    while (b->flush_head) {
        struct conn *c = b->flush_head;
        b->flush_head = NULL;
        while (c) {
            struct conn *next = c->flush_next;
            c->flush_next = NULL;
            c->in_flush_list = false;
            conn_flush(c);
            conn_unref(c);
            c = next;
        }
    }
}

static void on_prepare(uv_prepare_t *h)
{
    struct broker *b = container_of(h, struct broker, prepare);

    /* Congestion is judged after the flush: a consumer whose output the kernel took just now
     * is no longer congested, and its publishers read again before the loop waits. What they
     * had buffered is handled at once and flushed in turn; a publisher that congests someone
     * again is paused again, so this ends. */
    flush_conns(b);
    while (b->paused && b->n_congested == 0 && b->n_links_pressed == 0) {
        broker_resume_publishers(b);
        flush_conns(b);
    }
    if (b->n_trims)
        persist_flush_trims(b);
    if (b->members)
        mesh_members_poll(b);
    if (b->cluster && b->n_congested == 0)
        mesh_unhold(b);
    mesh_flush(b);
    if (b->draining)
        drain_poll(b);
    flush_conns(b);
    clock_refresh();
}

static void on_tick(uv_timer_t *t)
{
    struct broker *b = container_of(t, struct broker, tick);
    clock_refresh();
    uint64_t now = clock_now_ms();
    keepalive_advance(&b->wheel, now);
    check_congestion(b, now);
    if (!b->stopping)
        mesh_tick(b);
    uint32_t iv = b->conf->sys_interval_s;
    if (iv > 0 && now - b->last_sys_ms >= (uint64_t)iv * 1000u) {
        b->last_sys_ms = now;
        stats_publish_sys(b);
    }
}

/* Warms the retained cache from the store at start. */
static void on_retain_load(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    struct broker *b = ctx;
    if (rc < 0) {
        if (rc != ERR_CANCELED)
            log_warn("store", "retained load failed rc=%s", err_str(rc));
        return;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct msg *m =
            msg_blob_read(msgs[i].p, msgs[i].len, clock_now_ms(), clock_wall_s() * 1000u);
        if (!m) {
            bad++;
            continue;
        }
        retain_set(b->retained, m);
        msg_unref(&m);
    }
    log_info("store", "retained messages loaded n=%zu malformed=%zu", n - bad, bad);
}

/* Listeners open once the node holds what it must route to: stored sessions included. */
static int start_serving(struct broker *b)
{
    int rc = listener_start_all(b);
    if (rc == 0)
        rc = security_start(b);
    if (rc == 0)
        log_info("broker", "shoal node started node_id=%s listeners=%zu", b->conf->node_id,
                 b->conf->n_listeners);
    return rc;
}

static void load_sessions(struct broker *b);

static void on_load_retry(struct keepalive_entry *e, uint64_t now_ms)
{
    struct broker *b = container_of(e, struct broker, start_retry);
    (void)now_ms;
    load_sessions(b);
}

static void on_sessions_loaded(void *ctx, int rc)
{
    struct broker *b = ctx;
    if (b->stopping)
        return;
    if (rc < 0) {
        /* The store is not reachable yet: the node waits for it, not serving anyone. */
        keepalive_arm(&b->wheel, &b->start_retry, clock_now_ms() + 1000, on_load_retry);
        return;
    }
    if (start_serving(b) < 0) {
        b->exit_code = 1;
        broker_stop(b);
    }
}

static void load_sessions(struct broker *b)
{
    if (b->stopping)
        return;
    if (persist_load_all(b, on_sessions_loaded, b) < 0)
        keepalive_arm(&b->wheel, &b->start_retry, clock_now_ms() + 1000, on_load_retry);
}

int broker_start(struct broker *b, uv_loop_t *loop, struct conf *c)
{
    char err[256] = "";
    int rc;

    memset(b, 0, sizeof(*b));
    b->loop = loop;
    b->conf = c;
    clock_refresh();
    b->started_ms = clock_now_ms();
    b->last_sys_ms = b->started_ms;
    b->scratch = xmalloc(BROKER_SCRATCH_SIZE);
    b->sess_nbuckets = 1024;
    b->sess_buckets = xcalloc(b->sess_nbuckets, sizeof(*b->sess_buckets));
    b->subs = topic_tree_create();
    b->retained = retain_create();
    keepalive_wheel_init(&b->wheel, b->started_ms);

    rc = store_create(loop, c->store_url ? c->store_url : "memory", c->node_id, &b->store, err,
                      sizeof(err));
    if (rc < 0) {
        log_error("store", "cannot open store url=%s: %s", c->store_url, err);
        return rc;
    }
    rc = store_retain_load(b->store, on_retain_load, b);
    if (rc < 0)
        return rc;
    rc = mesh_start(b);
    if (rc < 0)
        return rc;
    (void)uv_prepare_init(loop, &b->prepare);
    (void)uv_prepare_start(&b->prepare, on_prepare);
    (void)uv_timer_init(loop, &b->tick);
    (void)uv_timer_start(&b->tick, on_tick, KEEPALIVE_SLOT_MS, KEEPALIVE_SLOT_MS);
    rc = signals_start(b);
    if (rc < 0)
        return rc;
    /* Before serving: /healthz answers during start-up, /readyz says 503 until it is over. */
    rc = http_start(b);
    if (rc < 0)
        return rc;
    if (!persist_is_on(b))
        return start_serving(b);
    load_sessions(b);
    return 0;
}

void broker_stop(struct broker *b)
{
    if (b->stopping)
        return;
    b->stopping = true;
    log_info("broker", "shutting down");
    http_stop(b);
    listener_close_all(b);
    security_stop(b);
    keepalive_cancel(&b->start_retry);
    keepalive_cancel(&b->drain_timer);
    for (struct conn *c = b->conns; c;) {
        struct conn *next = c->next;
        conn_ref(c);
        handle_fail(c, ERR_SHUTTING_DOWN);
        conn_close_now(c); /* one a drain sent away may still wait for its output */
        conn_unref(c);
        c = next;
    }
    if (b->tick.loop && !uv_is_closing((uv_handle_t *)&b->tick))
        uv_close((uv_handle_t *)&b->tick, NULL);
    /* Every connection flushed its last packet synchronously above; what the kernel did not
     * take is in uv_write requests that complete without the prepare hook. */
    if (b->prepare.loop && !uv_is_closing((uv_handle_t *)&b->prepare))
        uv_close((uv_handle_t *)&b->prepare, NULL);
    mesh_members_stop(b);
    mesh_stop(b);
    store_destroy(&b->store);
}

void broker_free(struct broker *b)
{
    while (b->paused) {
        struct conn *c = b->paused;
        b->paused = c->paused_next;
        c->paused_next = NULL;
        conn_unref(c);
    }
    broker_resume_publishers(b);
    while (b->flush_head) {
        struct conn *c = b->flush_head;
        b->flush_head = c->flush_next;
        c->flush_next = NULL;
        c->in_flush_list = false;
        conn_unref(c);
    }
    /* Sessions still held (persistent, offline) are dropped without publishing wills. */
    for (size_t i = 0; i < b->sess_nbuckets; i++) {
        while (b->sess_buckets[i]) {
            struct session *s = b->sess_buckets[i];
            s->conn = NULL;
            session_will_set(s, NULL, 0, false, 0, 0);
            session_destroy(&s);
        }
    }
    free(b->sess_buckets);
    b->sess_buckets = NULL;
    topic_tree_destroy(&b->subs);
    mesh_free(b);
    retain_destroy(&b->retained);
    free(b->matches);
    b->matches = NULL;
    free(b->trims);
    b->trims = NULL;
    buf_free(&b->persist_out);
    b->n_trims = 0;
    for (size_t i = 0; i < b->n_listeners; i++)
        tls_ctx_destroy(&b->listeners[i].tls);
    free(b->listeners);
    b->listeners = NULL;
    security_free(b);
    for (size_t i = 0; i < sizeof(b->xbuf) / sizeof(b->xbuf[0]); i++)
        buf_free(&b->xbuf[i]);
    free(b->scratch);
    b->scratch = NULL;
    conf_free(&b->conf);
}
