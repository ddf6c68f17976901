/*
 * Store front end: URL → backend (through a table of ops, so redis drops in as one row),
 * request objects, and deferred delivery. Backends finish requests with store__complete(),
 * which appends them to a FIFO; a uv_idle_t, active only while the FIFO is non-empty, delivers
 * the callbacks on the next loop pass. So a callback never runs inside the call that started
 * it, even though the memory backend computes its result at once, and callbacks run in the
 * order the requests completed. Each drain delivers only what was queued when it began:
 * requests started from a callback wait for the next pass.
 *
 * store_destroy() closes the idle handle; its close_cb delivers ERR_CANCELED to every request
 * not yet delivered and frees the store, so the loop must run once more (libuv: free only in
 * close_cb).
 */
#include "store/store.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/log.h"
#include "store/store_int.h"

#define STORE_FREE_REQS_MAX 64

struct store {
    uv_loop_t *loop;
    uv_idle_t idle;
    const struct store__backend_ops *ops;
    void *impl;
    char *node_id;
    struct store__req *inflight;  /* doubly linked: started, not completed */
    struct store__req *done_head; /* completed, awaiting delivery */
    struct store__req **done_tail;
    struct store__req *drain_head; /* detached by the running drain */
    struct store__req *free_reqs;  /* recycled request objects */
    size_t n_free;
    bool is_closing;
    struct store_stats stats;
};

const uint32_t store_latency_bounds_us[STORE_LATENCY_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
};

/* URL schemes. A NULL ops marks a scheme we know but do not support. */
struct store_scheme {
    const char *prefix;
    bool is_exact;
    const struct store__backend_ops *ops;
    const char *unsupported;
};

static const struct store_scheme store_schemes[] = {
    {"memory", true, &store__memory_ops, NULL},
    {"redis://", false, &store__redis_ops, NULL},
    {"rediss://", false, NULL, "rediss:// (Redis over TLS) is not supported"},
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct store_scheme *find_scheme(const char *url)
{
    for (size_t i = 0; i < sizeof(store_schemes) / sizeof(store_schemes[0]); i++) {
        const struct store_scheme *sc = &store_schemes[i];
        size_t n = strlen(sc->prefix);
        if (sc->is_exact ? strcmp(url, sc->prefix) == 0 : strncmp(url, sc->prefix, n) == 0)
            return sc;
    }
    return NULL;
}

int store_create(uv_loop_t *loop, const char *url, const char *node_id, struct store **out,
                 char *err, size_t errlen)
{
    const struct store_scheme *sc;
    struct store *s;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    if (!loop || !url || !out) {
        set_err(err, errlen, "%s", "store: missing loop, URL or result pointer");
        return ERR_INVALID;
    }
    *out = NULL;
    if (!node_id || !node_id[0]) {
        set_err(err, errlen, "%s", "store: node id is required");
        return ERR_INVALID;
    }
    sc = find_scheme(url);
    if (!sc) {
        set_err(err, errlen, "unknown store URL '%s'", url);
        return ERR_INVALID;
    }
    if (!sc->ops) {
        set_err(err, errlen, "%s", sc->unsupported);
        return ERR_INVALID;
    }

    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->ops = sc->ops;
    s->node_id = xstrdup(node_id);
    s->done_tail = &s->done_head;
    rc = s->ops->open(s, url, node_id, &s->impl, err, errlen);
    if (rc < 0)
        goto out_free;
    rc = uv_idle_init(loop, &s->idle);
    if (rc < 0) {
        set_err(err, errlen, "store: %s", uv_strerror(rc));
        goto out_close;
    }
    log_info("store", "store opened backend=%s node_id=%s", s->ops->name, node_id);
    *out = s;
    return 0;

out_close:
    s->ops->close(s->impl);
out_free:
    free(s->node_id);
    free(s);
    return rc;
}

uv_loop_t *store__loop(const struct store *s)
{
    return s->loop;
}

bool store_is_durable(const struct store *s)
{
    return s && s->ops->is_durable;
}

const struct store_stats *store_get_stats(const struct store *s)
{
    return &s->stats;
}

bool store_is_up(const struct store *s)
{
    if (!s || s->is_closing)
        return false;
    return !s->ops->is_up || s->ops->is_up(s->impl);
}

/* ---- requests ---------------------------------------------------------------------------- */

static struct store__req *req_new(struct store *s, enum store__cb_kind kind, void *ctx)
{
    struct store__req *r = s->free_reqs;

    if (r) {
        s->free_reqs = r->next;
        s->n_free--;
    } else {
        r = xmalloc(sizeof(*r));
    }
    memset(r, 0, sizeof(*r));
    r->s = s;
    r->kind = kind;
    r->ctx = ctx;
    r->is_inflight = true;
    r->started_us = clock_precise_us();
    r->next = s->inflight;
    if (s->inflight)
        s->inflight->prev = r;
    s->inflight = r;
    return r;
}

static void inflight_unlink(struct store__req *r)
{
    struct store *s = r->s;

    if (r->prev)
        r->prev->next = r->next;
    else
        s->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = NULL;
    r->prev = NULL;
    r->is_inflight = false;
}

/* Releases the results and recycles the request object. */
static void req_free(struct store__req *r)
{
    struct store *s = r->s;

    free(r->prev_owner);
    r->prev_owner = NULL;
    free(r->state_buf);
    r->state_buf = NULL;
    free(r->blobs);
    r->blobs = NULL;
    if (s->n_free < STORE_FREE_REQS_MAX && !s->is_closing) {
        r->next = s->free_reqs;
        s->free_reqs = r;
        s->n_free++;
    } else {
        free(r);
    }
}

/* Undoes req_new() after the backend refused to start the request. */
static int req_abort(struct store__req *r, int rc)
{
    /* A backend that completed r and then failed broke the ops contract. The callback is
     * queued and will run, so the caller must see success, or it would free ctx early. */
    if (NEVER(!r->is_inflight))
        return 0;
    inflight_unlink(r);
    req_free(r);
    return rc;
}

static void on_idle(uv_idle_t *h);

static void stats_record(struct store *s, const struct store__req *r, int rc)
{
    uint64_t now = clock_precise_us();
    uint64_t us = now > r->started_us ? now - r->started_us : 0;
    size_t i = 0;

    while (i < STORE_LATENCY_BUCKETS && us > store_latency_bounds_us[i])
        i++;
    s->stats.buckets[i]++;
    s->stats.count++;
    s->stats.sum_us += us;
    if (rc < 0 && rc != ERR_NOT_FOUND && rc != ERR_EXISTS && rc != ERR_QUOTA && rc != ERR_CANCELED)
        s->stats.errors++;
}

void store__complete(struct store__req *r, int rc)
{
    struct store *s = r->s;

    if (NEVER(!r->is_inflight))
        return;
    stats_record(s, r, rc);
    inflight_unlink(r);
    r->rc = rc;
    *s->done_tail = r;
    s->done_tail = &r->next;
    if (!s->is_closing && !uv_is_active((uv_handle_t *)&s->idle))
        (void)uv_idle_start(&s->idle, on_idle);
}

void store__req_set_claim(struct store__req *r, uint64_t epoch, const char *prev_owner,
                          uint64_t prev_epoch)
{
    r->epoch = epoch;
    r->prev_epoch = prev_epoch;
    free(r->prev_owner);
    r->prev_owner = prev_owner ? xstrdup(prev_owner) : NULL;
}

void store__req_set_state(struct store__req *r, const uint8_t *p, size_t len)
{
    free(r->state_buf);
    r->state_buf = xmalloc(len);
    if (len)
        memcpy(r->state_buf, p, len);
    r->state_len = len;
}

void store__req_blobs_begin(struct store__req *r, size_t n, size_t total_bytes)
{
    if (NEVER(r->blobs))
        free(r->blobs);
    r->blobs = xmalloc(n * sizeof(*r->blobs) + total_bytes);
    r->n_cap = n;
    r->n_blobs = 0;
    r->arena = (uint8_t *)(r->blobs + n);
    r->arena_cap = total_bytes;
    r->arena_used = 0;
}

void store__req_add_blob(struct store__req *r, const uint8_t *p, size_t len)
{
    static const uint8_t empty[1];
    struct store_blob *b;

    if (NEVER(r->n_blobs >= r->n_cap || len > r->arena_cap - r->arena_used))
        abort(); /* the backend miscounted: writing on would overflow the arena */
    b = &r->blobs[r->n_blobs++];
    if (len == 0) {
        b->p = empty;
        b->len = 0;
        return;
    }
    memcpy(r->arena + r->arena_used, p, len);
    b->p = r->arena + r->arena_used;
    b->len = len;
    r->arena_used += len;
}

static void deliver(struct store__req *r)
{
    static const uint8_t empty[1];
    struct store_blob state = {empty, 0};
    const struct store_blob *blobs = r->n_blobs ? r->blobs : NULL;

    switch (r->kind) {
    case STORE__CB_DONE:
        r->cb.done(r->ctx, r->rc);
        break;
    case STORE__CB_CLAIM:
        r->cb.claim(r->ctx, r->rc, r->epoch, r->prev_owner, r->prev_epoch);
        break;
    case STORE__CB_LOAD:
        if (r->state_buf) {
            state.p = r->state_buf;
            state.len = r->state_len;
        }
        r->cb.load(r->ctx, r->rc, state, blobs, r->rc == 0 ? r->n_blobs : 0);
        break;
    case STORE__CB_RETAIN:
        r->cb.retain(r->ctx, r->rc, blobs, r->rc == 0 ? r->n_blobs : 0);
        break;
    }
}

/* Cancelled requests carry no results: callers must not see half of a reply. */
static void deliver_canceled(struct store__req *r)
{
    free(r->prev_owner);
    r->prev_owner = NULL;
    free(r->state_buf);
    r->state_buf = NULL;
    free(r->blobs);
    r->blobs = NULL;
    r->n_blobs = 0;
    r->epoch = 0;
    r->prev_epoch = 0;
    r->rc = ERR_CANCELED;
    deliver(r);
}

static void on_idle(uv_idle_t *h)
{
    struct store *s = (struct store *)((char *)h - offsetof(struct store, idle));
    struct store__req *r;

    s->drain_head = s->done_head;
    s->done_head = NULL;
    s->done_tail = &s->done_head;
    while (!s->is_closing && (r = s->drain_head) != NULL) {
        s->drain_head = r->next;
        r->next = NULL;
        deliver(r);
        req_free(r);
    }
    /* After store_destroy() from a callback, the rest of the drain is cancelled in close_cb. */
    if (!s->is_closing && !s->done_head)
        (void)uv_idle_stop(&s->idle);
}

static void on_close(uv_handle_t *h)
{
    struct store *s = (struct store *)((char *)h - offsetof(struct store, idle));
    struct store__req *r;

    while ((r = s->done_head) != NULL) {
        s->done_head = r->next;
        r->next = NULL;
        deliver_canceled(r);
        req_free(r);
    }
    while ((r = s->free_reqs) != NULL) {
        s->free_reqs = r->next;
        free(r);
    }
    free(s->node_id);
    s->node_id = NULL;
    free(s);
}

void store_destroy(struct store **sp)
{
    struct store *s = sp ? *sp : NULL;
    struct store__req *r;

    if (!s)
        return;
    *sp = NULL;
    if (NEVER(s->is_closing))
        return;
    s->is_closing = true;
    s->ops->close(s->impl);
    s->impl = NULL;
    /* Order of cancellation: what the drain had detached, then completed, then in flight. */
    if (s->drain_head) {
        struct store__req **tail = &s->drain_head;
        while (*tail)
            tail = &(*tail)->next;
        *tail = s->done_head;
        if (!s->done_head)
            s->done_tail = tail;
        s->done_head = s->drain_head;
        s->drain_head = NULL;
    }
    while ((r = s->inflight) != NULL) {
        inflight_unlink(r);
        *s->done_tail = r;
        s->done_tail = &r->next;
    }
    uv_close((uv_handle_t *)&s->idle, on_close);
}

/* ---- the API: validate, then hand to the backend --------------------------------------- */

static bool blob_ok(struct store_blob b)
{
    return b.p || b.len == 0;
}

static bool key_ok(const char *k)
{
    return k && k[0];
}

static int start_check(const struct store *s, bool has_cb)
{
    if (!s || !has_cb)
        return ERR_INVALID;
    if (NEVER(s->is_closing))
        return ERR_CANCELED;
    return 0;
}

int store_owner_claim(struct store *s, const char *client_id, store_claim_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_CLAIM, ctx);
    r->cb.claim = cb;
    rc = s->ops->owner_claim(s->impl, r, client_id);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_owner_release(struct store *s, const char *client_id, uint64_t epoch, store_done_cb cb,
                        void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->owner_release(s->impl, r, client_id, epoch);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_session_save(struct store *s, const char *client_id, uint64_t epoch,
                       struct store_blob state, uint64_t expiry_s, store_done_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id) || !blob_ok(state))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->session_save(s->impl, r, client_id, epoch, state, expiry_s);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_session_load(struct store *s, const char *client_id, store_load_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_LOAD, ctx);
    r->cb.load = cb;
    rc = s->ops->session_load(s->impl, r, client_id);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_session_delete(struct store *s, const char *client_id, uint64_t epoch, store_done_cb cb,
                         void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->session_delete(s->impl, r, client_id, epoch);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_queue_push(struct store *s, const char *client_id, struct store_blob msg,
                     uint32_t max_count, uint64_t max_bytes, store_done_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id) || !blob_ok(msg))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->queue_push(s->impl, r, client_id, msg, max_count, max_bytes);
    return rc < 0 ? req_abort(r, rc) : 0;
}

struct store_blob store_entry_id(struct store_blob entry)
{
    if (entry.len > STORE_ENTRY_KEY_LEN && entry.p[0] == 0)
        return (struct store_blob){entry.p + 1, STORE_ENTRY_KEY_LEN};
    return entry;
}

int store_queue_trim(struct store *s, const char *client_id, uint64_t epoch,
                     const struct store_blob *ids, size_t n, store_done_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id) || !ids || n == 0)
        return ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if (!ids[i].p || ids[i].len == 0 || ids[i].len > UINT32_MAX)
            return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->queue_trim(s->impl, r, client_id, epoch, ids, n);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_retain_set(struct store *s, const char *topic, struct store_blob msg, store_done_cb cb,
                     void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(topic) || !blob_ok(msg))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->retain_set(s->impl, r, topic, msg);
    return rc < 0 ? req_abort(r, rc) : 0;
}

/* The two whole-store reads: same callback shape, different backend op. */
static int start_scan(struct store *s, int (*op)(void *impl, struct store__req *r),
                      store_retain_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    r = req_new(s, STORE__CB_RETAIN, ctx);
    r->cb.retain = cb;
    rc = op(s->impl, r);
    return rc < 0 ? req_abort(r, rc) : 0;
}

/* A request that names one node or client id and only completes. */
static int start_named(struct store *s, int (*op)(void *impl, struct store__req *r, const char *id),
                       const char *id, store_done_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(id))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = op(s->impl, r, id);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_session_scan(struct store *s, store_retain_cb cb, void *ctx)
{
    return start_scan(s, s ? s->ops->session_scan : NULL, cb, ctx);
}

int store_retain_load(struct store *s, store_retain_cb cb, void *ctx)
{
    return start_scan(s, s ? s->ops->retain_load : NULL, cb, ctx);
}

/* ---- cluster support: member registry, adoption, parked messages ------------------------ */

int store_member_heartbeat(struct store *s, const char *node_id, struct store_blob info,
                           uint32_t ttl_ms, store_done_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    /* Redis refuses a zero PX, and a member that expires as it is written is no member. */
    if (!key_ok(node_id) || !blob_ok(info) || ttl_ms == 0)
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->member_heartbeat(s->impl, r, node_id, info, ttl_ms);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_member_leave(struct store *s, const char *node_id, store_done_cb cb, void *ctx)
{
    return start_named(s, s ? s->ops->member_leave : NULL, node_id, cb, ctx);
}

int store_member_list(struct store *s, store_retain_cb cb, void *ctx)
{
    return start_scan(s, s ? s->ops->member_list : NULL, cb, ctx);
}

int store_member_gone(struct store *s, store_retain_cb cb, void *ctx)
{
    return start_scan(s, s ? s->ops->member_gone : NULL, cb, ctx);
}

int store_member_forget(struct store *s, const char *node_id, store_done_cb cb, void *ctx)
{
    return start_named(s, s ? s->ops->member_forget : NULL, node_id, cb, ctx);
}

int store_session_scan_owned(struct store *s, const char *owner, store_retain_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(owner))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_RETAIN, ctx);
    r->cb.retain = cb;
    rc = s->ops->session_scan_owned(s->impl, r, owner);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_owner_adopt(struct store *s, const char *client_id, const char *dead_owner,
                      store_claim_cb cb, void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(client_id) || !key_ok(dead_owner))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_CLAIM, ctx);
    r->cb.claim = cb;
    rc = s->ops->owner_adopt(s->impl, r, client_id, dead_owner);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_node_adopt_lock(struct store *s, const char *dead_node, uint32_t ttl_ms, store_done_cb cb,
                          void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(dead_node) || ttl_ms == 0)
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->node_adopt_lock(s->impl, r, dead_node, ttl_ms);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_park_push(struct store *s, const char *dead_node, struct store_blob msg, store_done_cb cb,
                    void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(dead_node) || !blob_ok(msg))
        return ERR_INVALID;
    r = req_new(s, STORE__CB_DONE, ctx);
    r->cb.done = cb;
    rc = s->ops->park_push(s->impl, r, dead_node, msg);
    return rc < 0 ? req_abort(r, rc) : 0;
}

int store_park_take(struct store *s, const char *dead_node, size_t max, store_retain_cb cb,
                    void *ctx)
{
    struct store__req *r;
    int rc = start_check(s, cb != NULL);

    if (rc < 0)
        return rc;
    if (!key_ok(dead_node) || max == 0)
        return ERR_INVALID;
    r = req_new(s, STORE__CB_RETAIN, ctx);
    r->cb.retain = cb;
    rc = s->ops->park_take(s->impl, r, dead_node, max);
    return rc < 0 ? req_abort(r, rc) : 0;
}
