/*
 * Persistent sessions in a durable store. The state blob holds what a session is (identity,
 * expiry, subscriptions, owner epoch); the stored queue holds one blob per message owed to it.
 * An offline session's deliveries are appended there, and the publisher's acknowledgement
 * waits for the append: that is the durability rule. Acknowledgements leave in PUBLISH order
 * through a small FIFO per publisher, which stays empty (and unallocated) on the fast path.
 * Messages read back at resume go to the front of the local queue and are trimmed from the
 * store one by one as they leave the session, so a crash in between redelivers rather than
 * loses them.
 */
#include "node/persist.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/conn.h"
#include "node/digest.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/names.h"
#include "node/session.h"
#include "store/store.h"

#define PERSIST_STATE_VERSION 2 /* 1: without the will */
#define PERSIST_DLV_VERSION   2 /* 1: without the publishing node and its number */
/* A stored delivery is a 0 byte and its key (store_entry_id's convention), then the delivery.
 * Entries stored before keys existed are the delivery alone. */
#define PERSIST_KEYED_HDR (1 + STORE_ENTRY_KEY_LEN)

void session__will_detach(struct session *s, int err);

/* A publisher's acknowledgement waiting for store appends. */
struct persist_wait {
    struct persist_wait *next;
    struct broker *b;
    struct session *s; /* publisher; NULL once it is gone */
    uint32_t pending;  /* appends not yet completed */
    int err;           /* first failure */
    uint16_t pid;
    uint8_t type; /* PUBACK or PUBREC */
    bool is_queued;
    bool is_forward; /* a member's forward: acknowledged to it, not to a client */
    uint64_t peer_uid;
    uint64_t tok;
};

bool persist_is_on(const struct broker *b)
{
    return b->store && store_is_durable(b->store);
}

static bool is_persistent(const struct session *s)
{
    return s->expiry_s != 0;
}

/* ---- encoding --------------------------------------------------------------------------- */

static void put8(struct buf *o, uint8_t v)
{
    buf_append(o, &v, 1);
}

static void put16(struct buf *o, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    buf_append(o, b, 2);
}

static void put32(struct buf *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_append(o, b, 4);
}

static void put64(struct buf *o, uint64_t v)
{
    put32(o, (uint32_t)(v >> 32));
    put32(o, (uint32_t)v);
}

static void put_str(struct buf *o, const char *p, size_t n)
{
    put16(o, (uint16_t)n);
    buf_append(o, p, n);
}

struct reader {
    const uint8_t *p;
    size_t n;
    bool is_bad;
};

static uint64_t get(struct reader *r, unsigned bytes)
{
    uint64_t v = 0;
    if (r->n < bytes) {
        r->is_bad = true;
        return 0;
    }
    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | r->p[i];
    r->p += bytes;
    r->n -= bytes;
    return v;
}

static const char *get_str(struct reader *r, size_t *len)
{
    *len = (size_t)get(r, 2);
    if (r->is_bad || r->n < *len) {
        r->is_bad = true;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += *len;
    r->n -= *len;
    return s;
}

static void state_write(const struct session *s, struct buf *o)
{
    put8(o, PERSIST_STATE_VERSION);
    put8(o, s->version);
    put32(o, s->expiry_s);
    put64(o, s->epoch);
    put8(o, s->username != NULL);
    if (s->username)
        put_str(o, s->username, strlen(s->username));
    put32(o, s->n_subs);
    for (uint32_t i = 0; i < s->n_subs; i++) {
        const struct session_sub *sub = s->subs[i];
        put_str(o, sub->filter, sub->filter_len);
        put8(o, sub->qos);
        put8(o, (uint8_t)(sub->no_local | sub->retain_as_published << 1 | sub->is_shared << 2));
        put8(o, sub->retain_handling);
        put32(o, sub->sub_id);
    }
    /* Incoming QoS 2 packet ids awaiting PUBREL: a resent PUBLISH must stay a duplicate. */
    uint32_t n_rx = s->q ? s->q->n_rx_qos2 : 0;
    put32(o, n_rx);
    for (uint32_t i = 0; i < n_rx; i++)
        put16(o, s->q->rx_qos2[i]);
    /* The will, so that a session whose node dies still has it published by whoever loads it
     * next. */
    const struct session_will *w = s->will;
    put8(o, w && w->m);
    if (w && w->m) {
        put8(o, w->qos);
        put8(o, w->retain);
        put32(o, w->delay_s);
        put32(o, w->expiry_s);
        size_t n = msg_blob_size(w->m);
        put32(o, (uint32_t)n);
        uint8_t *p = buf_reserve(o, n);
        msg_blob_write(w->m, p, clock_now_ms(), clock_wall_s() * 1000u);
        buf_commit(o, n);
    }
}

static void will_read(struct session *s, struct reader *r)
{
    if (!get(r, 1))
        return;
    uint8_t qos = (uint8_t)get(r, 1);
    bool retain = get(r, 1) != 0;
    uint32_t delay_s = (uint32_t)get(r, 4);
    uint32_t expiry_s = (uint32_t)get(r, 4);
    size_t n = (size_t)get(r, 4);
    if (r->is_bad || r->n < n || qos > 2) {
        r->is_bad = true;
        return;
    }
    struct msg *m = msg_blob_read(r->p, n, clock_now_ms(), clock_wall_s() * 1000u);
    r->p += n;
    r->n -= n;
    if (!m) {
        r->is_bad = true;
        return;
    }
    session_will_set(s, m, qos, retain, delay_s, expiry_s);
}

/* Fills a fresh session from a state blob, or with is_refresh, takes only the incoming QoS 2
 * packet ids from it (the session exists, routes already, and keeps its own will). Returns 0
 * or ERR_MALFORMED. */
static int state_read(struct session *s, const uint8_t *p, size_t n, bool is_refresh)
{
    struct reader r = {p, n, false};
    size_t len;

    uint8_t v = (uint8_t)get(&r, 1);
    if (v != 1 && v != PERSIST_STATE_VERSION)
        return ERR_MALFORMED;
    uint8_t version = (uint8_t)get(&r, 1);
    uint32_t expiry_s = (uint32_t)get(&r, 4);
    uint64_t epoch = get(&r, 8);
    const char *u = get(&r, 1) ? get_str(&r, &len) : NULL;
    if (!is_refresh) {
        s->version = version;
        s->expiry_s = expiry_s;
        s->epoch = epoch;
        if (u)
            s->username = xstrndup(u, len);
    }
    uint32_t n_subs = (uint32_t)get(&r, 4);
    for (uint32_t i = 0; i < n_subs && !r.is_bad; i++) {
        const char *f = get_str(&r, &len);
        uint8_t qos = (uint8_t)get(&r, 1);
        uint8_t flags = (uint8_t)get(&r, 1);
        uint8_t rh = (uint8_t)get(&r, 1);
        uint32_t sub_id = (uint32_t)get(&r, 4);
        if (r.is_bad || len == 0)
            break;
        if (is_refresh)
            continue;
        bool is_new;
        struct session_sub *sub = session_sub_add(s, f, len, &is_new);
        sub->qos = qos;
        sub->no_local = flags & 1;
        sub->retain_as_published = (flags >> 1) & 1;
        sub->is_shared = (flags >> 2) & 1;
        sub->retain_handling = rh;
        sub->sub_id = sub_id;
    }
    uint32_t n_rx = (uint32_t)get(&r, 4);
    for (uint32_t i = 0; i < n_rx && !r.is_bad && i < 65535; i++) {
        uint16_t pid = (uint16_t)get(&r, 2);
        if (!r.is_bad)
            (void)session_rx_qos2_seen(s, pid);
    }
    if (v >= 2 && !is_refresh)
        will_read(s, &r);
    return r.is_bad ? ERR_MALFORMED : 0;
}

static void dlv_write(const struct session_dlv *d, uint64_t key, struct buf *o)
{
    put8(o, 0);
    put64(o, key);
    put8(o, PERSIST_DLV_VERSION);
    put8(o, d->qos);
    put8(o, d->retain);
    put8(o, d->n_sub_ids);
    for (uint8_t i = 0; i < d->n_sub_ids; i++)
        put32(o, d->sub_ids[i]);
    /* Who published it and under which number: one message stored twice is told apart. */
    const char *pub = d->m->pub_seq ? d->m->pub_node : NULL;
    size_t pn = pub ? strlen(pub) : 0;
    put8(o, (uint8_t)pn);
    if (pn) {
        buf_append(o, pub, pn);
        put64(o, d->m->pub_seq);
    }
    size_t n = msg_blob_size(d->m);
    uint8_t *w = buf_reserve(o, n);
    msg_blob_write(d->m, w, clock_now_ms(), clock_wall_s() * 1000u);
    buf_commit(o, n);
}

/* Decodes a stored delivery; d->m gets a new reference, d->store_key its key (0 for an entry
 * stored without one). Returns 0 or ERR_MALFORMED. */
static int dlv_read(const uint8_t *p, size_t n, struct session_dlv *d)
{
    struct reader r = {p, n, false};
    memset(d, 0, sizeof(*d));
    if (n > PERSIST_KEYED_HDR && p[0] == 0) {
        (void)get(&r, 1);
        d->store_key = get(&r, STORE_ENTRY_KEY_LEN);
    }
    uint8_t v = (uint8_t)get(&r, 1);
    if (v != 1 && v != PERSIST_DLV_VERSION)
        return ERR_MALFORMED;
    d->qos = (uint8_t)get(&r, 1);
    d->retain = get(&r, 1) != 0;
    uint8_t k = (uint8_t)get(&r, 1);
    for (uint8_t i = 0; i < k && !r.is_bad; i++) {
        uint32_t id = (uint32_t)get(&r, 4);
        if (d->n_sub_ids < SESSION_MAX_SUB_IDS)
            d->sub_ids[d->n_sub_ids++] = id;
    }
    const char *pub = NULL;
    size_t pn = v >= 2 ? (size_t)get(&r, 1) : 0;
    uint64_t seq = 0;
    if (pn && !r.is_bad && r.n >= pn) {
        pub = names_intern((const char *)r.p, pn);
        r.p += pn;
        r.n -= pn;
        seq = get(&r, 8);
    } else if (pn) {
        r.is_bad = true;
    }
    if (r.is_bad || d->qos == 0 || d->qos > 2)
        return ERR_MALFORMED;
    d->m = msg_blob_read(r.p, r.n, clock_now_ms(), clock_wall_s() * 1000u);
    if (!d->m)
        return ERR_MALFORMED;
    if (pub && seq) {
        d->m->pub_node = pub;
        d->m->pub_seq = seq;
    }
    return 0;
}

/* ---- session writes --------------------------------------------------------------------- */

static void on_written(void *ctx, int rc)
{
    (void)ctx;
    /* A write refused because a newer owner claimed the session since is the fence at work
     * (a takeover raced this node's last writes for it), not a failure. */
    if (rc == ERR_EXISTS)
        log_ratelimited(LOG_LEVEL_INFO, "persist",
                        "session write refused: fenced by a newer owner");
    else if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "session write failed rc=%s", err_str(rc));
}

static void on_pushed(void *ctx, int rc);
static struct persist_wait *routing_wait(struct broker *b);

/* Writes the state; w (may be NULL) is an acknowledgement that waits for it. */
static void save_waited(struct session *s, uint64_t expires_at, struct persist_wait *w)
{
    struct buf *o = &s->b->persist_out;
    buf_reset(o);
    state_write(s, o);
    struct store_blob blob = {buf_head(o), buf_used(o)};
    int rc = store_session_save(s->b->store, s->client_id, s->epoch, blob, expires_at,
                                w ? on_pushed : on_written, w);
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "persist", "session write not started");
        if (w && w->err == 0)
            w->err = rc;
    } else if (w) {
        w->pending++;
    }
}

static void save(struct session *s, uint64_t expires_at)
{
    save_waited(s, expires_at, NULL);
}

static void on_saved_corked(void *ctx, int rc)
{
    struct conn *c = ctx;
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "persist",
                        "session state not stored, connection closed client_id=%s rc=%s",
                        conn_log_id(c), rc == ERR_EXISTS ? "fenced by a newer owner" : err_str(rc));
    conn_uncork(c, rc == 0 || rc == ERR_CANCELED);
}

/* Writes s's state and holds c's output (the acknowledgement just queued) until it is
 * stored. */
static void save_corked(struct session *s, struct conn *c)
{
    struct buf *o = &s->b->persist_out;
    buf_reset(o);
    state_write(s, o);
    struct store_blob blob = {buf_head(o), buf_used(o)};
    if (store_session_save(s->b->store, s->client_id, s->epoch, blob, 0, on_saved_corked, c) < 0)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "session write not started");
    else
        conn_cork(c);
}

void persist_save_acked(struct conn *c)
{
    if (c->s && persist_is_on(c->b) && is_persistent(c->s))
        save_corked(c->s, c);
}

void persist_save(struct session *s)
{
    if (!persist_is_on(s->b) || !is_persistent(s))
        return;
    bool is_open = s->conn || s->expiry_s == UINT32_MAX;
    save(s, is_open ? 0 : clock_wall_s() + s->expiry_s);
}

void persist_forget(struct session *s)
{
    if (persist_is_on(s->b))
        (void)store_session_delete(s->b->store, s->client_id, s->epoch, on_written, NULL);
}

static uint64_t push(struct session *s, const struct session_dlv *d, struct persist_wait *w,
                     bool is_limited);

void persist_detach(struct session *s)
{
    if (!persist_is_on(s->b) || !is_persistent(s))
        return;
    uint64_t at = s->expiry_s == UINT32_MAX ? 0 : clock_wall_s() + s->expiry_s;
    save(s, at);
    /* What was owed and not yet acknowledged is owed again at resume, in the same order. The
     * messages that came from the store are still there (they are trimmed on their acks), so
     * only the rest is appended. */
    struct session_q *q = s->q;
    for (uint32_t i = 0; q && i < q->n_inflight; i++) {
        const struct session_dlv *d = &q->inflight[i].d;
        if (d->m && !d->from_store)
            (void)push(s, d, NULL, true);
    }
    struct session_dlv d;
    while (q && session_queue_pop(s, &d)) {
        if (!d.from_store)
            (void)push(s, &d, NULL, true);
        msg_unref(&d.m);
    }
    session_queue_clear_inflight(s);
    s->stored_backlog = 0;
    s->is_stored = true;
}

/* ---- offline deliveries and the durable acknowledgement --------------------------------- */

static void flush_acks(struct session *s)
{
    struct session_q *q = s->q;
    while (q && q->acks && q->acks->pending == 0) {
        struct persist_wait *w = q->acks;
        q->acks = w->next;
        if (!q->acks)
            q->acks_tail = NULL;
        struct conn *c = s->conn;
        if (w->type == CODEC_PUBCOMP)
            w->err = 0; /* PUBCOMP has no way to say it; the id is released here either way */
        if (c && c->state == CONN_ACTIVE) {
            if (w->err < 0 && c->version != CODEC_V5) {
                /* 3.1.1 cannot say "not stored": closing makes the client send it again.
                 * Closing may end the session and its waits, so stop here. */
                free(w);
                handle_fail(c, ERR_SERVER_UNAVAILABLE);
                return;
            } else {
                struct codec_packet p = {0};
                p.type = w->type;
                p.u.ack.packet_id = w->pid;
                if (w->err < 0) {
                    int e = w->err == ERR_QUOTA ? ERR_QUOTA : ERR_SERVER_UNAVAILABLE;
                    p.u.ack.reason = handle_reason_code(e);
                    handle_reason_string(c, &p, e);
                }
                (void)conn_send(c, &p);
            }
        }
        free(w);
    }
}

/* One thing w waited for completed with rc. */
static void wait_done(struct persist_wait *w, int rc)
{
    if (!w)
        return;
    if (rc < 0 && w->err == 0)
        w->err = rc;
    if (--w->pending > 0)
        return;
    if (!w->is_queued) /* still being routed: handle_publish decides */
        return;
    if (w->is_forward) {
        mesh_forward_done(w->b, w->peer_uid, w->tok, w->err);
        free(w);
    } else if (w->s) {
        flush_acks(w->s);
    } else {
        free(w);
    }
}

static void on_pushed(void *ctx, int rc)
{
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "queued message not stored rc=%s", err_str(rc));
    wait_done(ctx, rc);
}

struct persist_wait *persist_hold(struct broker *b)
{
    struct persist_wait *w = routing_wait(b);
    if (w)
        w->pending++;
    return w;
}

struct broker *persist_wait_broker(const struct persist_wait *w)
{
    return w->b;
}

void persist_unhold(struct persist_wait *w, int rc)
{
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "forward to a member not acknowledged rc=%s",
                        err_str(rc));
    wait_done(w, rc);
}

void persist_forward_begin(struct broker *b)
{
    b->in_forward_wait = true;
}

void persist_forward_end(struct broker *b, uint64_t peer_uid, uint64_t tok)
{
    struct persist_wait *w = b->ack_wait;
    b->ack_wait = NULL;
    b->in_forward_wait = false;
    if (!w || w->pending == 0) {
        mesh_forward_done(b, peer_uid, tok, w ? w->err : 0);
        free(w);
        return;
    }
    w->is_forward = true;
    w->peer_uid = peer_uid;
    w->tok = tok;
    w->is_queued = true;
}

/* A key for a new stored entry. Keys only need to differ within one session's queue, which
 * entries from several nodes and node restarts share: each process counts on from a random
 * 64-bit start, so two runs meet only if their ranges overlap. */
static uint64_t next_key(struct broker *b)
{
    while (b->store_key_next == 0) {
        uint8_t r[8];
        if (digest_random(r, sizeof(r)) != 0)
            abort(); /* the OpenSSL generator does not fail once seeded */
        memcpy(&b->store_key_next, r, sizeof(r));
    }
    return b->store_key_next++;
}

/* Appends d to s's stored queue; w (may be NULL) waits for it. An offline session's queue
 * limits apply unless !is_limited. Returns the entry's key when issued, else 0. */
static uint64_t push(struct session *s, const struct session_dlv *d, struct persist_wait *w,
                     bool is_limited)
{
    const struct conf *cf = s->b->conf;
    struct buf *o = &s->b->persist_out;
    uint64_t key = next_key(s->b);
    buf_reset(o);
    dlv_write(d, key, o);
    struct store_blob blob = {buf_head(o), buf_used(o)};
    /* A connected session's local queue already applied the limits (and the stored queue
     * also holds its inflight window); an offline one is limited by the store. */
    bool is_offline = is_limited && s->conn == NULL && s->is_stored;
    int rc =
        store_queue_push(s->b->store, s->client_id, blob, is_offline ? cf->max_queued_messages : 0,
                         is_offline ? cf->max_queued_bytes : 0, on_pushed, w);
    if (rc < 0) {
        if (w && w->err == 0)
            w->err = rc;
        return 0;
    }
    if (w)
        w->pending++;
    return key;
}

static struct persist_wait *wait_for(struct broker *b, struct session *s)
{
    if (!b->ack_wait) {
        b->ack_wait = xcalloc(1, sizeof(*b->ack_wait));
        b->ack_wait->b = b;
        b->ack_wait->s = s;
    }
    return b->ack_wait;
}

static struct persist_wait *routing_wait(struct broker *b)
{
    if (b->in_forward_wait) {
        struct persist_wait *w = wait_for(b, NULL);
        w->b = b;
        return w;
    }
    if (!b->publisher || !b->publisher->s)
        return NULL;
    return wait_for(b, b->publisher->s);
}

void persist_save_before_ack(struct conn *c)
{
    struct session *s = c->s;
    if (s && persist_is_on(c->b) && is_persistent(s))
        save_waited(s, 0, wait_for(c->b, s));
}

void persist_deliver_offline(struct session *s, const struct session_dlv *d)
{
    if (d->qos == 0 || msg_is_expired(d->m, clock_now_ms()))
        return;
    (void)push(s, d, routing_wait(s->b), true);
}

uint64_t persist_deliver_online(struct session *s, const struct session_dlv *d)
{
    uint64_t key = push(s, d, routing_wait(s->b), true);
    if (key)
        s->stored_backlog++;
    return key;
}

bool persist_ack_defer(struct conn *c, uint8_t type, uint16_t pid)
{
    struct broker *b = c->b;
    struct persist_wait *w = b->ack_wait;
    struct session_q *q = c->s->q;

    b->ack_wait = NULL;
    if (!w && (!q || !q->acks))
        return false; /* the fast path: nothing stored, nothing waiting ahead of it */
    if (!w)
        w = xcalloc(1, sizeof(*w));
    w->s = c->s;
    w->type = type;
    w->pid = pid;
    w->is_queued = true;
    q = session_q_get(c->s);
    if (q->acks_tail)
        q->acks_tail->next = w;
    else
        q->acks = w;
    q->acks_tail = w;
    flush_acks(c->s);
    return true;
}

static void trim_issue(struct broker *b, struct session *s);

void persist_session_gone(struct session *s)
{
    struct session_q *q = s->q;
    if (q && q->n_trim_keys) {
        /* What it acknowledged last is trimmed still: the keys are all that is needed. */
        trim_issue(s->b, s);
        for (size_t i = 0; i < s->b->n_trims; i++)
            if (s->b->trims[i] == s)
                s->b->trims[i] = NULL;
    }
    if (q) {
        free(q->trim_keys);
        q->trim_keys = NULL;
        q->n_trim_keys = q->cap_trim_keys = 0;
    }
    while (q && q->acks) {
        struct persist_wait *w = q->acks;
        q->acks = w->next;
        w->s = NULL;
        w->next = NULL;
        if (w->pending == 0)
            free(w);
    }
    if (q)
        q->acks_tail = NULL;
}

/* Queues key for this loop pass's trim of s. */
static void trim_add(struct session *s, uint64_t key)
{
    struct broker *b = s->b;
    struct session_q *q = session_q_get(s);
    if (q->n_trim_keys == q->cap_trim_keys) {
        q->cap_trim_keys = q->cap_trim_keys ? q->cap_trim_keys * 2 : 8;
        q->trim_keys = xrealloc(q->trim_keys, q->cap_trim_keys * sizeof(*q->trim_keys));
    }
    q->trim_keys[q->n_trim_keys++] = key;
    if (q->n_trim_keys > 1)
        return;
    if (b->n_trims == b->cap_trims) {
        b->cap_trims = b->cap_trims ? b->cap_trims * 2 : 64;
        b->trims = xrealloc(b->trims, b->cap_trims * sizeof(*b->trims));
    }
    b->trims[b->n_trims++] = s;
}

void persist_dlv_done(struct session *s, const struct session_dlv *d)
{
    if (!d->from_store || !persist_is_on(s->b))
        return;
    if (s->stored_backlog > 0)
        s->stored_backlog--;
    /* Acknowledgements come in bursts: one trim per session per loop pass. */
    if (d->store_key)
        trim_add(s, d->store_key);
}

/* A trim in flight: what it takes to ask again if it fails. */
struct trim_req {
    struct broker *b;
    uint64_t epoch;
    uint32_t n;
    uint64_t *keys;
    char client_id[];
};

/*
 * A trim that failed for want of Redis is asked again while the session is still this node's
 * under the same epoch: trims name entries by key, so repeating one is harmless, and without it
 * the acknowledged messages would come back after the next restart. A trim refused as stale
 * (a newer owner) or cancelled (shutdown) is dropped.
 */
static void on_trimmed(void *ctx, int rc)
{
    struct trim_req *t = ctx;
    if (rc < 0 && rc != ERR_EXISTS && rc != ERR_CANCELED) {
        struct session *s = broker_session_find(t->b, t->client_id, strlen(t->client_id));
        log_ratelimited(LOG_LEVEL_WARN, "persist", "stored messages not trimmed n=%u rc=%s%s", t->n,
                        err_str(rc), s && s->epoch == t->epoch ? ", asking again" : "");
        for (uint32_t i = 0; s && s->epoch == t->epoch && i < t->n; i++)
            trim_add(s, t->keys[i]);
    }
    free(t->keys);
    free(t);
}

static void trim_issue(struct broker *b, struct session *s)
{
    struct session_q *q = s->q;
    uint32_t n = q->n_trim_keys;
    size_t len = s->client_id_len;
    struct trim_req *t = xmalloc(sizeof(*t) + len + 1);
    struct store_blob *ids = xmalloc(n * sizeof(*ids));
    uint8_t *be = xmalloc((size_t)n * STORE_ENTRY_KEY_LEN);

    t->b = b;
    t->epoch = s->epoch;
    t->n = n;
    t->keys = q->trim_keys;
    memcpy(t->client_id, s->client_id, len + 1);
    for (uint32_t i = 0; i < n; i++) {
        be_put(be + (size_t)i * STORE_ENTRY_KEY_LEN, t->keys[i], STORE_ENTRY_KEY_LEN);
        ids[i] = (struct store_blob){be + (size_t)i * STORE_ENTRY_KEY_LEN, STORE_ENTRY_KEY_LEN};
    }
    q->trim_keys = NULL;
    q->n_trim_keys = q->cap_trim_keys = 0;
    if (store_queue_trim(b->store, s->client_id, s->epoch, ids, n, on_trimmed, t) < 0) {
        free(t->keys);
        free(t);
    }
    free(ids);
    free(be);
}

void persist_flush_trims(struct broker *b)
{
    /* on_trimmed never runs from inside store_queue_trim, so the list stays as it is. */
    for (size_t i = 0; i < b->n_trims; i++) {
        struct session *s = b->trims[i];
        if (s && s->q && s->q->n_trim_keys)
            trim_issue(b, s);
    }
    b->n_trims = 0;
}

/* ---- resume ----------------------------------------------------------------------------- */

struct resume {
    struct conn *c;
    void (*cont)(void *ctx, int rc, uint64_t epoch);
    void *ctx;
    char *client_id;
    bool clean_start;
    bool is_taken_over; /* the previous owner was asked already */
    bool is_early;      /* the session was made here while the previous owner let go */
    int claim_rc;
    uint64_t epoch;
    char *prev_owner;
};

static void on_claimed(void *ctx, int rc, uint64_t epoch, const char *prev_owner,
                       uint64_t prev_epoch)
{
    struct resume *r = ctx;
    (void)prev_epoch;
    r->claim_rc = rc;
    r->epoch = epoch;
    free(r->prev_owner);
    r->prev_owner = prev_owner ? xstrdup(prev_owner) : NULL;
}

static void on_loaded(void *ctx, int rc, struct store_blob state, const struct store_blob *queue,
                      size_t n);

static void resume_free(struct resume *r)
{
    free(r->client_id);
    free(r->prev_owner);
    free(r);
}

/* The previous owner, another member, has closed the client and flushed its session: read
 * the session again, now complete. */
static void on_taken_over(void *ctx)
{
    struct resume *r = ctx;
    struct broker *b = r->c->b;
    struct session *s = broker_session_find(b, r->client_id, strlen(r->client_id));
    if (s && !s->conn)
        s->is_stored = false; /* from now on it queues locally, behind what the load returns */
    if (store_session_load(b->store, r->client_id, on_loaded, r) < 0) {
        r->cont(r->ctx, ERR_SERVER_UNAVAILABLE, r->epoch);
        resume_free(r);
    }
}

static struct session *session_from_state(struct broker *b, const char *id, struct store_blob state)
{
    struct session *s = session_create(b, id, strlen(id));
    if (state_read(s, state.p, state.len, false) < 0) {
        log_warn("persist", "stored session unreadable, dropped client_id_len=%zu", strlen(id));
        session_destroy(&s);
        return NULL;
    }
    return s;
}

struct stored_key {
    const char *node;
    uint64_t seq;
    size_t i;
    bool retain;
};

static int stored_key_cmp(const void *a, const void *b)
{
    const struct stored_key *x = a, *y = b;
    if (x->node != y->node)
        return (uintptr_t)x->node < (uintptr_t)y->node ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    if (x->retain != y->retain)
        return x->retain ? 1 : -1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * Marks in skip[] the later copies of a message stored twice for one session. That happens
 * when its node stored it and died before acknowledging the forward to the publisher's node:
 * the forward, parked for the dead node, is delivered again to whoever holds the session by
 * then, and lands in the stored queue a second time. Copies are told apart by publishing
 * node, its number, and the retain flag (a retained copy sent at subscribe is another
 * delivery of the same message).
 */
static void mark_copies(const struct session_dlv *ds, size_t n, bool *skip)
{
    struct stored_key *k = xmalloc(n * sizeof(*k));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!skip[i] && ds[i].m->pub_node)
            k[m++] = (struct stored_key){ds[i].m->pub_node, ds[i].m->pub_seq, i, ds[i].retain};
    qsort(k, m, sizeof(*k), stored_key_cmp);
    for (size_t j = 1; j < m; j++)
        if (k[j].node == k[j - 1].node && k[j].seq == k[j - 1].seq &&
            k[j].retain == k[j - 1].retain)
            skip[k[j].i] = true;
    free(k);
}

/*
 * Puts a resumed session's stored queue in front of its local one. Stored messages are older
 * than anything queued while the load ran, and leave the store only as they leave the session,
 * trimmed by key. An entry skipped here (unreadable, or a second copy) is trimmed at once. An
 * entry stored without a key (by an older version) is stored again with one, then removed by
 * its content, so that it can be trimmed like the others: in between, a crash leaves it twice,
 * never not at all.
 */
static void read_back(struct session *s, uint64_t epoch, const struct store_blob *queue, size_t n)
{
    if (n == 0)
        return;
    struct session_dlv *ds = xcalloc(n, sizeof(*ds));
    bool *skip = xcalloc(n, sizeof(*skip));
    struct store_blob *gone = NULL;
    size_t n_bad = 0, n_copies = 0, n_gone = 0;
    for (size_t i = 0; i < n; i++) {
        if (dlv_read(queue[i].p, queue[i].len, &ds[i]) < 0) {
            skip[i] = true;
            n_bad++;
        }
    }
    mark_copies(ds, n, skip);
    for (size_t i = 0; i < n; i++) {
        struct store_blob id = store_entry_id(queue[i]);
        bool is_keyed = id.len != queue[i].len;
        if (skip[i]) {
            if (ds[i].m)
                n_copies++;
        } else if (!is_keyed) {
            ds[i].store_key = push(s, &ds[i], NULL, false);
        }
        if (skip[i] || !is_keyed) {
            if (!gone)
                gone = xmalloc(n * sizeof(*gone));
            gone[n_gone++] = id;
        }
        if (!skip[i]) {
            ds[i].from_store = ds[i].store_key != 0;
            if (s->moved)
                mesh_moved_stored(s, ds[i].m);
        }
    }
    if (n_gone) /* after the appends above, on the same connection */
        (void)store_queue_trim(s->b->store, s->client_id, epoch, gone, n_gone, on_written, NULL);
    for (size_t i = n; i-- > 0;) {
        if (!skip[i]) {
            if (ds[i].from_store)
                s->stored_backlog++;
            session_queue_push_front(s, &ds[i]);
        }
        msg_unref(&ds[i].m);
    }
    free(gone);
    free(skip);
    free(ds);
    if (n_bad)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "stored messages unreadable n=%zu", n_bad);
    if (n_copies)
        log_ratelimited(LOG_LEVEL_INFO, "persist", "stored second copies skipped n=%zu", n_copies);
}

/*
 * While the previous owner lets go of a session, this node routes to it already, into the
 * store like any offline session. Otherwise a message published between the previous owner
 * dropping the session and the members learning this node's route would go nowhere. A
 * message that reached both nodes meanwhile is stored twice and read back once (read_back).
 * The previous owner deals with the will; the CONNECT brings its own.
 */
static void route_early(struct broker *b, struct resume *r, struct store_blob state)
{
    if (broker_session_find(b, r->client_id, strlen(r->client_id)))
        return; /* it routes here already */
    struct session *s = session_from_state(b, r->client_id, state);
    if (!s)
        return;
    session_will_set(s, NULL, 0, false, 0, 0);
    s->epoch = r->epoch;
    s->is_stored = true;
    r->is_early = true;
    /* What still reaches the previous owner comes on as a replay from it (node/mesh.c). */
    if (mesh_is_on(b))
        mesh_moved_mark(s, r->prev_owner);
    /* If the CONNECT goes no further, this node owns it like an adopted session. */
    session_offline_expiry(s);
}

static void on_loaded(void *ctx, int rc, struct store_blob state, const struct store_blob *queue,
                      size_t n)
{
    struct resume *r = ctx;
    struct conn *c = r->c;

    struct broker *b = c->b;

    if (rc == ERR_NOT_FOUND)
        rc = 0;
    if (rc == 0)
        rc = r->claim_rc;
    if (rc == 0 && mesh_is_superseded(b, r->client_id, r->epoch))
        rc = ERR_TAKEN_OVER; /* a newer CONNECT elsewhere won */
    if (rc == 0 && !r->is_taken_over && c->state == CONN_CONNECTING) {
        r->is_taken_over = true;
        if (mesh_takeover(b, r->prev_owner, r->client_id, r->epoch, on_taken_over, r)) {
            if (!r->clean_start && state.len > 0)
                route_early(b, r, state);
            return;
        }
    }
    if (rc == 0 && c->state == CONN_CONNECTING) {
        struct session *s = broker_session_find(b, r->client_id, strlen(r->client_id));
        bool is_loaded = false;
        if (!s && state.len > 0 && !r->clean_start) {
            s = session_from_state(b, r->client_id, state);
            is_loaded = s != NULL;
        } else if (s && r->is_early && !s->conn && state.len > 0 && !r->clean_start &&
                   state_read(s, state.p, state.len, true) < 0) {
            log_ratelimited(LOG_LEVEL_WARN, "persist", "stored session unreadable at takeover");
        }
        /* From another node, or from this node before a restart: messages parked for that
         * node may be owed to it. */
        if (s && !r->clean_start && r->prev_owner && mesh_is_on(b) &&
            (is_loaded || strcmp(r->prev_owner, b->conf->node_id) != 0))
            mesh_moved_mark(s, r->prev_owner);
        if (s && !s->conn && !r->clean_start)
            read_back(s, r->epoch, queue, n);
    }
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "persist", "session resume failed rc=%s", err_str(rc));
    r->cont(r->ctx, rc < 0 ? ERR_SERVER_UNAVAILABLE : 0, r->epoch);
    resume_free(r);
}

int persist_resume(struct conn *c, const char *client_id, size_t len, bool clean_start,
                   void (*cont)(void *ctx, int rc, uint64_t epoch), void *ctx)
{
    struct broker *b = c->b;
    if (!store_is_up(b->store))
        return ERR_SERVER_UNAVAILABLE;
    struct session *handed = broker_session_find(b, client_id, len);
    if (handed && handed->handed_to && !handed->conn)
        session_destroy(&handed); /* taken over lately: it is read back from the store */
    struct resume *r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->cont = cont;
    r->ctx = ctx;
    r->client_id = xstrndup(client_id, len);
    r->clean_start = clean_start;
    /* Requests complete in order, so the load's callback sees the claim's result. */
    int rc = store_owner_claim(b->store, r->client_id, on_claimed, r);
    if (rc == 0)
        rc = store_session_load(b->store, r->client_id, on_loaded, r);
    if (rc < 0) {
        free(r->client_id);
        free(r);
        return ERR_SERVER_UNAVAILABLE;
    }
    struct session *s = broker_session_find(b, client_id, len);
    if (s && !s->conn)
        s->is_stored = false; /* from now on it queues locally, behind what the load returns */
    return 0;
}

void persist_resumed(struct session *s, struct conn *c, uint64_t epoch)
{
    s->epoch = epoch;
    s->is_stored = false;
    if (is_persistent(s))
        save_corked(s, c);
    else
        persist_forget(s); /* it comes back without persistence: the stored one is over */
}

/* ---- start-up and adoption -------------------------------------------------------------- */

int persist_adopt(struct broker *b, const char *client_id, const struct store_blob *state,
                  uint64_t epoch, const char *from)
{
    if (broker_session_find(b, client_id, strlen(client_id)))
        return ERR_EXISTS; /* a CONNECT here got it first */
    struct session *s = session_from_state(b, client_id, *state);
    if (!s)
        return ERR_MALFORMED;
    s->epoch = epoch;
    s->is_stored = true;
    mesh_moved_mark(s, from);
    b->stats.adopted++;
    session_offline_expiry(s);
    /* Its connection ended with its node: the stored will goes out after its delay. */
    if (s->will)
        session__will_detach(s, ERR_IO);
    s = broker_session_find(b, client_id, strlen(client_id));
    if (s)
        persist_save(s); /* the state under the new epoch (and without a published will) */
    return 0;
}

struct load_all {
    struct broker *b;
    void (*done)(void *ctx, int rc);
    void *ctx;
};

static void on_scanned(void *ctx, int rc, const struct store_blob *pairs, size_t n)
{
    struct load_all *l = ctx;
    size_t loaded = 0;
    for (size_t i = 0; rc == 0 && i + 1 < n; i += 2) {
        char *id = xstrndup((const char *)pairs[i].p, pairs[i].len);
        if (!broker_session_find(l->b, id, pairs[i].len)) {
            struct session *s = session_from_state(l->b, id, pairs[i + 1]);
            if (s) {
                s->is_stored = true;
                session_offline_expiry(s);
                loaded++;
            }
        }
        free(id);
    }
    /* A stored will belongs to a connection that ended without DISCONNECT (a clean one
     * clears it): it goes out after its delay, once every session is in to receive it. */
    for (size_t i = 0; rc == 0 && i + 1 < n; i += 2) {
        struct session *s = broker_session_find(l->b, (const char *)pairs[i].p, pairs[i].len);
        if (s && s->will && !s->conn) {
            session__will_detach(s, ERR_IO);
            if (!s->will)
                persist_save(s); /* published: the stored state must not hold it again */
        }
    }
    if (rc < 0)
        log_error("persist", "cannot load sessions from the store rc=%s", err_str(rc));
    else
        log_info("persist", "sessions loaded n=%zu", loaded);
    l->done(l->ctx, rc);
    free(l);
}

int persist_load_all(struct broker *b, void (*done)(void *ctx, int rc), void *ctx)
{
    struct load_all *l = xcalloc(1, sizeof(*l));
    l->b = b;
    l->done = done;
    l->ctx = ctx;
    /* In a cluster each member holds the sessions it owns; the others route to them. */
    int rc = mesh_is_on(b) ? store_session_scan_owned(b->store, b->conf->node_id, on_scanned, l)
                           : store_session_scan(b->store, on_scanned, l);
    if (rc < 0)
        free(l);
    return rc;
}
