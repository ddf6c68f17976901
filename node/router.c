/*
 * Routing of one published message: the retained cache first, then one walk of the trie. A
 * session with overlapping subscriptions gets a single delivery at the highest granted QoS
 * carrying every matching subscription identifier, merged through a per-publish generation
 * stamp on the session instead of a lookup table.
 */
#include "node/router.h"

#include <stddef.h>
#include <stdlib.h>

#include "node/acl.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/retain.h"
#include "node/session.h"
#include "node/topic_tree.h"
#include "store/store.h"

static bool is_online(void *owner)
{
    const struct session *s = owner;
    return s->conn != NULL;
}

static void on_match(void *ctx, void *owner, void *rec)
{
    struct broker *b = ctx;
    struct session *s = owner;
    const struct session_sub *sub = rec;
    const struct msg *m = b->match_msg;

    if (sub->no_local && b->match_from && b->match_from->id == s->id)
        return;
    if (sub->is_shared) {
        if (b->share_filter && !mesh_group_allowed(b, sub->filter, sub->filter_len))
            return; /* another node delivers it to this group */
    } else if (b->in_forward && !b->fwd_plain) {
        return; /* forwarded for a shared group only */
    }
    if ((s->moved || b->replay_of) && !mesh_moved_admit(b, s, m))
        return; /* a parked message goes only to the sessions that missed it */
    uint8_t qos = m->qos < sub->qos ? m->qos : sub->qos;
    bool retain = sub->retain_as_published && s->version == 5 && m->retain;
    struct session_dlv *d;
    if (s->match_gen == b->match_gen) {
        d = &b->matches[s->match_idx].d;
        if (qos > d->qos)
            d->qos = qos;
        d->retain = d->retain || retain;
    } else {
        if (b->n_matches == b->cap_matches) {
            b->cap_matches = b->cap_matches ? b->cap_matches * 2 : 64;
            b->matches = xrealloc(b->matches, b->cap_matches * sizeof(*b->matches));
        }
        s->match_gen = b->match_gen;
        s->match_idx = (uint32_t)b->n_matches;
        struct broker_match *bm = &b->matches[b->n_matches++];
        bm->s = s;
        d = &bm->d;
        d->m = b->match_msg;
        d->qos = qos;
        d->retain = retain;
        d->n_sub_ids = 0;
        d->from_store = false;
        d->store_key = 0;
    }
    if (sub->sub_id && d->n_sub_ids < SESSION_MAX_SUB_IDS)
        d->sub_ids[d->n_sub_ids++] = sub->sub_id;
}

static void on_retain_stored(void *ctx, int rc)
{
    (void)ctx;
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "router", "retained message not stored rc=%s", err_str(rc));
}

/* Persists a retained update. $SYS topics are per node and never stored. */
static void store_retained(struct broker *b, const struct msg *m)
{
    if (!b->store || m->topic[0] == '$')
        return;
    size_t n = m->payload_len ? msg_blob_size(m) : 0;
    uint8_t stack[512];
    uint8_t *p = n <= sizeof(stack) ? stack : xmalloc(n);
    if (n)
        msg_blob_write(m, p, clock_now_ms(), clock_wall_s() * 1000u);
    struct store_blob blob = {p, n};
    (void)store_retain_set(b->store, m->topic, blob, on_retain_stored, b);
    if (p != stack)
        free(p);
}

void router_publish(struct broker *b, struct msg *m, const struct session *from)
{
    /* A forwarded message's retained copy comes with the origin's notice, already stored. */
    if (m->retain && !b->in_forward) {
        retain_set(b->retained, m);
        store_retained(b, m);
        mesh_retain_changed(b, m);
    }
    if (b->cluster && !b->in_forward) {
        if (m->qos) {
            m->pub_seq = ++b->pub_seq;
            m->pub_node = b->self_name;
        }
        mesh_pick(b, m);
    }
    b->match_gen++;
    b->n_matches = 0;
    b->match_from = from;
    b->match_msg = m;
    topic_tree_match(b->subs, m->topic, m->topic_len, is_online, on_match, b);
    /* Deliveries may not re-enter the router (wills are published from timers, not here), so
     * the match array is stable while we walk it. */
    if (b->n_matches == 0 && m->topic[0] != '$')
        b->stats.pub_unrouted++;
    for (size_t i = 0; i < b->n_matches; i++) {
        struct session *s = b->matches[i].s;
        /* Once per receiving session, so a wildcard subscription never reaches a topic the
         * client may not read. */
        if (b->acl &&
            !acl_check(b->acl, s->client_id, s->username, m->topic, m->topic_len, ACL_READ)) {
            b->stats.acl_denied++;
            continue;
        }
        if (s->handed_to) {
            mesh_pass_on(b, s, m);
            continue;
        }
        session_deliver(s, &b->matches[i].d);
    }
    b->n_matches = 0;
    b->match_msg = NULL;
    b->match_from = NULL;
    b->passed_m = NULL; /* a later message may reuse its memory */
    mesh_publish(b, m);
}
