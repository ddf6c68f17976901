/*
 * Links, membership, routes, forwarding and takeover between the nodes of a cluster.
 *
 * Every pair of members keeps one TCP link. Both sides may dial (seeds do not say who is
 * behind them); when two links to one member exist, the one dialed by the smaller node id
 * stays. A peer is one incarnation of a member and outlives its links: forwards it has not
 * acknowledged are resent on the next link, and the receiver drops the ids it has seen. A
 * member whose link stays down (or silent) for CLUSTER_DEAD_MS is declared dead, unless the
 * member registry still lists it: it is then cut off (a partition), keeps its routes, and
 * what it would get is parked for it in the store until its link is back.
 *
 * Output is batched: frames are appended to the link's buffer and written once per loop pass
 * by cluster_flush, forwards included. Route changes are coalesced per pass into one delta.
 */
#include "cluster/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/log.h"
#include "node/msg.h"

#define CLUSTER_TICK_MS      250
#define CLUSTER_PING_MS      1000
#define CLUSTER_SILENT_MS    5000 /* a link with nothing received for this long is closed */
#define CLUSTER_DEAD_MS      5000 /* a peer without a link for this long is dead */
#define CLUSTER_GOSSIP_MS    3000
#define CLUSTER_DIGEST_MS    5000
#define CLUSTER_DNS_MS       5000
#define CLUSTER_DIAL_MIN_MS  200
#define CLUSTER_DIAL_MAX_MS  3000
#define CLUSTER_NONCE        16
#define CLUSTER_MAX_PENDING  262144 /* unacknowledged forwards per peer */
#define CLUSTER_BATCH_BYTES  (1u << 20)
#define CLUSTER_MAX_LINK_OUT (64u << 20) /* a link that cannot drain this is closed */
/* QoS 0 forwards are dropped rather than queued behind this much unwritten output. */
#define CLUSTER_QOS0_BACKLOG (16u << 20)
/* A link whose reading is held for sessions that cannot keep up is read again after this long
 * whatever their state, as a publisher is (node/broker.c). */
#define CLUSTER_HOLD_MAX_MS 1000
/* A link with this much unwritten output pauses the publishers feeding it (link_pressure hook)
 * until it is down to CLUSTER_PRESS_LOW; one that writes nothing for CLUSTER_PRESS_GIVEUP_MS
 * stops holding them back until it drains. */
#define CLUSTER_PRESS_HIGH      (4u << 20)
#define CLUSTER_PRESS_LOW       (1u << 20)
#define CLUSTER_PRESS_GIVEUP_MS 1000

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct route_set {
    char **v; /* open addressing; NULL = empty, TOMB = deleted */
    size_t cap;
    size_t n;
    size_t used; /* n plus tombstones */
    uint64_t digest;
};

static char tomb_mark;
#define TOMB (&tomb_mark)

struct pending_fwd {
    struct msg *m;
    cluster_forward_cb cb;
    void *ctx;
    bool is_acked;
    bool plain;
    /* groups_len bytes of shared groups it goes to (NUL-separated), then replay_len bytes
     * naming a parked message sent again ("REPLAY_OF\0PUB_NODE\0"); NULL when both are 0 */
    char *extra;
    size_t groups_len;
    size_t replay_len;
};

struct link;

struct cluster_peer {
    struct cluster *c;
    uint64_t uid;
    struct cluster_peer *next;
    char *node_id;
    char *advertise;
    uint64_t incarnation;
    struct link *link; /* the attached link, NULL while down */
    uint64_t down_since_ms;
    bool is_joined; /* its snapshot arrived: peer_up was called */
    bool is_gone;
    bool is_cut;             /* unreachable but listed alive: what it would get is parked */
    struct route_set routes; /* its route set as we know it */
    uint64_t route_seq;
    bool snapshot_asked;
    /* Outgoing acknowledged forwards: ids first_id .. first_id + n - 1, in a ring. */
    struct pending_fwd *pend;
    size_t pend_cap;
    size_t pend_head;
    size_t pend_n;
    uint64_t first_id;
    size_t unsent_from; /* pending index (from head) not yet written on the current link */
    /* This pass's batch: forwards as blobs in batch_buf, described by batch. */
    struct buf batch_buf;
    struct fwd_ref *batch;
    size_t n_batch;
    size_t cap_batch;
    /* Incoming: the highest forward id seen, and ids delivered but not yet durable. */
    uint64_t rx_max_id;
    struct rx_busy *rx_busy; /* in id order; done ones leave from the front */
    size_t rx_head;
    size_t n_rx_busy;
    size_t cap_rx_busy;
    uint64_t *fails; /* forwards not stored here, reported in the next ForwardAck */
    size_t n_fails;
    size_t cap_fails;
    uint64_t *acks;
    size_t n_acks;
    size_t cap_acks;
};

struct rx_busy {
    uint64_t id;
    bool is_done;
};

struct fwd_ref {
    uint64_t id;
    size_t off; /* the message blob in batch_buf, then its groups (NUL-separated), then its
                 * replay strings */
    size_t len;
    size_t groups_len;
    size_t replay_len;
    uint64_t pub_seq;
    bool plain;
};

struct link {
    uv_tcp_t tcp;
    struct cluster *c;
    struct link *next;
    struct cluster_peer *peer; /* once attached */
    struct seed *seed;         /* the seed it was dialed for */
    struct buf in;
    struct buf out;
    uv_connect_t connect;
    bool is_dialer;
    bool is_connected;
    bool is_closing;
    bool got_hello;
    bool is_proven;
    uint64_t last_rx_ms;
    uint64_t last_ping_ms;
    uint8_t nonce[CLUSTER_NONCE];
    uint8_t peer_nonce[CLUSTER_NONCE];
    char *peer_id;
    char *peer_advertise;
    uint64_t peer_incarnation;
    size_t write_bytes; /* queued in uv_write requests */
    bool is_fenced;     /* sent the fence Ping, its Ack not back yet */
    bool is_held;       /* not read for now: sessions here cannot keep up (cluster_hold) */
    uint64_t held_ms;
    size_t fwd_done; /* forwards of the first frame in `in` handled before a hold */
    bool is_pressed; /* over CLUSTER_PRESS_HIGH: publishers feeding it wait */
    bool is_press_exempt;
    uint64_t written_ms; /* when a write last completed, or the pressure began */
};

struct seed {
    struct seed *next;
    char *host;
    char *port;
    struct cluster *c;
    struct link *link;
    char *node_id; /* who answered last time */
    uint64_t next_try_ms;
    uint32_t backoff_ms;
    uv_getaddrinfo_t gai;
    bool is_resolving;
    bool is_self;
    bool is_dns; /* from cluster_dns: dropped when the name no longer lists it */
};

struct takeover_req {
    struct takeover_req *next;
    uint64_t req;
    struct cluster_peer *p;
    uint64_t deadline_ms;
    void (*cb)(void *ctx, int rc);
    void *ctx;
};

struct cluster {
    uv_loop_t *loop;
    struct cluster_hooks h;
    size_t n_held; /* links not read for now (cluster_hold) */
    char *node_id;
    char *name;
    char *advertise;
    char *dns;
    uint8_t *secret;
    size_t secret_len;
    uint16_t port;
    uint64_t incarnation;
    uv_tcp_t listener;
    uv_timer_t tick;
    uv_getaddrinfo_t dns_gai;
    bool dns_busy;
    int open_handles;
    bool is_closing;
    struct link *links;
    struct cluster_peer *peers;
    struct seed *seeds;
    struct route_set local;
    uint64_t local_seq;
    char **touched; /* filters changed this pass */
    size_t n_touched;
    size_t cap_touched;
    struct takeover_req *takeovers;
    uint64_t next_req;
    uint64_t next_uid;
    uint64_t last_gossip_ms;
    uint64_t last_digest_ms;
    uint64_t last_dns_ms;
    uint64_t fence_seq; /* the Ping of the last cluster_fence(), 0 = none */
    struct cluster_stats stats;
};

static void link_close(struct link *l, const char *why);
static void peer_attach(struct cluster_peer *p, struct link *l);
static void peer_dead(struct cluster_peer *p, bool is_dead);
static void send_routes_snapshot(struct cluster *c, struct link *l);
static void send_members(struct cluster *c, struct link *l);

/* ---- route sets ------------------------------------------------------------------------- */

static size_t rs_slot(const struct route_set *rs, const char *f, size_t len, bool *found)
{
    size_t mask = rs->cap - 1;
    size_t i = (size_t)wire_route_hash(f, len) & mask;
    size_t first_tomb = SIZE_MAX;
    for (;;) {
        char *e = rs->v[i];
        if (e == NULL) {
            *found = false;
            return first_tomb != SIZE_MAX ? first_tomb : i;
        }
        if (e == TOMB) {
            if (first_tomb == SIZE_MAX)
                first_tomb = i;
        } else if (strlen(e) == len && memcmp(e, f, len) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static void rs_grow(struct route_set *rs)
{
    size_t old_cap = rs->cap;
    char **old = rs->v;
    rs->cap = old_cap ? old_cap * 2 : 16;
    while (rs->n * 2 >= rs->cap)
        rs->cap *= 2;
    rs->v = xcalloc(rs->cap, sizeof(*rs->v));
    rs->used = rs->n;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i] && old[i] != TOMB) {
            bool found;
            rs->v[rs_slot(rs, old[i], strlen(old[i]), &found)] = old[i];
        }
    }
    free(old);
}

static bool rs_has(const struct route_set *rs, const char *f, size_t len)
{
    bool found = false;
    if (rs->cap)
        (void)rs_slot(rs, f, len, &found);
    return found;
}

/* Returns true when f was not there. */
static bool rs_add(struct route_set *rs, const char *f, size_t len)
{
    if ((rs->used + 1) * 2 >= rs->cap)
        rs_grow(rs);
    bool found;
    size_t i = rs_slot(rs, f, len, &found);
    if (found)
        return false;
    if (rs->v[i] == NULL)
        rs->used++;
    rs->v[i] = xstrndup(f, len);
    rs->n++;
    rs->digest += wire_route_hash(f, len);
    return true;
}

static bool rs_remove(struct route_set *rs, const char *f, size_t len)
{
    bool found = false;
    size_t i = rs->cap ? rs_slot(rs, f, len, &found) : 0;
    if (!found)
        return false;
    free(rs->v[i]);
    rs->v[i] = TOMB;
    rs->n--;
    rs->digest -= wire_route_hash(f, len);
    return true;
}

static void rs_free(struct route_set *rs)
{
    for (size_t i = 0; i < rs->cap; i++)
        if (rs->v[i] != TOMB)
            free(rs->v[i]);
    free(rs->v);
    memset(rs, 0, sizeof(*rs));
}

/* ---- helpers ---------------------------------------------------------------------------- */

static struct wire_str ws(const char *s)
{
    return (struct wire_str){s, s ? strlen(s) : 0};
}

static struct cluster_peer *peer_find(const struct cluster *c, const char *node_id)
{
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (!p->is_gone && strcmp(p->node_id, node_id) == 0)
            return p;
    return NULL;
}

/* ---- writing ---------------------------------------------------------------------------- */

struct wreq {
    uv_write_t req;
    struct link *l;
    struct buf b;
};

static void press_set(struct link *l, bool on)
{
    struct cluster *c = l->c;
    if (l->is_pressed == on)
        return;
    l->is_pressed = on;
    if (c->h.link_pressure)
        c->h.link_pressure(c->h.ctx, on);
}

/* Publishers feeding a link that cannot write out what it has wait, as for a slow consumer. */
static void press_check(struct link *l)
{
    size_t backlog = buf_used(&l->out) + l->write_bytes;
    if (backlog <= CLUSTER_PRESS_LOW) {
        l->is_press_exempt = false;
        press_set(l, false);
    } else if (backlog > CLUSTER_PRESS_HIGH && !l->is_pressed && !l->is_press_exempt) {
        l->written_ms = clock_now_ms();
        press_set(l, true);
    }
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = container_of(req, struct wreq, req);
    struct link *l = w->l;
    l->write_bytes -= buf_used(&w->b);
    l->written_ms = clock_now_ms();
    buf_free(&w->b);
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        link_close(l, "write failed");
    else if (!l->is_closing)
        press_check(l);
}

static void link_write(struct link *l)
{
    if (l->is_closing || !l->is_connected || buf_used(&l->out) == 0)
        return;
    struct wreq *w = xcalloc(1, sizeof(*w));
    w->l = l;
    w->b = l->out;
    memset(&l->out, 0, sizeof(l->out));
    uv_buf_t v = uv_buf_init((char *)buf_head(&w->b), (unsigned)buf_used(&w->b));
    int rc = uv_write(&w->req, (uv_stream_t *)&l->tcp, &v, 1, on_written);
    if (rc < 0) {
        buf_free(&w->b);
        free(w);
        link_close(l, "write failed");
        return;
    }
    l->write_bytes += v.len;
    if (l->write_bytes > CLUSTER_MAX_LINK_OUT)
        link_close(l, "peer does not read");
    else
        press_check(l);
}

/* ---- links ------------------------------------------------------------------------------ */

/* One handle or request of the cluster finished closing; the last one frees it. */
static void handles_dec(struct cluster *c)
{
    if (--c->open_handles == 0 && c->is_closing)
        free(c);
}

static void on_link_closed(uv_handle_t *h)
{
    struct link *l = container_of((uv_tcp_t *)h, struct link, tcp);
    struct cluster *c = l->c;
    buf_free(&l->in);
    buf_free(&l->out);
    free(l->peer_id);
    free(l->peer_advertise);
    free(l);
    handles_dec(c);
}

static void link_close(struct link *l, const char *why)
{
    struct cluster *c = l->c;
    if (l->is_closing)
        return;
    l->is_closing = true;
    if (l->is_held) {
        l->is_held = false;
        c->n_held--;
    }
    press_set(l, false);
    if (l->peer_id && !c->is_closing)
        log_info("cluster", "link closed peer=%s why=%s", l->peer_id, why);
    for (struct link **pp = &c->links; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    if (l->seed && l->seed->link == l)
        l->seed->link = NULL;
    struct cluster_peer *p = l->peer;
    if (p && p->link == l) {
        p->link = NULL;
        p->down_since_ms = clock_now_ms();
    }
    uv_close((uv_handle_t *)&l->tcp, on_link_closed);
}

static void send_hello(struct cluster *c, struct link *l)
{
    (void)uv_random(NULL, NULL, l->nonce, sizeof(l->nonce), 0, NULL);
    struct wire_hello h = {
        .cluster_name = ws(c->name),
        .node_id = ws(c->node_id),
        .incarnation = c->incarnation,
        .protocol_version = WIRE_PROTOCOL_VERSION,
        .nonce = {l->nonce, sizeof(l->nonce)},
        .advertise = ws(c->advertise),
    };
    wire_put_hello(&l->out, &h);
    link_write(l);
}

static void proof_of(struct cluster *c, const uint8_t nonce[CLUSTER_NONCE], const char *node_id,
                     uint8_t out[32])
{
    size_t n = strlen(node_id);
    uint8_t *data = xmalloc(CLUSTER_NONCE + n);
    memcpy(data, nonce, CLUSTER_NONCE);
    memcpy(data + CLUSTER_NONCE, node_id, n);
    c->h.hmac(c->secret, c->secret_len, data, CLUSTER_NONCE + n, out);
    free(data);
}

static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* The member behind l is known and trusted: bind l to its peer. */
static void link_ready(struct link *l)
{
    struct cluster *c = l->c;
    struct cluster_peer *p = peer_find(c, l->peer_id);

    if (p && p->incarnation > l->peer_incarnation) {
        link_close(l, "stale incarnation");
        return;
    }
    if (p && p->incarnation < l->peer_incarnation) {
        log_info("cluster", "member restarted peer=%s", p->node_id);
        peer_dead(p, true);
        p = NULL;
    }
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        p->c = c;
        p->uid = ++c->next_uid;
        p->node_id = xstrdup(l->peer_id);
        p->incarnation = l->peer_incarnation;
        p->first_id = 1;
        p->next = c->peers;
        c->peers = p;
    }
    free(p->advertise);
    p->advertise = xstrdup(l->peer_advertise ? l->peer_advertise : "");
    if (p->link && p->link != l) {
        /* Two links to one member: both ends keep the one dialed by the smaller node id. */
        bool l_smaller_dialer =
            l->is_dialer ? strcmp(c->node_id, p->node_id) < 0 : strcmp(p->node_id, c->node_id) < 0;
        if (!l_smaller_dialer) {
            link_close(l, "duplicate link");
            return;
        }
        link_close(p->link, "duplicate link");
    }
    peer_attach(p, l);
}

static void handle_hello(struct link *l, const struct wire_hello *h)
{
    struct cluster *c = l->c;
    if (l->got_hello) {
        link_close(l, "second hello");
        return;
    }
    l->got_hello = true;
    l->peer_id = xstrndup(h->node_id.p, h->node_id.len);
    l->peer_advertise = xstrndup(h->advertise.p, h->advertise.len);
    l->peer_incarnation = h->incarnation;
    if (l->seed) {
        free(l->seed->node_id);
        l->seed->node_id = xstrdup(l->peer_id);
    }
    if (strcmp(l->peer_id, c->node_id) == 0) {
        if (l->seed && h->incarnation == c->incarnation)
            l->seed->is_self = true;
        link_close(l, h->incarnation == c->incarnation ? "self" : "duplicate node id");
        return;
    }
    if (h->cluster_name.len != strlen(c->name) ||
        memcmp(h->cluster_name.p, c->name, h->cluster_name.len) != 0) {
        c->stats.links_refused++;
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "refused peer=%s why=cluster name differs",
                        l->peer_id);
        link_close(l, "cluster name differs");
        return;
    }
    if (h->protocol_version != WIRE_PROTOCOL_VERSION || h->nonce.len != CLUSTER_NONCE) {
        c->stats.links_refused++;
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "refused peer=%s why=protocol version %u",
                        l->peer_id, h->protocol_version);
        link_close(l, "protocol version");
        return;
    }
    memcpy(l->peer_nonce, h->nonce.p, CLUSTER_NONCE);
    if (!c->secret) {
        l->is_proven = true;
        link_ready(l);
        return;
    }
    uint8_t mac[32];
    proof_of(c, l->peer_nonce, c->node_id, mac);
    wire_put_proof(&l->out, (struct wire_bytes){mac, sizeof(mac)});
    link_write(l);
}

static void handle_proof(struct link *l, struct wire_bytes mac)
{
    struct cluster *c = l->c;
    uint8_t want[32];
    if (!c->secret || !l->got_hello || l->is_proven) {
        link_close(l, "unexpected proof");
        return;
    }
    proof_of(c, l->nonce, l->peer_id, want);
    if (mac.len != sizeof(want) || !same_bytes(mac.p, want, sizeof(want))) {
        c->stats.links_refused++;
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "refused peer=%s why=bad secret proof",
                        l->peer_id);
        link_close(l, "bad secret proof");
        return;
    }
    l->is_proven = true;
    link_ready(l);
}

/* ---- peers ------------------------------------------------------------------------------ */

static struct pending_fwd *pend_at(struct cluster_peer *p, size_t i)
{
    return &p->pend[(p->pend_head + i) % p->pend_cap];
}

static void write_pending(struct cluster_peer *p);

static void peer_attach(struct cluster_peer *p, struct link *l)
{
    struct cluster *c = p->c;
    l->peer = p;
    p->link = l;
    p->down_since_ms = 0;
    if (p->is_cut) {
        p->is_cut = false;
        log_info("cluster", "member reachable again peer=%s", p->node_id);
    }
    log_info("cluster", "link up peer=%s dialer=%d", p->node_id, l->is_dialer);
    send_routes_snapshot(c, l);
    send_members(c, l);
    /* What the last link did not get acknowledged goes again, in order. */
    if (p->pend_n > 0)
        c->stats.forwards_retried += p->unsent_from;
    p->unsent_from = 0;
    write_pending(p);
    link_write(l);
}

static void complete(struct cluster_peer *p, cluster_forward_cb cb, void *ctx, int rc,
                     struct msg *m, uint64_t id, bool plain, const char *groups, size_t groups_len)
{
    struct cluster_fwd_info fi = {p->node_id, p->incarnation, id, plain, groups, groups_len};
    cb(ctx, rc, m, &fi);
}

static void fail_pending(struct cluster_peer *p, int rc)
{
    while (p->pend_n > 0) {
        struct pending_fwd *e = pend_at(p, 0);
        struct pending_fwd f = *e;
        memset(e, 0, sizeof(*e));
        p->pend_head = (p->pend_head + 1) % p->pend_cap;
        p->pend_n--;
        if (!f.is_acked && f.cb)
            complete(p, f.cb, f.ctx, rc, f.m, p->first_id, f.plain, f.extra, f.groups_len);
        p->first_id++;
        msg_unref(&f.m);
        free(f.extra);
    }
    p->unsent_from = 0;
}

/*
 * The member cannot be reached, yet the registry lists it alive: a partition. Its routes stay.
 * The forwards it has not acknowledged complete with ERR_IO (they are parked for it) and stay
 * queued: once the link is back they go again, and it drops whichever it already took, from
 * the link or from the park (cluster_parked_admit). Takeovers asked of it are answered as not
 * reachable, to be asked again when it is back.
 */
static void peer_cut(struct cluster_peer *p)
{
    struct cluster *c = p->c;
    p->is_cut = true;
    c->stats.members_cut++;
    log_warn("cluster", "member cut off peer=%s (listed alive; its messages are parked)",
             p->node_id);
    for (struct takeover_req *t = c->takeovers; t; t = t->next)
        if (t->p == p)
            t->deadline_ms = 0;
    for (size_t i = 0; i < p->pend_n; i++) {
        struct pending_fwd *e = pend_at(p, i);
        if (e->is_acked || !e->cb)
            continue;
        cluster_forward_cb cb = e->cb;
        e->cb = NULL;
        complete(p, cb, e->ctx, ERR_IO, e->m, p->first_id + i, e->plain, e->extra, e->groups_len);
    }
}

static bool is_listed(const struct cluster *c, const struct cluster_peer *p)
{
    return c->h.is_listed && c->h.is_listed(c->h.ctx, p->node_id);
}

static void peer_free(struct cluster_peer *p)
{
    rs_free(&p->routes);
    buf_free(&p->batch_buf);
    free(p->batch);
    free(p->pend);
    free(p->rx_busy);
    free(p->fails);
    free(p->acks);
    free(p->node_id);
    free(p->advertise);
    free(p);
}

/* The peer is over: its routes go, unacknowledged forwards fail, and it is freed. */
static void peer_dead(struct cluster_peer *p, bool is_dead)
{
    struct cluster *c = p->c;
    p->is_gone = true;
    if (p->link) {
        struct link *l = p->link;
        p->link = NULL;
        l->peer = NULL;
        link_close(l, is_dead ? "peer dead" : "peer left");
    }
    for (struct link *l = c->links; l; l = l->next)
        if (l->peer == p)
            l->peer = NULL;
    for (struct takeover_req *t = c->takeovers; t; t = t->next)
        if (t->p == p)
            t->deadline_ms = 0; /* answered ERR_NOT_FOUND on the next tick */
    if (p->is_joined && !c->is_closing) {
        log_info("cluster", "member down peer=%s dead=%d", p->node_id, is_dead);
        for (size_t i = 0; i < p->routes.cap; i++) {
            char *f = p->routes.v[i];
            if (f && f != TOMB)
                c->h.route_remove(c->h.ctx, p, f, strlen(f));
        }
        if (c->h.peer_down)
            c->h.peer_down(c->h.ctx, p, p->node_id, is_dead);
    }
    fail_pending(p, c->is_closing ? ERR_CANCELED : ERR_IO);
    for (struct cluster_peer **pp = &c->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    peer_free(p);
}

/* ---- routes ----------------------------------------------------------------------------- */

static void send_routes_snapshot(struct cluster *c, struct link *l)
{
    struct wire_str *v = xmalloc((c->local.n + 1) * sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < c->local.cap; i++) {
        char *f = c->local.v[i];
        if (f && f != TOMB)
            v[n++] = ws(f);
    }
    wire_put_route_snapshot(&l->out, c->local_seq, v, n);
    free(v);
}

static void apply_snapshot(struct cluster_peer *p, uint64_t seq, const struct wire_str *v, size_t n)
{
    struct cluster *c = p->c;
    struct route_set fresh = {0};
    for (size_t i = 0; i < n; i++)
        (void)rs_add(&fresh, v[i].p, v[i].len);
    for (size_t i = 0; i < p->routes.cap; i++) {
        char *f = p->routes.v[i];
        if (f && f != TOMB && !rs_has(&fresh, f, strlen(f)) && p->is_joined)
            c->h.route_remove(c->h.ctx, p, f, strlen(f));
    }
    for (size_t i = 0; i < n; i++)
        if (!p->is_joined || !rs_has(&p->routes, v[i].p, v[i].len))
            c->h.route_add(c->h.ctx, p, v[i].p, v[i].len);
    rs_free(&p->routes);
    p->routes = fresh;
    p->route_seq = seq;
    p->snapshot_asked = false;
    c->stats.route_snapshots++;
    if (!p->is_joined) {
        p->is_joined = true;
        log_info("cluster", "member joined peer=%s routes=%zu", p->node_id, n);
        if (c->h.peer_up)
            c->h.peer_up(c->h.ctx, p, p->node_id);
    }
}

static void ask_snapshot(struct cluster_peer *p)
{
    if (p->snapshot_asked || !p->link)
        return;
    p->snapshot_asked = true;
    wire_put_route_snapshot_request(&p->link->out, p->route_seq);
}

static void apply_delta(struct cluster_peer *p, const struct wire_frame *f)
{
    struct cluster *c = p->c;
    if (!p->is_joined)
        return; /* the snapshot on its way covers it */
    if (f->u.route_delta.seq <= p->route_seq)
        return;
    if (f->u.route_delta.seq != p->route_seq + 1) {
        ask_snapshot(p);
        return;
    }
    p->route_seq = f->u.route_delta.seq;
    for (size_t i = 0; i < f->u.route_delta.n_added; i++) {
        const struct wire_str *s = &f->u.route_delta.added[i];
        if (rs_add(&p->routes, s->p, s->len))
            c->h.route_add(c->h.ctx, p, s->p, s->len);
    }
    for (size_t i = 0; i < f->u.route_delta.n_removed; i++) {
        const struct wire_str *s = &f->u.route_delta.removed[i];
        if (rs_remove(&p->routes, s->p, s->len))
            c->h.route_remove(c->h.ctx, p, s->p, s->len);
    }
}

void cluster_route_add(struct cluster *c, const char *filter, size_t len)
{
    if (!rs_add(&c->local, filter, len))
        return;
    if (c->n_touched == c->cap_touched) {
        c->cap_touched = c->cap_touched ? c->cap_touched * 2 : 64;
        c->touched = xrealloc(c->touched, c->cap_touched * sizeof(*c->touched));
    }
    c->touched[c->n_touched++] = xstrndup(filter, len);
}

void cluster_route_remove(struct cluster *c, const char *filter, size_t len)
{
    if (!rs_remove(&c->local, filter, len))
        return;
    if (c->n_touched == c->cap_touched) {
        c->cap_touched = c->cap_touched ? c->cap_touched * 2 : 64;
        c->touched = xrealloc(c->touched, c->cap_touched * sizeof(*c->touched));
    }
    c->touched[c->n_touched++] = xstrndup(filter, len);
}

/* One delta per pass, from the final state of every filter touched in it. */
static void flush_routes(struct cluster *c)
{
    if (c->n_touched == 0)
        return;
    struct wire_str *add = xmalloc(c->n_touched * sizeof(*add));
    struct wire_str *rem = xmalloc(c->n_touched * sizeof(*rem));
    size_t na = 0, nr = 0;
    struct route_set seen = {0};
    for (size_t i = 0; i < c->n_touched; i++) {
        const char *f = c->touched[i];
        size_t len = strlen(f);
        if (!rs_add(&seen, f, len))
            continue;
        if (rs_has(&c->local, f, len))
            add[na++] = ws(f);
        else
            rem[nr++] = ws(f);
    }
    c->local_seq++;
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->link)
            wire_put_route_delta(&p->link->out, c->local_seq, add, na, rem, nr);
    rs_free(&seen);
    for (size_t i = 0; i < c->n_touched; i++)
        free(c->touched[i]);
    c->n_touched = 0;
    free(add);
    free(rem);
}

static void send_digests(struct cluster *c)
{
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->link)
            wire_put_route_digest(&p->link->out, c->local_seq, c->local.digest,
                                  (uint32_t)c->local.n);
}

static void check_digest(struct cluster_peer *p, const struct wire_frame *f)
{
    if (!p->is_joined || f->u.route_digest.seq != p->route_seq) {
        if (p->is_joined && f->u.route_digest.seq > p->route_seq)
            ask_snapshot(p);
        return;
    }
    if (f->u.route_digest.digest != p->routes.digest || f->u.route_digest.count != p->routes.n) {
        log_warn("cluster", "route digest differs, asking a snapshot peer=%s", p->node_id);
        ask_snapshot(p);
    }
}

/* ---- members ---------------------------------------------------------------------------- */

static void send_members(struct cluster *c, struct link *l)
{
    size_t n = 1;
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        n++;
    struct wire_member *v = xmalloc(n * sizeof(*v));
    v[0] = (struct wire_member){ws(c->node_id), ws(c->advertise), c->incarnation};
    n = 1;
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->is_joined && p->link)
            v[n++] = (struct wire_member){ws(p->node_id), ws(p->advertise), p->incarnation};
    wire_put_members(&l->out, v, n);
    free(v);
}

static void learn_members(struct cluster *c, const struct wire_frame *f)
{
    for (size_t i = 0; i < f->u.members.n; i++) {
        const struct wire_member *m = &f->u.members.v[i];
        if (strcmp(m->node_id.p, c->node_id) == 0 || m->advertise.len == 0)
            continue;
        cluster_add_member(c, m->node_id.p, m->advertise.p);
    }
}

/* ---- forwarding ------------------------------------------------------------------------- */

/* extra: groups_len bytes of groups, then replay_len bytes of replay strings. */
static void batch_add(struct cluster_peer *p, uint64_t id, const struct msg *m, bool plain,
                      const char *extra, size_t groups_len, size_t replay_len)
{
    if (p->n_batch == p->cap_batch) {
        p->cap_batch = p->cap_batch ? p->cap_batch * 2 : 16;
        p->batch = xrealloc(p->batch, p->cap_batch * sizeof(*p->batch));
    }
    size_t len = msg_blob_size(m);
    size_t off = buf_used(&p->batch_buf);
    uint8_t *w = buf_reserve(&p->batch_buf, len + groups_len + replay_len);
    msg_blob_write(m, w, clock_now_ms(), clock_wall_s() * 1000u);
    if (groups_len + replay_len)
        memcpy(w + len, extra, groups_len + replay_len);
    buf_commit(&p->batch_buf, len + groups_len + replay_len);
    p->batch[p->n_batch++] =
        (struct fwd_ref){id, off, len, groups_len, replay_len, m->pub_seq, plain};
}

/* Number of NUL-terminated strings in a packed group list. */
static size_t groups_count(const char *g, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += g[i] == '\0';
    return n;
}

static void flush_batch(struct cluster_peer *p)
{
    if (p->n_batch == 0)
        return;
    if (!p->link) {
        p->n_batch = 0;
        buf_reset(&p->batch_buf);
        return;
    }
    struct wire_fwd *v = xmalloc(p->n_batch * sizeof(*v));
    size_t n_groups = 0;
    for (size_t i = 0; i < p->n_batch; i++)
        if (p->batch[i].groups_len)
            n_groups += groups_count((const char *)buf_head(&p->batch_buf) + p->batch[i].off +
                                         p->batch[i].len,
                                     p->batch[i].groups_len);
    struct wire_str *gv = n_groups ? xmalloc(n_groups * sizeof(*gv)) : NULL;
    size_t start = 0, bytes = 0, gi = 0;
    for (size_t i = 0; i < p->n_batch; i++) {
        const struct fwd_ref *r = &p->batch[i];
        v[i] = (struct wire_fwd){.id = r->id,
                                 .msg = {buf_head(&p->batch_buf) + r->off, r->len},
                                 .plain = r->plain,
                                 .shared = gv ? gv + gi : NULL,
                                 .pub_seq = r->pub_seq};
        const char *g = (const char *)buf_head(&p->batch_buf) + r->off + r->len;
        if (r->replay_len) {
            const char *rp = g + r->groups_len;
            size_t l = strlen(rp);
            v[i].replay_of = (struct wire_str){rp, l};
            v[i].pub_node = (struct wire_str){rp + l + 1, strlen(rp + l + 1)};
        }
        for (size_t k = 0; k < r->groups_len;) {
            size_t l = strlen(g + k);
            gv[gi++] = (struct wire_str){g + k, l};
            v[i].n_shared++;
            k += l + 1;
        }
        bytes += r->len;
        if (bytes >= CLUSTER_BATCH_BYTES || i + 1 == p->n_batch) {
            wire_put_forward(&p->link->out, v + start, i + 1 - start);
            start = i + 1;
            bytes = 0;
        }
    }
    free(v);
    free(gv);
    p->n_batch = 0;
    buf_reset(&p->batch_buf);
}

/* Puts the not yet written acknowledged forwards in the batch (after a new link). */
static void write_pending(struct cluster_peer *p)
{
    for (size_t i = p->unsent_from; i < p->pend_n; i++) {
        struct pending_fwd *e = pend_at(p, i);
        if (!e->is_acked)
            batch_add(p, p->first_id + i, e->m, e->plain, e->extra, e->groups_len, e->replay_len);
    }
    p->unsent_from = p->pend_n;
}

/* Output not yet taken by the kernel for p's link: this pass's batch, the link's buffer, and
 * its writes in flight. */
static size_t link_backlog(const struct cluster_peer *p)
{
    return buf_used(&p->batch_buf) + buf_used(&p->link->out) + p->link->write_bytes;
}

static void forward_add(struct cluster *c, struct cluster_peer *p, struct msg *m, bool plain,
                        const char *extra, size_t groups_len, size_t replay_len,
                        cluster_forward_cb cb, void *ctx)
{
    c->stats.forwards_sent++;
    if (!cb) {
        if (p->link && link_backlog(p) < CLUSTER_QOS0_BACKLOG) {
            batch_add(p, 0, m, plain, extra, groups_len, replay_len);
        } else {
            c->stats.forwards_dropped++;
            if (p->link)
                log_ratelimited(LOG_LEVEL_WARN, "cluster",
                                "member does not keep up, QoS 0 forward dropped peer=%s",
                                p->node_id);
        }
        return;
    }
    if (p->is_cut) {
        complete(p, cb, ctx, ERR_IO, m, 0, plain, extra, groups_len);
        return;
    }
    if (p->pend_n >= CLUSTER_MAX_PENDING) {
        c->stats.forwards_dropped++;
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "forward queue full, message refused peer=%s",
                        p->node_id);
        complete(p, cb, ctx, ERR_QUOTA, m, 0, plain, extra, groups_len);
        return;
    }
    if (p->pend_n == p->pend_cap) {
        size_t cap = p->pend_cap ? p->pend_cap * 2 : 64;
        struct pending_fwd *v = xcalloc(cap, sizeof(*v));
        for (size_t i = 0; i < p->pend_n; i++)
            v[i] = *pend_at(p, i);
        free(p->pend);
        p->pend = v;
        p->pend_cap = cap;
        p->pend_head = 0;
    }
    struct pending_fwd *e = pend_at(p, p->pend_n);
    e->m = msg_ref(m);
    e->cb = cb;
    e->ctx = ctx;
    e->is_acked = false;
    e->plain = plain;
    e->extra = NULL;
    e->groups_len = groups_len;
    e->replay_len = replay_len;
    if (groups_len + replay_len) {
        e->extra = xmalloc(groups_len + replay_len);
        memcpy(e->extra, extra, groups_len + replay_len);
    }
    p->pend_n++;
    if (p->link) {
        batch_add(p, p->first_id + p->pend_n - 1, m, plain, extra, groups_len, replay_len);
        p->unsent_from = p->pend_n;
    }
}

void cluster_forward(struct cluster *c, struct cluster_peer *p, struct msg *m, bool plain,
                     const char *groups, size_t groups_len, cluster_forward_cb cb, void *ctx)
{
    forward_add(c, p, m, plain, groups, groups_len, 0, cb, ctx);
}

void cluster_forward_replay(struct cluster *c, struct cluster_peer *p, struct msg *m,
                            const char *replay_of, const char *pub_node, cluster_forward_cb cb,
                            void *ctx)
{
    size_t a = strlen(replay_of), n = a + strlen(pub_node) + 2;
    char stack[512];
    char *r = n <= sizeof(stack) ? stack : xmalloc(n);
    memcpy(r, replay_of, a + 1);
    memcpy(r + a + 1, pub_node, n - a - 1);
    forward_add(c, p, m, true, r, 0, n, cb, ctx);
    if (r != stack)
        free(r);
}

static void settle(struct cluster_peer *p, uint64_t id, int rc)
{
    if (id < p->first_id || id >= p->first_id + p->pend_n)
        return;
    struct pending_fwd *e = pend_at(p, (size_t)(id - p->first_id));
    if (e->is_acked)
        return;
    e->is_acked = true;
    if (e->cb)
        complete(p, e->cb, e->ctx, rc, e->m, id, e->plain, e->extra, e->groups_len);
    e->cb = NULL;
}

static void handle_forward_ack(struct cluster_peer *p, const struct wire_frame *f)
{
    for (size_t i = 0; i < f->u.forward_ack.n; i++)
        settle(p, f->u.forward_ack.ids[i], 0);
    for (size_t i = 0; i < f->u.forward_ack.n_failed; i++)
        settle(p, f->u.forward_ack.failed[i], ERR_SERVER_UNAVAILABLE);
    while (p->pend_n > 0 && pend_at(p, 0)->is_acked) {
        struct pending_fwd *e = pend_at(p, 0);
        msg_unref(&e->m);
        free(e->extra);
        e->extra = NULL;
        p->pend_head = (p->pend_head + 1) % p->pend_cap;
        p->pend_n--;
        p->first_id++;
        if (p->unsent_from > 0)
            p->unsent_from--;
    }
}

static void id_add(uint64_t **v, size_t *n, size_t *cap, uint64_t id)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *v = xrealloc(*v, *cap * sizeof(**v));
    }
    (*v)[(*n)++] = id;
}

/* The entry for id among the forwards received and not yet durable (ids arrive in increasing
 * order, so the array stays sorted), or NULL. */
static struct rx_busy *rx_busy_find(const struct cluster_peer *p, uint64_t id)
{
    size_t lo = p->rx_head, hi = p->n_rx_busy;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->rx_busy[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n_rx_busy && p->rx_busy[lo].id == id ? &p->rx_busy[lo] : NULL;
}

static void rx_busy_add(struct cluster_peer *p, uint64_t id)
{
    if (p->rx_head > 0 && p->n_rx_busy == p->cap_rx_busy) {
        p->n_rx_busy -= p->rx_head;
        memmove(p->rx_busy, p->rx_busy + p->rx_head, p->n_rx_busy * sizeof(*p->rx_busy));
        p->rx_head = 0;
    }
    if (p->n_rx_busy == p->cap_rx_busy) {
        p->cap_rx_busy = p->cap_rx_busy ? p->cap_rx_busy * 2 : 64;
        p->rx_busy = xrealloc(p->rx_busy, p->cap_rx_busy * sizeof(*p->rx_busy));
    }
    p->rx_busy[p->n_rx_busy++] = (struct rx_busy){id, false};
}

/* Handles a Forward frame from the link l. Returns false when l was held part way: the rest of
 * the frame is handled when it is read again (l->fwd_done says how far it got). */
static bool handle_forward(struct link *l, struct cluster_peer *p, const struct wire_frame *f)
{
    struct cluster *c = p->c;
    for (size_t i = l->fwd_done; i < f->u.forward.n; i++) {
        if (l->is_held) {
            l->fwd_done = i;
            return false;
        }
        const struct wire_fwd *w = &f->u.forward.v[i];
        if (w->id != 0 && w->id <= p->rx_max_id) {
            /* Resent after a link break: delivered already; acknowledge again unless its
             * first acknowledgement is still to come. */
            const struct rx_busy *e = rx_busy_find(p, w->id);
            if (!e || e->is_done)
                id_add(&p->acks, &p->n_acks, &p->cap_acks, w->id);
            continue;
        }
        struct msg *m = msg_blob_read(w->msg.p, w->msg.len, clock_now_ms(), clock_wall_s() * 1000u);
        if (!m) {
            log_ratelimited(LOG_LEVEL_WARN, "cluster", "unreadable forward peer=%s", p->node_id);
            if (w->id)
                id_add(&p->fails, &p->n_fails, &p->cap_fails, w->id);
            continue;
        }
        c->stats.forwards_received++;
        if (w->id) {
            p->rx_max_id = w->id;
            rx_busy_add(p, w->id);
        }
        m->pub_seq = w->pub_seq;
        const char *replay_of = w->replay_of.len ? w->replay_of.p : NULL;
        const char *pub_node = replay_of && w->pub_node.len ? w->pub_node.p : p->node_id;
        c->h.forward_in(c->h.ctx, p->uid, m, w->id, w->plain, w->shared, w->n_shared, pub_node,
                        replay_of);
    }
    l->fwd_done = 0;
    return true;
}

static struct cluster_peer *peer_by_uid(const struct cluster *c, uint64_t uid)
{
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->uid == uid && !p->is_gone)
            return p;
    return NULL;
}

void cluster_forward_done(struct cluster *c, uint64_t peer_uid, uint64_t tok, int rc)
{
    struct cluster_peer *p = peer_by_uid(c, peer_uid);
    if (!p || tok == 0)
        return;
    struct rx_busy *e = rx_busy_find(p, tok);
    if (e)
        e->is_done = true;
    while (p->rx_head < p->n_rx_busy && p->rx_busy[p->rx_head].is_done)
        p->rx_head++;
    if (rc < 0)
        id_add(&p->fails, &p->n_fails, &p->cap_fails, tok);
    else
        id_add(&p->acks, &p->n_acks, &p->cap_acks, tok);
}

/* ---- takeover and retained -------------------------------------------------------------- */

int cluster_takeover(struct cluster *c, const char *node_id, const char *client_id, uint64_t epoch,
                     uint32_t timeout_ms, void (*cb)(void *ctx, int rc), void *ctx)
{
    struct cluster_peer *p = peer_find(c, node_id);
    if (!p || !p->link || !p->is_joined)
        return ERR_NOT_FOUND;
    struct takeover_req *t = xcalloc(1, sizeof(*t));
    t->req = ++c->next_req;
    t->p = p;
    t->deadline_ms = clock_now_ms() + timeout_ms;
    t->cb = cb;
    t->ctx = ctx;
    t->next = c->takeovers;
    c->takeovers = t;
    c->stats.takeovers_sent++;
    /* Forwards batched this pass go first: a message published before the takeover was asked
     * reaches the old owner while it still holds the session, not after it let go. */
    flush_batch(p);
    wire_put_takeover(&p->link->out, t->req, ws(client_id), epoch);
    return 0;
}

static void takeover_finish(struct cluster *c, uint64_t req, int rc)
{
    for (struct takeover_req **pp = &c->takeovers; *pp; pp = &(*pp)->next) {
        struct takeover_req *t = *pp;
        if (t->req == req) {
            *pp = t->next;
            t->cb(t->ctx, rc);
            free(t);
            return;
        }
    }
}

void cluster_takeover_done(struct cluster *c, uint64_t peer_uid, uint64_t req, int rc)
{
    struct cluster_peer *p = peer_by_uid(c, peer_uid);
    if (p && p->link) {
        flush_batch(p); /* what was passed on to the new owner comes before the answer */
        wire_put_takeover_ack(&p->link->out, req, rc);
    }
}

void cluster_retain_notice(struct cluster *c, const char *topic, const struct msg *m)
{
    struct buf blob = {0};
    if (m) {
        size_t n = msg_blob_size(m);
        uint8_t *w = buf_reserve(&blob, n);
        msg_blob_write(m, w, clock_now_ms(), clock_wall_s() * 1000u);
        buf_commit(&blob, n);
    }
    struct wire_retain r = {ws(topic), {buf_head(&blob), buf_used(&blob)}};
    for (struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->link)
            wire_put_retain_notice(&p->link->out, &r, 1);
    buf_free(&blob);
}

static void handle_retain(struct cluster *c, const struct wire_frame *f)
{
    for (size_t i = 0; i < f->u.retain.n; i++) {
        const struct wire_retain *r = &f->u.retain.v[i];
        struct msg *m = NULL;
        if (r->msg.len) {
            m = msg_blob_read(r->msg.p, r->msg.len, clock_now_ms(), clock_wall_s() * 1000u);
            if (!m)
                continue;
        }
        c->h.retain_in(c->h.ctx, r->topic.p, m);
    }
}

/* ---- reading ---------------------------------------------------------------------------- */

/* Handles one frame. Returns false when a hold stopped it part way: it stays to be handled
 * again (from where it stopped) once the link is read again. */
static bool dispatch(struct link *l, const struct wire_frame *f)
{
    struct cluster *c = l->c;
    struct cluster_peer *p = l->peer;

    if (f->type == WIRE_HELLO) {
        handle_hello(l, &f->u.hello);
        return true;
    }
    if (f->type == WIRE_PROOF) {
        handle_proof(l, f->u.proof);
        return true;
    }
    if (!p) {
        link_close(l, "frame before hello");
        return true;
    }
    switch (f->type) {
    case WIRE_PING:
        wire_put_ack(&l->out, f->u.ping_seq);
        break;
    case WIRE_ACK:
        if (c->fence_seq && f->u.ack_seq == c->fence_seq)
            l->is_fenced = false;
        break;
    case WIRE_MEMBERS:
        learn_members(c, f);
        break;
    case WIRE_ROUTE_DELTA:
        apply_delta(p, f);
        break;
    case WIRE_ROUTE_SNAPSHOT:
        apply_snapshot(p, f->u.route_snapshot.seq, f->u.route_snapshot.filters,
                       f->u.route_snapshot.n);
        break;
    case WIRE_ROUTE_DIGEST:
        check_digest(p, f);
        break;
    case WIRE_ROUTE_SNAPSHOT_REQUEST:
        send_routes_snapshot(c, l);
        break;
    case WIRE_FORWARD:
        return handle_forward(l, p, f);
    case WIRE_FORWARD_ACK:
        handle_forward_ack(p, f);
        break;
    case WIRE_TAKEOVER:
        c->stats.takeovers_received++;
        c->h.takeover_in(c->h.ctx, p->uid, f->u.takeover.client_id.p, f->u.takeover.epoch,
                         f->u.takeover.req);
        break;
    case WIRE_TAKEOVER_ACK:
        takeover_finish(c, f->u.takeover_ack.req, f->u.takeover_ack.result);
        break;
    case WIRE_RETAIN_NOTICE:
        handle_retain(c, f);
        break;
    default:
        break;
    }
    return true;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct link *l = container_of((uv_tcp_t *)h, struct link, tcp);
    (void)hint;
    uint8_t *p = buf_reserve(&l->in, 65536);
    *out = uv_buf_init((char *)p, 65536);
}

static void link_process(struct link *l);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct link *l = container_of((uv_tcp_t *)st, struct link, tcp);
    (void)b;
    if (nread < 0) {
        link_close(l, nread == UV_EOF ? "closed by peer" : "read failed");
        return;
    }
    buf_commit(&l->in, (size_t)nread);
    l->last_rx_ms = clock_now_ms();
    link_process(l);
}

/* Handles the frames read so far, up to a hold: a frame handled only part way stays in `in`. */
static void link_process(struct link *l)
{
    while (!l->is_closing && !l->is_held) {
        struct wire_frame f;
        int n = wire_frame_parse(buf_head(&l->in), buf_used(&l->in), &f);
        if (n == 0)
            break;
        if (n < 0) {
            l->c->stats.links_refused += l->peer ? 0 : 1;
            link_close(l, "malformed frame");
            return;
        }
        bool is_done = dispatch(l, &f);
        wire_frame_free(&f);
        if (!is_done)
            break;
        buf_consume(&l->in, (size_t)n);
    }
}

static void link_unhold(struct link *l)
{
    l->is_held = false;
    l->c->n_held--;
    l->last_rx_ms = clock_now_ms(); /* unread by choice, not silent */
    link_process(l);                /* what was read before the hold, first */
    if (!l->is_closing && !l->is_held &&
        uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read) < 0)
        link_close(l, "read failed");
}

void cluster_hold(struct cluster *c, uint64_t peer_uid)
{
    struct cluster_peer *p = peer_by_uid(c, peer_uid);
    struct link *l = p ? p->link : NULL;
    if (!l || l->is_held || l->is_closing)
        return;
    (void)uv_read_stop((uv_stream_t *)&l->tcp);
    l->is_held = true;
    l->held_ms = clock_now_ms();
    c->n_held++;
}

void cluster_unhold_all(struct cluster *c)
{
    for (struct link *l = c->links; l && c->n_held > 0; l = l->next)
        if (l->is_held)
            link_unhold(l);
}

static struct link *link_new(struct cluster *c, bool is_dialer)
{
    struct link *l = xcalloc(1, sizeof(*l));
    l->c = c;
    l->is_dialer = is_dialer;
    l->last_rx_ms = clock_now_ms();
    if (uv_tcp_init(c->loop, &l->tcp) < 0) {
        free(l);
        return NULL;
    }
    (void)uv_tcp_nodelay(&l->tcp, 1);
    c->open_handles++;
    l->next = c->links;
    c->links = l;
    return l;
}

static void link_start(struct link *l)
{
    l->is_connected = true;
    int rc = uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read);
    if (rc < 0) {
        link_close(l, "read start failed");
        return;
    }
    send_hello(l->c, l);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct cluster *c = container_of((uv_tcp_t *)server, struct cluster, listener);
    if (status < 0 || c->is_closing)
        return;
    struct link *l = link_new(c, false);
    if (!l)
        return;
    if (uv_accept(server, (uv_stream_t *)&l->tcp) < 0) {
        link_close(l, "accept failed");
        return;
    }
    link_start(l);
}

/* ---- dialing ---------------------------------------------------------------------------- */

static void on_connected(uv_connect_t *req, int status)
{
    struct link *l = container_of(req, struct link, connect);
    if (status < 0 || l->is_closing) {
        if (l->seed && l->seed->link == l) {
            struct seed *s = l->seed;
            s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : CLUSTER_DIAL_MIN_MS;
            if (s->backoff_ms > CLUSTER_DIAL_MAX_MS)
                s->backoff_ms = CLUSTER_DIAL_MAX_MS;
            s->next_try_ms = clock_now_ms() + s->backoff_ms;
        }
        link_close(l, "connect failed");
        return;
    }
    if (l->seed)
        l->seed->backoff_ms = 0;
    link_start(l);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct seed *s = container_of(req, struct seed, gai);
    struct cluster *c = s->c;
    s->is_resolving = false;
    if (c->is_closing) {
        /* cluster_destroy left this seed for its lookup to end */
        if (res)
            uv_freeaddrinfo(res);
        free(s->host);
        free(s->port);
        free(s->node_id);
        free(s);
        handles_dec(c);
        return;
    }
    handles_dec(c);
    if (status < 0 || !res) {
        if (res)
            uv_freeaddrinfo(res);
        s->next_try_ms = clock_now_ms() + CLUSTER_DIAL_MAX_MS;
        return;
    }
    struct link *l = link_new(c, true);
    if (l) {
        l->seed = s;
        s->link = l;
        if (uv_tcp_connect(&l->connect, &l->tcp, res->ai_addr, on_connected) < 0)
            link_close(l, "connect failed");
    }
    uv_freeaddrinfo(res);
}

static bool seed_needs_dial(struct cluster *c, struct seed *s)
{
    if (s->is_self || s->link || s->is_resolving || clock_now_ms() < s->next_try_ms)
        return false;
    if (!s->node_id)
        return true;
    struct cluster_peer *p = peer_find(c, s->node_id);
    if (p && p->link)
        return false;
    /* Both ends dial a known member whose link is down; the smaller id first. */
    return !p || strcmp(c->node_id, s->node_id) < 0 || clock_now_ms() > p->down_since_ms + 1000;
}

static void dial_seeds(struct cluster *c)
{
    for (struct seed *s = c->seeds; s; s = s->next) {
        if (!seed_needs_dial(c, s))
            continue;
        struct addrinfo hints = {0};
        hints.ai_socktype = SOCK_STREAM;
        s->next_try_ms = clock_now_ms() + CLUSTER_DIAL_MIN_MS;
        if (uv_getaddrinfo(c->loop, &s->gai, on_resolved, s->host, s->port, &hints) == 0) {
            s->is_resolving = true;
            c->open_handles++;
        }
    }
}

static struct seed *seed_add(struct cluster *c, const char *hp, size_t n)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (hp[i] == ':')
            colon = hp + i;
    if (!colon)
        return NULL;
    size_t hl = (size_t)(colon - hp);
    const char *h = hp;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    const char *port = colon + 1;
    size_t pl = n - (size_t)(port - hp);
    for (struct seed *s = c->seeds; s; s = s->next)
        if (strlen(s->host) == hl && memcmp(s->host, h, hl) == 0 && strlen(s->port) == pl &&
            memcmp(s->port, port, pl) == 0)
            return s;
    struct seed *s = xcalloc(1, sizeof(*s));
    s->c = c;
    s->host = xstrndup(h, hl);
    s->port = xstrndup(port, pl);
    s->next = c->seeds;
    c->seeds = s;
    return s;
}

void cluster_add_seed(struct cluster *c, const char *host_port)
{
    if (!c->is_closing)
        (void)seed_add(c, host_port, strlen(host_port));
}

void cluster_add_member(struct cluster *c, const char *node_id, const char *host_port)
{
    if (c->is_closing || strcmp(node_id, c->node_id) == 0)
        return;
    /* Named, the address is not dialed while that member is linked already: a second link
     * would only be closed again, with whatever QoS 0 forwards were on the one that goes. */
    struct seed *s = seed_add(c, host_port, strlen(host_port));
    if (s && !s->node_id)
        s->node_id = xstrdup(node_id);
}

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct cluster *c = container_of(req, struct cluster, dns_gai);
    c->dns_busy = false;
    for (struct addrinfo *a = res; status == 0 && a && !c->is_closing; a = a->ai_next) {
        char ip[64], hp[96];
        if (a->ai_family == AF_INET)
            (void)uv_ip4_name((const struct sockaddr_in *)(void *)a->ai_addr, ip, sizeof(ip));
        else if (a->ai_family == AF_INET6)
            (void)uv_ip6_name((const struct sockaddr_in6 *)(void *)a->ai_addr, ip, sizeof(ip));
        else
            continue;
        (void)snprintf(hp, sizeof(hp), a->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
                       (unsigned)c->port);
        struct seed *s = seed_add(c, hp, strlen(hp));
        if (s)
            s->is_dns = true;
    }
    if (res)
        uv_freeaddrinfo(res);
    handles_dec(c);
}

static void resolve_dns(struct cluster *c)
{
    if (!c->dns || c->dns_busy)
        return;
    struct addrinfo hints = {0};
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(c->loop, &c->dns_gai, on_dns, c->dns, NULL, &hints) == 0) {
        c->dns_busy = true;
        c->open_handles++;
    }
}

/* ---- timer ------------------------------------------------------------------------------ */

static void check_takeovers(struct cluster *c)
{
    uint64_t now = clock_now_ms();
    for (struct takeover_req **pp = &c->takeovers; *pp;) {
        struct takeover_req *t = *pp;
        if (now < t->deadline_ms) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        t->cb(t->ctx, t->deadline_ms == 0 ? ERR_NOT_FOUND : ERR_TIMEOUT);
        free(t);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct cluster *c = container_of(t, struct cluster, tick);
    uint64_t now = clock_now_ms();

    for (struct link *l = c->links, *next; l; l = next) {
        next = l->next;
        if (!l->is_connected)
            continue;
        if (l->is_held && now >= l->held_ms + CLUSTER_HOLD_MAX_MS)
            link_unhold(l);
        if (l->is_pressed && now >= l->written_ms + CLUSTER_PRESS_GIVEUP_MS) {
            log_ratelimited(LOG_LEVEL_WARN, "cluster",
                            "member link writes nothing, publishers released peer=%s",
                            l->peer_id ? l->peer_id : "?");
            l->is_press_exempt = true;
            press_set(l, false);
        }
        if (!l->is_held && now > l->last_rx_ms + CLUSTER_SILENT_MS) {
            link_close(l, "silent");
            continue;
        }
        if (l->peer && now >= l->last_ping_ms + CLUSTER_PING_MS) {
            l->last_ping_ms = now;
            wire_put_ping(&l->out, now);
        }
    }
    for (struct cluster_peer *p = c->peers, *next; p; p = next) {
        next = p->next;
        if (p->is_cut && !is_listed(c, p))
            peer_dead(p, true); /* out of the registry too: dead after all */
        else if (!p->is_cut && !p->link && p->down_since_ms &&
                 now > p->down_since_ms + CLUSTER_DEAD_MS) {
            if (p->is_joined && !c->is_closing && is_listed(c, p))
                peer_cut(p);
            else
                peer_dead(p, true);
        }
    }
    if (now >= c->last_gossip_ms + CLUSTER_GOSSIP_MS) {
        c->last_gossip_ms = now;
        for (struct cluster_peer *p = c->peers; p; p = p->next)
            if (p->link)
                send_members(c, p->link);
    }
    if (now >= c->last_digest_ms + CLUSTER_DIGEST_MS) {
        c->last_digest_ms = now;
        send_digests(c);
    }
    if (now >= c->last_dns_ms + CLUSTER_DNS_MS) {
        c->last_dns_ms = now;
        resolve_dns(c);
    }
    check_takeovers(c);
    dial_seeds(c);
    cluster_flush(c);
}

void cluster_flush(struct cluster *c)
{
    flush_routes(c);
    for (struct cluster_peer *p = c->peers; p; p = p->next) {
        if (p->link && (p->n_acks > 0 || p->n_fails > 0)) {
            wire_put_forward_ack(&p->link->out, p->acks, p->n_acks, p->fails, p->n_fails);
            p->n_acks = 0;
            p->n_fails = 0;
        }
        flush_batch(p);
    }
    for (struct link *l = c->links; l; l = l->next)
        link_write(l);
}

void cluster_fence(struct cluster *c)
{
    /* The route changes go first, so a member's Ack comes after it applied them. Fence
     * numbers have the top bit set: heartbeat Pings carry the clock, which never has it. */
    flush_routes(c);
    c->fence_seq = (c->fence_seq + 1) | (UINT64_C(1) << 63);
    for (struct link *l = c->links; l; l = l->next) {
        if (l->is_closing || !l->is_connected || !l->peer)
            continue;
        wire_put_ping(&l->out, c->fence_seq);
        l->is_fenced = true;
        link_write(l);
    }
}

bool cluster_is_settled(const struct cluster *c)
{
    if (c->n_touched > 0)
        return false;
    for (const struct cluster_peer *p = c->peers; p; p = p->next)
        if (p->link && (p->n_acks > 0 || p->n_fails > 0 || p->n_batch > 0 || p->pend_n > 0 ||
                        p->rx_head < p->n_rx_busy))
            return false;
    for (const struct link *l = c->links; l; l = l->next)
        if (!l->is_closing && l->is_connected &&
            (l->is_fenced || buf_used(&l->out) > 0 || l->write_bytes > 0))
            return false;
    return true;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    handles_dec(h->data);
}

int cluster_create(uv_loop_t *loop, const struct cluster_conf *cf, const struct cluster_hooks *h,
                   struct cluster **out, char *err, size_t errlen)
{
    struct cluster *c = xcalloc(1, sizeof(*c));
    struct sockaddr_storage sa;
    const char *bind = cf->bind ? cf->bind : "0.0.0.0";
    char adv[128];
    int rc;

    c->loop = loop;
    c->h = *h;
    c->node_id = xstrdup(cf->node_id);
    c->name = xstrdup(cf->cluster_name);
    c->port = cf->port;
    c->dns = cf->dns ? xstrdup(cf->dns) : NULL;
    if (cf->secret) {
        c->secret = xmalloc(cf->secret_len);
        memcpy(c->secret, cf->secret, cf->secret_len);
        c->secret_len = cf->secret_len;
    }
    uv_update_time(loop);
    c->incarnation = (uint64_t)clock_wall_s() * 1000u + (uv_now(loop) % 1000u);
    if (strchr(bind, ':'))
        rc = uv_ip6_addr(bind, cf->port, (struct sockaddr_in6 *)&sa);
    else
        rc = uv_ip4_addr(bind, cf->port, (struct sockaddr_in *)&sa);
    if (rc < 0) {
        (void)snprintf(err, errlen, "cluster_listener: bad bind address '%s'", bind);
        goto out_free;
    }
    if (cf->advertise) {
        (void)snprintf(adv, sizeof(adv), "%s", cf->advertise);
    } else {
        const char *host = cf->bind && strcmp(cf->bind, "0.0.0.0") != 0 ? cf->bind : "127.0.0.1";
        (void)snprintf(adv, sizeof(adv), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
                       (unsigned)cf->port);
    }
    c->advertise = xstrdup(adv);
    (void)uv_tcp_init(loop, &c->listener);
    c->listener.data = c;
    c->open_handles++;
    rc = uv_tcp_bind(&c->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&c->listener, 128, on_accept);
    if (rc < 0) {
        (void)snprintf(err, errlen, "cluster_listener %s:%u: %s", bind, (unsigned)cf->port,
                       uv_strerror(rc));
        c->is_closing = true;
        uv_close((uv_handle_t *)&c->listener, on_handle_closed);
        free(c->node_id);
        free(c->name);
        free(c->dns);
        free(c->secret);
        free(c->advertise);
        return rc;
    }
    (void)uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    c->open_handles++;
    (void)uv_timer_start(&c->tick, on_tick, CLUSTER_TICK_MS, CLUSTER_TICK_MS);
    for (const char *s = cf->seeds; s && *s;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        (void)seed_add(c, s, n);
        s = end ? end + 1 : s + n;
    }
    resolve_dns(c);
    dial_seeds(c);
    log_info("cluster", "listening port=%u node_id=%s advertise=%s", (unsigned)cf->port, c->node_id,
             c->advertise);
    *out = c;
    return 0;
out_free:
    free(c->node_id);
    free(c->name);
    free(c->dns);
    free(c->secret);
    free(c);
    return ERR_INVALID;
}

void cluster_destroy(struct cluster **cp)
{
    struct cluster *c = *cp;
    *cp = NULL;
    if (!c)
        return;
    c->is_closing = true;
    while (c->takeovers) {
        struct takeover_req *t = c->takeovers;
        c->takeovers = t->next;
        t->cb(t->ctx, ERR_CANCELED);
        free(t);
    }
    while (c->peers)
        peer_dead(c->peers, false);
    while (c->links)
        link_close(c->links, "shutdown");
    while (c->seeds) {
        struct seed *s = c->seeds;
        c->seeds = s->next;
        if (s->is_resolving)
            (void)uv_cancel((uv_req_t *)&s->gai);
        /* a cancelled lookup still calls back: keep the seed until then */
        if (!s->is_resolving) {
            free(s->host);
            free(s->port);
            free(s->node_id);
            free(s);
        }
    }
    if (c->dns_busy)
        (void)uv_cancel((uv_req_t *)&c->dns_gai);
    rs_free(&c->local);
    for (size_t i = 0; i < c->n_touched; i++)
        free(c->touched[i]);
    free(c->touched);
    free(c->node_id);
    free(c->name);
    free(c->dns);
    free(c->secret);
    free(c->advertise);
    uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    uv_close((uv_handle_t *)&c->listener, on_handle_closed);
}

/* ---- queries ---------------------------------------------------------------------------- */

const char *cluster_advertise(const struct cluster *c)
{
    return c->advertise;
}

uint64_t cluster_incarnation(const struct cluster *c)
{
    return c->incarnation;
}

bool cluster_peer_is_pressed(struct cluster_peer *p)
{
    struct link *l = p->link;
    if (!l)
        return false;
    /* This pass's batch counts too: a pass can add megabytes before it is written. */
    if (!l->is_pressed && !l->is_press_exempt && link_backlog(p) > CLUSTER_PRESS_HIGH) {
        l->written_ms = clock_now_ms();
        press_set(l, true);
    }
    return l->is_pressed;
}

bool cluster_peer_is_up(const struct cluster_peer *p)
{
    return p->link != NULL && !p->is_gone;
}

bool cluster_parked_admit(struct cluster *c, const char *node_id, uint64_t incarnation, uint64_t id)
{
    struct cluster_peer *p = peer_find(c, node_id);
    if (!p || p->incarnation != incarnation || id == 0)
        return true;
    if (id <= p->rx_max_id)
        return false;
    p->rx_max_id = id;
    return true;
}

bool cluster_is_member(const struct cluster *c, const char *node_id)
{
    const struct cluster_peer *p = peer_find(c, node_id);
    return p && p->is_joined && !p->is_cut;
}

size_t cluster_members(const struct cluster *c)
{
    size_t n = 0;
    for (const struct cluster_peer *p = c->peers; p; p = p->next)
        n += p->is_joined && !p->is_cut;
    return n;
}

bool cluster_is_joined(const struct cluster *c)
{
    /* Seeds never reached are not waited for: an address from DNS or the registry may be a
     * node that just went away. The member registry says who must be joined (node/mesh.c). */
    for (const struct cluster_peer *p = c->peers; p; p = p->next)
        if (!p->is_gone && (!p->is_joined || !p->link))
            return false;
    return true;
}

struct cluster_peer *cluster_peer_by_uid(struct cluster *c, uint64_t uid)
{
    return peer_by_uid(c, uid);
}

const char *cluster_peer_node_id(const struct cluster_peer *p)
{
    return p->node_id;
}

const struct cluster_stats *cluster_get_stats(const struct cluster *c)
{
    return &c->stats;
}

void cluster_peer_foreach(const struct cluster *c,
                          void (*fn)(void *ctx, const char *node_id, bool is_up), void *ctx)
{
    for (const struct cluster_peer *p = c->peers; p; p = p->next)
        fn(ctx, p->node_id, p->link != NULL && p->is_joined && !p->is_gone);
}
