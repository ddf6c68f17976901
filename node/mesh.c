/*
 * The node's side of the cluster. Remote routes live in a trie of their own whose owners are
 * peers, so a publish walks it once and collects each matching member once, however many of
 * its filters match. Forwarded messages are routed to local sessions only (never onward: every
 * member links to every other). A QoS 1/2 forward is acknowledged by its receiver once every
 * persistent session there holds it, and the publisher's PUBACK waits for that, through the
 * same wait that collects local store appends (node/persist.c).
 */
#include "node/mesh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "cluster/wire.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/conn.h"
#include "node/digest.h"
#include "node/drain.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/log.h"
#include "node/msg.h"
#include "node/names.h"
#include "node/persist.h"
#include "node/retain.h"
#include "node/router.h"
#include "node/session.h"
#include "node/topic.h"
#include "node/topic_tree.h"
#include "store/store.h"

#define MESH_TAKEOVER_TIMEOUT_MS 2000
#define MESH_SECRET_MAX          4096
#define MESH_RECENT_MAX          1024
#define MESH_RECENT_MS           30000
#define MESH_UNSETTLED_MAX       65536
#define MESH_UNSETTLED_MS        (10 * 60 * 1000)
#define MESH_SETTLE_MS           2000
#define MESH_HANDED_MS           2000 /* a taken-over session passes messages on this long */

/* Takeovers received lately: a CONNECT still waiting for its claim here when another member
 * claimed the id after it must not complete. */
struct mesh_recent {
    char *client_id;
    uint64_t epoch;
    uint64_t at_ms;
};

static void recent_add(struct broker *b, const char *client_id, uint64_t epoch)
{
    struct mesh_recent *r = b->recent;
    uint64_t now = clock_now_ms();
    size_t j = 0;
    for (size_t i = 0; i < b->n_recent; i++) {
        if (now > r[i].at_ms + MESH_RECENT_MS || j + 1 >= MESH_RECENT_MAX) {
            free(r[i].client_id);
            continue;
        }
        r[j++] = r[i];
    }
    r[j++] = (struct mesh_recent){xstrdup(client_id), epoch, now};
    b->n_recent = j;
}

bool mesh_is_superseded(const struct broker *b, const char *client_id, uint64_t epoch)
{
    if (!b->cluster)
        return false;
    for (size_t i = 0; i < b->n_recent; i++)
        if (b->recent[i].epoch > epoch && strcmp(b->recent[i].client_id, client_id) == 0)
            return true;
    return false;
}

bool mesh_is_on(const struct broker *b)
{
    return b->cluster != NULL;
}

static void unsettled_free(struct mesh_unsettled *u);

/* ---- hooks from the cluster ------------------------------------------------------------- */

/* A member one publish goes to: for its plain subscribers, and for the groups listed. */
struct mesh_fwd_to {
    struct cluster_peer *p;
    bool plain;
    char *groups; /* "GROUP/FILTER" keys, each NUL-terminated */
    size_t groups_len;
    size_t groups_cap;
};

/* ---- shared groups ---------------------------------------------------------------------- */

/* A shared group key ("GROUP/FILTER"), counted by the routes that hold it (each peer's and this
 * node's own): the remote trie's record for a group member, carried in forwards. */
struct mesh_group {
    uint32_t refs;
    size_t len;
    char key[];
};

#define SHARE_PREFIX_LEN 7 /* "$share/" */

/* This node's own entry in the shared groups of the remote trie (whose other owners are
 * peers). */
static char self_owner;

static struct mesh_group *group_ref(struct broker *b, const char *key, size_t len)
{
    for (size_t i = 0; i < b->n_groups; i++) {
        struct mesh_group *g = b->groups[i];
        if (g->len == len && memcmp(g->key, key, len) == 0) {
            g->refs++;
            return g;
        }
    }
    if (b->n_groups == b->cap_groups) {
        b->cap_groups = b->cap_groups ? b->cap_groups * 2 : 16;
        b->groups = xrealloc(b->groups, b->cap_groups * sizeof(*b->groups));
    }
    struct mesh_group *g = xmalloc(sizeof(*g) + len + 1);
    g->refs = 1;
    g->len = len;
    memcpy(g->key, key, len);
    g->key[len] = '\0';
    b->groups[b->n_groups++] = g;
    return g;
}

static void group_unref(struct broker *b, const char *key, size_t len)
{
    for (size_t i = 0; i < b->n_groups; i++) {
        struct mesh_group *g = b->groups[i];
        if (g->len == len && memcmp(g->key, key, len) == 0) {
            if (--g->refs == 0) {
                b->groups[i] = b->groups[--b->n_groups];
                free(g);
            }
            return;
        }
    }
}

static bool is_share(const char *filter, size_t len)
{
    return len > SHARE_PREFIX_LEN && memcmp(filter, "$share/", SHARE_PREFIX_LEN) == 0;
}

/* Adds owner (a peer, or &self_owner) to a route of the remote trie. */
static void remote_add(struct broker *b, const char *filter, size_t len, void *owner)
{
    if (!is_share(filter, len)) {
        (void)topic_tree_add(b->remote, filter, len, owner, NULL);
        return;
    }
    struct mesh_group *g = group_ref(b, filter + SHARE_PREFIX_LEN, len - SHARE_PREFIX_LEN);
    if (topic_tree_add(b->remote, filter, len, owner, g) == TOPIC_TREE_REPLACED)
        group_unref(b, g->key, g->len);
}

static void remote_remove(struct broker *b, const char *filter, size_t len, void *owner)
{
    if (topic_tree_remove(b->remote, filter, len, owner) >= 0 && is_share(filter, len))
        group_unref(b, filter + SHARE_PREFIX_LEN, len - SHARE_PREFIX_LEN);
}

bool mesh_group_allowed(const struct broker *b, const char *filter, size_t len)
{
    if (!is_share(filter, len))
        return true;
    const char *key = filter + SHARE_PREFIX_LEN;
    size_t klen = len - SHARE_PREFIX_LEN;
    for (size_t i = 0; i < b->n_allow; i++)
        if (b->allow[i].len == klen && memcmp(b->allow[i].p, key, klen) == 0)
            return true;
    return false;
}

static void on_route_add(void *ctx, struct cluster_peer *p, const char *filter, size_t len)
{
    struct broker *b = ctx;
    if (topic_filter_valid(filter, len))
        remote_add(b, filter, len, p);
}

static void on_link_pressure(void *ctx, bool is_high)
{
    struct broker *b = ctx;
    if (is_high)
        b->n_links_pressed++;
    else if (b->n_links_pressed > 0)
        b->n_links_pressed--;
}

static bool on_is_listed(void *ctx, const char *node_id)
{
    return mesh_members_is_listed(ctx, node_id);
}

static void on_peer_down(void *ctx, struct cluster_peer *p, const char *node_id, bool is_dead)
{
    struct broker *b = ctx;
    (void)p;
    (void)node_id;
    if (is_dead && !b->stopping)
        mesh_members_kick(b);
}

static void on_route_remove(void *ctx, struct cluster_peer *p, const char *filter, size_t len)
{
    struct broker *b = ctx;
    remote_remove(b, filter, len, p);
}

static void on_forward_in(void *ctx, uint64_t peer_uid, struct msg *m, uint64_t tok, bool plain,
                          const struct wire_str *groups, size_t n, const char *pub_node,
                          const char *replay_of)
{
    struct broker *b = ctx;
    b->in_forward = true;
    b->fwd_plain = plain;
    if (m->pub_seq)
        m->pub_node = names_intern(pub_node, strlen(pub_node));
    b->replay_of = replay_of;
    b->share_filter = true;
    /* struct wire_str and struct mesh_allow are both (pointer, length). */
    struct mesh_allow stack[8];
    struct mesh_allow *allow = n <= 8 ? stack : xmalloc(n * sizeof(*allow));
    for (size_t i = 0; i < n; i++)
        allow[i] = (struct mesh_allow){groups[i].p, groups[i].len};
    b->allow = allow;
    b->n_allow = n;
    if (tok)
        persist_forward_begin(b);
    b->fwd_peer_uid = peer_uid;
    router_publish(b, m, NULL);
    b->fwd_peer_uid = 0;
    b->allow = NULL;
    b->n_allow = 0;
    b->share_filter = false;
    b->fwd_plain = false;
    b->in_forward = false;
    b->replay_of = NULL;
    if (allow != stack)
        free(allow);
    if (tok)
        persist_forward_end(b, peer_uid, tok);
    /* A node leaving the cluster dropped the sessions it handed over (mesh_hand_over_end), and
     * members go on forwarding here until its route change reaches them: what they send
     * meanwhile goes on as a replay, which only the sessions that moved away from this node
     * take (node/mesh_moved.c). */
    if (b->drain_leaving && m->pub_seq && m->pub_node && !replay_of)
        mesh_replay(b, m, m->pub_node, b->conf->node_id);
    msg_unref(&m);
}

void mesh_deliver_parked(struct broker *b, struct msg *m, const char *pub_node,
                         const struct mesh_parked *k)
{
    /* The groups are NUL-terminated strings (mesh_park_read checks the last one). */
    size_t n = 0;
    for (size_t at = 0; at < k->groups_len; at += strlen(k->groups + at) + 1)
        n++;
    struct wire_str stack[8] = {{0}};
    struct wire_str *groups = n <= 8 ? stack : xmalloc(n * sizeof(*groups));
    for (size_t i = 0, at = 0; i < n; i++) {
        groups[i] = (struct wire_str){k->groups + at, strlen(k->groups + at)};
        at += groups[i].len + 1;
    }
    on_forward_in(b, 0, msg_ref(m), 0, k->plain, groups, n, pub_node, NULL);
    if (groups != stack)
        free(groups);
}

void mesh_hold(struct broker *b, uint64_t peer_uid)
{
    if (b->cluster)
        cluster_hold(b->cluster, peer_uid);
}

void mesh_unhold(struct broker *b)
{
    if (b->cluster)
        cluster_unhold_all(b->cluster);
}

void mesh_forward_done(struct broker *b, uint64_t peer_uid, uint64_t tok, int rc)
{
    if (b->cluster)
        cluster_forward_done(b->cluster, peer_uid, tok, rc);
}

static void on_replayed(void *ctx, int rc, struct msg *m, const struct cluster_fwd_info *fi);

/* A session taken over by another member, kept here a moment (MESH_HANDED_MS) only to pass
 * on what still matches it. */
struct mesh_handed {
    char *client_id;
    uint64_t due_ms;
};

/*
 * The new owner routes to the session from the moment it asks (node/persist.c), but members
 * may go on routing to this node until this node's route change reaches them. What matches
 * the session here meanwhile is passed on to the new owner as a replay from this node, which
 * it takes only if it did not get it directly (node/mesh_moved.c). Then the session goes.
 */
static void hand_over(struct broker *b, struct session *s, uint64_t peer_uid)
{
    if (b->stopping || !cluster_peer_by_uid(b->cluster, peer_uid)) {
        session_destroy(&s);
        return;
    }
    if (!s->handed_to) {
        b->handed = xrealloc(b->handed, (b->n_handed + 1) * sizeof(*b->handed));
        b->handed[b->n_handed++] =
            (struct mesh_handed){xstrdup(s->client_id), clock_now_ms() + MESH_HANDED_MS};
    }
    s->handed_to = peer_uid;
    drain_session_gone(s);
}

static void handed_expire(struct broker *b, bool is_all)
{
    uint64_t now = is_all ? UINT64_MAX : clock_now_ms();
    size_t k = 0;
    for (size_t i = 0; i < b->n_handed; i++) {
        struct mesh_handed *h = &b->handed[i];
        if (now < h->due_ms) {
            b->handed[k++] = *h;
            continue;
        }
        struct session *s = broker_session_find(b, h->client_id, strlen(h->client_id));
        if (s && s->handed_to && !s->conn)
            session_destroy(&s);
        free(h->client_id);
    }
    b->n_handed = k;
}

void mesh_hand_over_end(struct broker *b)
{
    handed_expire(b, true);
}

void mesh_pass_on(struct broker *b, struct session *s, struct msg *m)
{
    struct cluster_peer *p = b->cluster ? cluster_peer_by_uid(b->cluster, s->handed_to) : NULL;
    if (!p || (b->passed_m == m && b->passed_uid == s->handed_to))
        return; /* gone (what it missed was parked for it), or sent already */
    b->passed_m = m;
    b->passed_uid = s->handed_to;
    cluster_forward_replay(b->cluster, p, m, b->conf->node_id,
                           m->pub_node ? m->pub_node : b->conf->node_id, on_replayed, b);
}

struct takeover_in {
    struct broker *b;
    uint64_t peer_uid;
    uint64_t req;
};

static void on_flushed(void *ctx, int rc)
{
    struct takeover_in *t = ctx;
    (void)rc; /* refused as stale, as expected: it only marks that earlier writes are done */
    if (t->b->cluster)
        cluster_takeover_done(t->b->cluster, t->peer_uid, t->req, 0);
    free(t);
}

/* Another member now owns client_id: the connection here closes (0x8E), the session is saved
 * and its owed messages appended, fenced by the old epoch, and the local copy goes so that
 * this node stops routing to it. The answer waits for those writes to reach the store. */
static void on_takeover_in(void *ctx, uint64_t peer_uid, const char *client_id, uint64_t epoch,
                           uint64_t req)
{
    struct broker *b = ctx;
    size_t len = strlen(client_id);
    recent_add(b, client_id, epoch);
    struct session *s = broker_session_find(b, client_id, len);
    if (!s || s->epoch >= epoch) {
        cluster_takeover_done(b->cluster, peer_uid, req, s ? ERR_EXISTS : 0);
        return;
    }
    uint64_t old_epoch = s->epoch;
    b->stats.takeovers_in++;
    if (s->conn) {
        log_info("conn", "client id taken over by another node client_id=%s peer=%s",
                 conn_log_id(s->conn), conn_log_peer(s->conn));
        handle_fail(s->conn, ERR_TAKEN_OVER);
    }
    s = broker_session_find(b, client_id, len);
    if (s && !s->conn)
        hand_over(b, s, peer_uid);
    struct takeover_in *t = xcalloc(1, sizeof(*t));
    t->b = b;
    t->peer_uid = peer_uid;
    t->req = req;
    if (store_owner_release(b->store, client_id, old_epoch, on_flushed, t) < 0)
        on_flushed(t, 0);
}

static void on_retain_in(void *ctx, const char *topic, struct msg *m)
{
    struct broker *b = ctx;
    if (!m) {
        m = msg_create(topic, strlen(topic), NULL, 0, NULL, 0);
        m->retain = true;
    }
    retain_set(b->retained, m);
    msg_unref(&m);
}

static void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                        uint8_t out[32])
{
    digest_hmac_sha256(key, key_len, data, len, out);
}

/* ---- start and stop --------------------------------------------------------------------- */

static int read_secret(const char *path, uint8_t **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ERR_IO;
    uint8_t *p = xmalloc(MESH_SECRET_MAX);
    size_t got = fread(p, 1, MESH_SECRET_MAX, f);
    (void)fclose(f);
    while (got > 0 && (p[got - 1] == '\n' || p[got - 1] == '\r'))
        got--;
    if (got == 0) {
        free(p);
        return ERR_INVALID;
    }
    *out = p;
    *n = got;
    return 0;
}

int mesh_start(struct broker *b)
{
    const struct conf *cf = b->conf;
    char err[256] = "";
    uint8_t *secret = NULL;
    size_t secret_len = 0;

    if (cf->cluster_port == 0)
        return 0;
    /* Publish sequence numbers start from the wall clock in microseconds, so they keep
     * increasing across a restart of this node (it publishes far fewer than a million
     * messages a second on average). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    b->pub_seq = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    b->self_name = names_intern(cf->node_id, strlen(cf->node_id));
    if (cf->cluster_secret_file && read_secret(cf->cluster_secret_file, &secret, &secret_len)) {
        log_error("cluster", "cannot read cluster_secret_file %s", cf->cluster_secret_file);
        return ERR_IO;
    }
    struct cluster_conf cc = {
        .node_id = cf->node_id,
        .cluster_name = cf->cluster_name,
        .bind = cf->cluster_bind,
        .port = cf->cluster_port,
        .advertise = cf->cluster_advertise,
        .seeds = cf->cluster_seeds,
        .dns = cf->cluster_dns,
        .secret = secret,
        .secret_len = secret_len,
    };
    struct cluster_hooks h = {
        .ctx = b,
        .route_add = on_route_add,
        .route_remove = on_route_remove,
        .peer_down = on_peer_down,
        .is_listed = on_is_listed,
        .link_pressure = on_link_pressure,
        .forward_in = on_forward_in,
        .takeover_in = on_takeover_in,
        .retain_in = on_retain_in,
        .hmac = hmac_sha256,
    };
    b->remote = topic_tree_create();
    b->recent = xcalloc(MESH_RECENT_MAX, sizeof(*b->recent));
    int rc = cluster_create(b->loop, &cc, &h, &b->cluster, err, sizeof(err));
    if (secret)
        memset(secret, 0, secret_len);
    free(secret);
    if (rc < 0) {
        log_error("cluster", "cannot start the cluster: %s", err);
        return rc;
    }
    return 0;
}

void mesh_stop(struct broker *b)
{
    cluster_destroy(&b->cluster);
}

void mesh_free(struct broker *b)
{
    for (size_t i = 0; i < b->n_handed; i++) /* the sessions themselves are gone already */
        free(b->handed[i].client_id);
    b->n_handed = 0;
    free(b->handed);
    b->handed = NULL;
    for (size_t i = 0; i < b->n_unsettled; i++)
        unsettled_free(b->unsettled[i]);
    free(b->unsettled);
    b->unsettled = NULL;
    b->n_unsettled = 0;
    mesh_members_free(b);
    for (size_t i = 0; i < b->n_recent; i++)
        free(b->recent[i].client_id);
    free(b->recent);
    b->recent = NULL;
    b->n_recent = 0;
    topic_tree_destroy(&b->remote);
    for (size_t i = 0; i < b->cap_fwd_to; i++)
        free(b->fwd_to[i].groups);
    free(b->fwd_to);
    b->fwd_to = NULL;
    b->cap_fwd_to = 0;
    for (size_t i = 0; i < b->n_groups; i++)
        free(b->groups[i]);
    free(b->groups);
    b->groups = NULL;
    b->n_groups = 0;
    free(b->self_allow);
    b->self_allow = NULL;
}

/* ---- outgoing --------------------------------------------------------------------------- */

void mesh_route_change(struct broker *b, const char *filter, size_t len, bool is_added)
{
    if (!b->cluster)
        return;
    if (is_added)
        cluster_route_add(b->cluster, filter, len);
    else
        cluster_route_remove(b->cluster, filter, len);
    /* This node is a member of its shared groups in the remote trie, so that one pick among
     * the nodes holding a group decides which of them delivers. */
    if (is_share(filter, len)) {
        if (is_added)
            remote_add(b, filter, len, &self_owner);
        else
            remote_remove(b, filter, len, &self_owner);
    }
}

static bool is_up(void *owner)
{
    /* This node is always up; a member whose link is down is passed over. */
    return owner == &self_owner || cluster_peer_is_up(owner);
}

static void on_remote_match(void *ctx, void *owner, void *rec)
{
    struct broker *b = ctx;
    const struct mesh_group *g = rec;
    if (owner == &self_owner) {
        if (b->n_self_allow == b->cap_self_allow) {
            b->cap_self_allow = b->cap_self_allow ? b->cap_self_allow * 2 : 8;
            b->self_allow = xrealloc(b->self_allow, b->cap_self_allow * sizeof(*b->self_allow));
        }
        b->self_allow[b->n_self_allow++] = (struct mesh_allow){g->key, g->len};
        return;
    }
    struct mesh_fwd_to *f = NULL;
    for (size_t i = 0; i < b->n_fwd_to && !f; i++)
        if (b->fwd_to[i].p == owner)
            f = &b->fwd_to[i];
    if (!f) {
        if (b->n_fwd_to == b->cap_fwd_to) {
            size_t cap = b->cap_fwd_to ? b->cap_fwd_to * 2 : 8;
            b->fwd_to = xrealloc(b->fwd_to, cap * sizeof(*b->fwd_to));
            memset(b->fwd_to + b->cap_fwd_to, 0, (cap - b->cap_fwd_to) * sizeof(*b->fwd_to));
            b->cap_fwd_to = cap;
        }
        f = &b->fwd_to[b->n_fwd_to++];
        f->p = owner;
        f->plain = false;
        f->groups_len = 0;
    }
    if (!g) {
        f->plain = true;
        return;
    }
    if (f->groups_len + g->len + 1 > f->groups_cap) {
        f->groups_cap = (f->groups_len + g->len + 1) * 2;
        f->groups = xrealloc(f->groups, f->groups_cap);
    }
    memcpy(f->groups + f->groups_len, g->key, g->len + 1);
    f->groups_len += g->len + 1;
}

void mesh_pick(struct broker *b, const struct msg *m)
{
    b->n_fwd_to = 0;
    b->n_self_allow = 0;
    b->allow = NULL;
    b->n_allow = 0;
    b->share_filter = false;
    if (m->topic_len >= 5 && memcmp(m->topic, "$SYS/", 5) == 0)
        return; /* per node: its shared groups are its own */
    b->share_filter = true;
    topic_tree_match(b->remote, m->topic, m->topic_len, is_up, on_remote_match, b);
    b->allow = b->self_allow;
    b->n_allow = b->n_self_allow;
}

/* A message being parked: the publisher's acknowledgement (w, may be NULL) waits for it. */
struct mesh_park {
    struct broker *b;
    struct persist_wait *w;
};

static void on_parked(void *ctx, int rc)
{
    struct mesh_park *k = ctx;
    if (rc == 0)
        k->b->stats.fwd_parked++;
    else if (rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "message not parked rc=%s", err_str(rc));
    persist_unhold(k->w, rc);
    free(k);
}

/* A member that died before acknowledging, or that is cut off from this node while alive,
 * gets the message through the store: it is parked for that node id, and whoever holds it
 * delivers it (the node itself, after a restart or while cut off, or an adopter). The
 * publisher's acknowledgement waits for the park. */
static void forwarded(struct broker *b, struct persist_wait *w, int rc, const struct msg *m,
                      const struct cluster_fwd_info *fi)
{
    if (rc == ERR_IO && b->store && !b->stopping) {
        struct mesh_park *k = xmalloc(sizeof(*k));
        k->b = b;
        k->w = w;
        size_t n = mesh_park_size(b, m, fi);
        uint8_t *p = xmalloc(n);
        mesh_park_write(b, m, fi, p);
        rc = store_park_push(b->store, fi->node_id, (struct store_blob){p, n}, on_parked, k);
        free(p);
        if (rc == 0)
            return;
        free(k);
    }
    persist_unhold(w, rc);
}

/* The completion of a forward whose publisher waits (ctx: its wait), or of one nobody waits
 * for (ctx: the broker): no allocation per forward either way. */
static void on_forwarded_held(void *ctx, int rc, struct msg *m, const struct cluster_fwd_info *fi)
{
    struct persist_wait *w = ctx;
    forwarded(persist_wait_broker(w), w, rc, m, fi);
}

static void on_forwarded_free(void *ctx, int rc, struct msg *m, const struct cluster_fwd_info *fi)
{
    forwarded(ctx, NULL, rc, m, fi);
}

void mesh_publish(struct broker *b, struct msg *m)
{
    if (!b->cluster || b->in_forward)
        return;
    b->share_filter = false;
    b->allow = NULL;
    b->n_allow = 0;
    for (size_t i = 0; i < b->n_fwd_to; i++) {
        struct mesh_fwd_to *t = &b->fwd_to[i];
        /* A member link that cannot write out what it has: its publisher waits, as for a
         * slow consumer here. */
        if (b->publisher && cluster_peer_is_pressed(t->p))
            conn_pause(b->publisher);
        if (m->qos == 0) {
            cluster_forward(b->cluster, t->p, m, t->plain, t->groups, t->groups_len, NULL, NULL);
            continue;
        }
        struct persist_wait *w = persist_hold(b);
        if (w)
            cluster_forward(b->cluster, t->p, m, t->plain, t->groups, t->groups_len,
                            on_forwarded_held, w);
        else
            cluster_forward(b->cluster, t->p, m, t->plain, t->groups, t->groups_len,
                            on_forwarded_free, b);
    }
    b->n_fwd_to = 0;
}

static void on_replayed(void *ctx, int rc, struct msg *m, const struct cluster_fwd_info *fi)
{
    struct broker *b = ctx;
    (void)m;
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "cluster",
                        "parked message not delivered again node=%s rc=%s", fi->node_id,
                        err_str(rc));
    else if (rc == 0)
        b->stats.fwd_replayed++;
}

void mesh_replay(struct broker *b, struct msg *m, const char *pub_node, const char *parked_for)
{
    if (!b->cluster)
        return;
    /* Every member with a plain route for it: the sessions that moved away from parked_for
     * may be anywhere by now. Shared groups are not served again. */
    mesh_pick(b, m);
    for (size_t i = 0; i < b->n_fwd_to; i++)
        if (b->fwd_to[i].plain)
            cluster_forward_replay(b->cluster, b->fwd_to[i].p, m, parked_for, pub_node, on_replayed,
                                   b);
    b->n_fwd_to = 0;
    b->allow = NULL; /* shared groups: nothing allowed */
    b->n_allow = 0;
    b->share_filter = true;
    b->in_forward = true;
    b->fwd_plain = true;
    b->replay_of = parked_for;
    m->pub_node = names_intern(pub_node, strlen(pub_node));
    router_publish(b, m, NULL);
    b->share_filter = false;
    b->replay_of = NULL;
    b->fwd_plain = false;
    b->in_forward = false;
}

void mesh_retain_changed(struct broker *b, const struct msg *m)
{
    if (!b->cluster || b->in_forward || m->topic[0] == '$')
        return;
    cluster_retain_notice(b->cluster, m->topic, m->payload_len ? m : NULL);
}

void mesh_flush(struct broker *b)
{
    if (b->cluster)
        cluster_flush(b->cluster);
}

/* ---- takeover --------------------------------------------------------------------------- */

/*
 * A takeover the previous owner did not acknowledge (it was unreachable: partitioned, or not a
 * member at the time) is asked again whenever that node is a member, until it answers: a
 * partition that heals must not leave one client id connected on both sides.
 */
struct mesh_unsettled {
    struct broker *b;
    char *node_id;
    char *client_id;
    uint64_t epoch;
    uint64_t since_ms;
    bool is_asking;
};

static void unsettled_add(struct broker *b, const char *node_id, const char *client_id,
                          uint64_t epoch)
{
    for (size_t i = 0; i < b->n_unsettled; i++) {
        struct mesh_unsettled *u = b->unsettled[i];
        if (strcmp(u->client_id, client_id) == 0 && strcmp(u->node_id, node_id) == 0) {
            if (epoch > u->epoch)
                u->epoch = epoch;
            return;
        }
    }
    if (b->n_unsettled >= MESH_UNSETTLED_MAX) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster",
                        "too many unanswered takeovers, oldest forgotten node=%s",
                        b->unsettled[0]->node_id);
        return;
    }
    if (b->n_unsettled == b->cap_unsettled) {
        b->cap_unsettled = b->cap_unsettled ? b->cap_unsettled * 2 : 16;
        b->unsettled = xrealloc(b->unsettled, b->cap_unsettled * sizeof(*b->unsettled));
    }
    struct mesh_unsettled *u = xcalloc(1, sizeof(*u));
    u->b = b;
    u->node_id = xstrdup(node_id);
    u->client_id = xstrdup(client_id);
    u->epoch = epoch;
    u->since_ms = clock_now_ms();
    b->unsettled[b->n_unsettled++] = u;
}

static void unsettled_free(struct mesh_unsettled *u)
{
    free(u->node_id);
    free(u->client_id);
    free(u);
}

/* Drops the entries marked done (node_id freed) or too old. */
static void unsettled_compact(struct broker *b)
{
    uint64_t now = clock_now_ms();
    size_t j = 0;
    for (size_t i = 0; i < b->n_unsettled; i++) {
        struct mesh_unsettled *u = b->unsettled[i];
        if (!u->is_asking && (!u->node_id || now > u->since_ms + MESH_UNSETTLED_MS)) {
            unsettled_free(u);
            continue;
        }
        b->unsettled[j++] = u;
    }
    b->n_unsettled = j;
}

static void on_settled(void *ctx, int rc)
{
    struct mesh_unsettled *u = ctx;
    u->is_asking = false;
    if (rc != 0 && rc != ERR_EXISTS)
        return;
    free(u->node_id);
    u->node_id = NULL; /* answered: dropped at the next compaction */
    if (rc == ERR_EXISTS) {
        /* That node holds the client id with a newer epoch: this connection is the stale
         * one. */
        struct session *s = broker_session_find(u->b, u->client_id, strlen(u->client_id));
        if (s && s->epoch == u->epoch && s->conn) {
            log_info("conn", "client id owned by a newer connection elsewhere client_id=%s",
                     conn_log_id(s->conn));
            handle_fail(s->conn, ERR_TAKEN_OVER);
        }
    }
}

/* Asks again the members that owe an answer. */
static void unsettled_retry(struct broker *b)
{
    unsettled_compact(b);
    for (size_t i = 0; i < b->n_unsettled; i++) {
        struct mesh_unsettled *u = b->unsettled[i];
        if (u->is_asking || !cluster_is_member(b->cluster, u->node_id))
            continue;
        /* A client that reconnected elsewhere since, or left: nothing to settle. */
        struct session *s = broker_session_find(b, u->client_id, strlen(u->client_id));
        if (!s || s->epoch != u->epoch) {
            free(u->node_id);
            u->node_id = NULL;
            continue;
        }
        log_info("cluster", "asking again for a takeover node=%s", u->node_id);
        if (cluster_takeover(b->cluster, u->node_id, u->client_id, u->epoch,
                             MESH_TAKEOVER_TIMEOUT_MS, on_settled, u) == 0)
            u->is_asking = true;
    }
}

void mesh_tick(struct broker *b)
{
    if (!b->cluster)
        return;
    uint64_t now = clock_now_ms();
    if (now >= b->next_settle_ms) {
        b->next_settle_ms = now + MESH_SETTLE_MS;
        unsettled_retry(b);
    }
    if (b->n_handed)
        handed_expire(b, false);
    mesh_members_tick(b);
    /* Joined once: every member in the registry is linked and its routes are held. A member
     * that dies later does not make this node unready (Kubernetes would pull every survivor
     * out of service at once). */
    if (!b->has_joined) {
        const char *awaited = mesh_members_awaited(b);
        if (!awaited && cluster_is_joined(b->cluster)) {
            b->has_joined = true;
            log_info("cluster", "joined the cluster members=%zu", cluster_members(b->cluster));
        } else if (now > b->started_ms + 5000) {
            log_ratelimited(LOG_LEVEL_INFO, "cluster", "not joined yet, waiting for %s",
                            awaited ? awaited : "the routes of every member");
        }
    }
}

struct takeover_out {
    struct broker *b;
    void (*cont)(void *ctx);
    void *ctx;
    char *node_id;
    char *client_id;
    uint64_t epoch;
};

static void on_takeover_out(void *ctx, int rc)
{
    struct takeover_out *t = ctx;
    if (rc < 0 && rc != ERR_CANCELED && rc != ERR_NOT_FOUND)
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "takeover not acknowledged rc=%s", err_str(rc));
    if ((rc == ERR_TIMEOUT || rc == ERR_NOT_FOUND) && t->b->cluster)
        unsettled_add(t->b, t->node_id, t->client_id, t->epoch);
    t->cont(t->ctx);
    free(t->node_id);
    free(t->client_id);
    free(t);
}

bool mesh_takeover(struct broker *b, const char *prev_owner, const char *client_id, uint64_t epoch,
                   void (*cont)(void *ctx), void *ctx)
{
    if (!b->cluster || !prev_owner || strcmp(prev_owner, b->conf->node_id) == 0)
        return false;
    if (!cluster_is_member(b->cluster, prev_owner)) {
        /* Dead, or on the other side of a partition: asked when it is back. */
        unsettled_add(b, prev_owner, client_id, epoch);
        return false;
    }
    struct takeover_out *t = xcalloc(1, sizeof(*t));
    t->b = b;
    t->cont = cont;
    t->ctx = ctx;
    t->node_id = xstrdup(prev_owner);
    t->client_id = xstrdup(client_id);
    t->epoch = epoch;
    b->stats.takeovers_out++;
    if (cluster_takeover(b->cluster, prev_owner, client_id, epoch, MESH_TAKEOVER_TIMEOUT_MS,
                         on_takeover_out, t) < 0) {
        unsettled_add(b, prev_owner, client_id, epoch); /* a member with its link down */
        free(t->node_id);
        free(t->client_id);
        free(t);
        return false;
    }
    return true;
}
