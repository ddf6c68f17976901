/*
 * Sessions that moved between nodes, and the messages parked for the node they left.
 *
 * A QoS 1/2 forward that a member never acknowledged is parked in the store for that member's
 * node id (node/mesh.c) and later taken by whoever holds that id's election (the node itself
 * once it is back, or its adopter; node/mesh_members.c). Meanwhile the sessions it was meant
 * for may have moved anywhere: a client whose node died reconnects at once to another node,
 * long before the death is declared. So a parked message is delivered again cluster-wide, and
 * each node lets it through only to the sessions marked as moved from that node.
 *
 * Such a session may have had the same message by its new node too: a publisher sends to the
 * node it left until that node's routes are dropped, and to its new node as soon as the new
 * route arrives. Every QoS 1/2 message carries its publishing node's sequence number, and
 * one publisher's messages reach a node in order. So the first number a moved session gets
 * from a publisher on its new node divides that publisher's stream: a replayed message before
 * it was missed, and one from it on arrived already. A replay can also come first, ahead of
 * the live copy of the same message (at a takeover the old owner passes on what it still
 * gets): the live copy of a number already taken as a replay is skipped.
 *
 * It may also hold the message in its stored queue: the node it left stored it and died
 * before acknowledging the forward. A publisher's messages are stored in order too, so the
 * last number the session read back from the store is where the missed part begins. What
 * was stored twice anyway (a replay appended to a session kept in the store) is dropped when
 * the queue is read back (node/persist.c).
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/session.h"

#define MOVED_KEEP_MS (10 * 60 * 1000) /* as long as a takeover may stay unanswered */
#define MOVED_PUB_MAX 64               /* publishers remembered per session */
#define PARK_MAGIC    0x50 /* 'P': a parked entry without the forward (a bare blob starts 1) */
#define PARK_MAGIC2   0x51 /* 'Q': with the forward it was */

struct moved_pub {
    const char *node; /* interned (node/names.h) */
    uint64_t have;    /* the last number it holds from the store, 0 = none */
    uint64_t first;   /* the first number it got live on this node, 0 = none yet */
    uint64_t taken;   /* the last number it took as a replay, 0 = none */
};

struct session_moved {
    char *from;
    uint64_t until_ms;
    struct moved_pub *pubs;
    size_t n_pubs;
};

void mesh_moved_free(struct session *s)
{
    struct session_moved *mv = s->moved;
    if (!mv)
        return;
    free(mv->pubs);
    free(mv->from);
    free(mv);
    s->moved = NULL;
}

void mesh_moved_mark(struct session *s, const char *from)
{
    if (s->moved && strcmp(s->moved->from, from) == 0) {
        s->moved->until_ms = clock_now_ms() + MOVED_KEEP_MS; /* what it learned still holds */
        return;
    }
    mesh_moved_free(s);
    struct session_moved *mv = xcalloc(1, sizeof(*mv));
    mv->from = xstrdup(from);
    mv->until_ms = clock_now_ms() + MOVED_KEEP_MS;
    s->moved = mv;
}

static struct moved_pub *pub_get(struct session_moved *mv, const char *node)
{
    for (size_t i = 0; i < mv->n_pubs; i++)
        if (mv->pubs[i].node == node)
            return &mv->pubs[i];
    if (mv->n_pubs == MOVED_PUB_MAX)
        return NULL;
    mv->pubs = xrealloc(mv->pubs, (mv->n_pubs + 1) * sizeof(*mv->pubs));
    mv->pubs[mv->n_pubs] = (struct moved_pub){node, 0, 0, 0};
    return &mv->pubs[mv->n_pubs++];
}

void mesh_moved_stored(struct session *s, const struct msg *m)
{
    struct moved_pub *e;
    if (s->moved && m->pub_node && (e = pub_get(s->moved, m->pub_node)) && m->pub_seq > e->have)
        e->have = m->pub_seq;
}

bool mesh_moved_admit(struct broker *b, struct session *s, const struct msg *m)
{
    struct session_moved *mv = s->moved;
    if (mv && clock_now_ms() > mv->until_ms) {
        mesh_moved_free(s);
        mv = NULL;
    }
    if (!mv)
        return b->replay_of == NULL;
    struct moved_pub *e = m->pub_node ? pub_get(mv, m->pub_node) : NULL;
    if (b->replay_of) {
        if (strcmp(mv->from, b->replay_of) != 0)
            return false;
        if (!e)
            return true;
        if (m->pub_seq <= e->have || (e->first && m->pub_seq >= e->first))
            return false;
        if (m->pub_seq > e->taken)
            e->taken = m->pub_seq;
        return true;
    }
    if (e && !e->first)
        e->first = m->pub_seq;
    /* A replay can overtake the live copy of the same message (it left the publisher's node
     * for the old owner first): what a replay brought is not delivered again. */
    return !e || !m->pub_seq || m->pub_seq > e->taken;
}

/* ---- parked entries: MAGIC2, publisher length (1 byte), publisher, sequence (8, big-endian);
 * the incarnation it was parked for (8), the forward's id (8) and the parker's incarnation (8);
 * plain (1), the shared groups' length (4) and the groups (NUL-terminated); then the message
 * blob. MAGIC entries stop after the sequence and go straight to the blob. ---------------- */

#define PARK_FIXED (2 + 8 + 24 + 1 + 4)

static const char *park_pub(const struct broker *b, const struct msg *m)
{
    return m->pub_node ? m->pub_node : b->conf->node_id;
}

size_t mesh_park_size(const struct broker *b, const struct msg *m,
                      const struct cluster_fwd_info *fi)
{
    return PARK_FIXED + strlen(park_pub(b, m)) + fi->groups_len + msg_blob_size(m);
}

void mesh_park_write(const struct broker *b, const struct msg *m, const struct cluster_fwd_info *fi,
                     uint8_t *out)
{
    const char *pub = park_pub(b, m);
    size_t n = strlen(pub); /* at most 64: conf checks node ids */
    uint8_t *w = out;
    *w++ = PARK_MAGIC2;
    *w++ = (uint8_t)n;
    memcpy(w, pub, n);
    w += n;
    be_put(w, m->pub_seq, 8);
    be_put(w + 8, fi->incarnation, 8);
    be_put(w + 16, fi->id, 8);
    be_put(w + 24, b->cluster ? cluster_incarnation(b->cluster) : 0, 8);
    w += 32;
    *w++ = fi->plain;
    be_put(w, fi->groups_len, 4);
    w += 4;
    if (fi->groups_len)
        memcpy(w, fi->groups, fi->groups_len);
    w += fi->groups_len;
    msg_blob_write(m, w, clock_now_ms(), clock_wall_s() * 1000u);
}

struct msg *mesh_park_read(const uint8_t *p, size_t len, char *pub, size_t pub_cap,
                           struct mesh_parked *k)
{
    uint64_t now = clock_now_ms(), wall = clock_wall_s() * 1000u;
    memset(k, 0, sizeof(*k));
    k->plain = true;
    if (len > 0 && p[0] != PARK_MAGIC && p[0] != PARK_MAGIC2) {
        /* Parked by an older version: a bare blob, publisher unknown. */
        pub[0] = '\0';
        return msg_blob_read(p, len, now, wall);
    }
    if (len < 2 || (size_t)p[1] + 1 > pub_cap || len < 2 + (size_t)p[1] + 8)
        return NULL;
    size_t n = p[1], at = 2 + n + 8;
    memcpy(pub, p + 2, n);
    pub[n] = '\0';
    uint64_t seq = be_get(p + 2 + n, 8);
    if (p[0] == PARK_MAGIC2) {
        if (len < at + 24 + 5)
            return NULL;
        k->target_inc = be_get(p + at, 8);
        k->fwd_id = be_get(p + at + 8, 8);
        k->parker_inc = be_get(p + at + 16, 8);
        k->plain = p[at + 24] != 0;
        k->groups_len = (size_t)be_get(p + at + 25, 4);
        at += 29;
        if (len < at + k->groups_len || (k->groups_len && p[at + k->groups_len - 1] != '\0'))
            return NULL;
        k->groups = (const char *)p + at;
        at += k->groups_len;
    }
    struct msg *m = msg_blob_read(p + at, len - at, now, wall);
    if (m)
        m->pub_seq = seq;
    return m;
}
