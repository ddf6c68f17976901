/*
 * The cluster's use of the store: the member registry, the adoption of a dead member's
 * sessions, and the messages parked for a member that could not be reached.
 *
 * Every node writes a heartbeat (its advertised address and incarnation) with a short TTL and
 * reads the registry back, dialing every member it lists: a node finds the cluster through
 * Redis even without seeds. A node id seen before that is neither listed nor a linked member is
 * dead on both counts (so a slow link or a Redis outage alone adopts nothing), and one survivor,
 * elected in the store, claims its stored sessions with store_owner_adopt. The claim fences the
 * dead owner, the adopted sessions' subscriptions become this node's routes, and from then on
 * their messages queue in the store as for any offline session.
 *
 * Messages a member did not acknowledge before it died are parked for its node id
 * (node/mesh.c). Whoever holds that id's adoption lock takes them: the node itself once it is
 * back (its own lock, so it never races an adopter) or its adopter, which keeps draining for a
 * while, as members that detect the death later park later. Either delivers them again to the
 * sessions that moved away from that node, wherever they are (node/mesh_moved.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/router.h"
#include "node/session.h"
#include "store/store.h"

#define MEMBER_HEARTBEAT_MS 1000
#define MEMBER_TTL_MS       3000
#define MEMBER_LIST_MS      1000
/* Node ids gone from the registry are read this often, and held gone this long before their
 * sessions are adopted. */
#define MEMBER_GONE_MS 5000
#define ADOPT_LOCK_MS  30000
#define ADOPT_DRAIN_MS 60000 /* an adopter keeps taking parked messages this long */
#define PARK_TAKE_MAX  256
#define KNOWN_MAX      1024

/* A node id this node has seen in the registry. */
struct mesh_known {
    char *node_id;
    bool is_listed;      /* in the last registry read */
    uint64_t adopted_ms; /* when its sessions were adopted here; 0: not adopted */
    uint64_t gone_ms;    /* first reported gone (never seen listed by this node); 0: no */
};

struct mesh_members {
    struct broker *b;
    uint64_t next_heartbeat_ms;
    uint64_t next_list_ms;
    bool is_heartbeat_busy;
    bool is_list_busy;
    bool is_listed_once; /* the registry was read since start */
    uint64_t next_gone_ms;
    bool is_gone_busy;
    struct mesh_known *known;
    size_t n_known;

    /* One adoption or drain at a time: lock, scan, claims, then parked messages. */
    bool is_busy;
    char *subject;     /* node id adopted or drained */
    bool is_own;       /* this node's own parked messages */
    bool is_held;      /* draining waits for congested sessions here (mesh_members_poll) */
    size_t n_claiming; /* owner_adopt requests in flight */
    size_t n_adopted;
    size_t n_drained;
    bool is_closing;

    char **round; /* dead node ids to visit in this registry round */
    size_t n_round;
    size_t round_pos;
};

static struct mesh_known *known_find(struct mesh_members *mm, const char *node_id)
{
    for (size_t i = 0; i < mm->n_known; i++)
        if (strcmp(mm->known[i].node_id, node_id) == 0)
            return &mm->known[i];
    return NULL;
}

static void known_drop(struct mesh_members *mm, const char *node_id)
{
    for (size_t i = 0; i < mm->n_known; i++) {
        if (strcmp(mm->known[i].node_id, node_id) == 0) {
            free(mm->known[i].node_id);
            mm->known[i] = mm->known[--mm->n_known];
            return;
        }
    }
}

/* ---- heartbeat and discovery ------------------------------------------------------------ */

static void on_heartbeat(void *ctx, int rc)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    mm->is_heartbeat_busy = false;
    if (rc < 0)
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "member heartbeat not stored rc=%s",
                        err_str(rc));
}

static void heartbeat(struct mesh_members *mm)
{
    struct broker *b = mm->b;
    char info[256];
    int n = snprintf(info, sizeof(info), "%s %llu", cluster_advertise(b->cluster),
                     (unsigned long long)cluster_incarnation(b->cluster));
    if (n <= 0 || (size_t)n >= sizeof(info))
        return;
    struct store_blob blob = {(const uint8_t *)info, (size_t)n};
    if (store_member_heartbeat(b->store, b->conf->node_id, blob, MEMBER_TTL_MS, on_heartbeat, mm) ==
        0)
        mm->is_heartbeat_busy = true;
}

static void adopt_next(struct mesh_members *mm);
static void round_plan(struct mesh_members *mm);

static void on_listed(void *ctx, int rc, const struct store_blob *pairs, size_t n)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    mm->is_list_busy = false;
    struct broker *b = mm->b;
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "member registry not read rc=%s", err_str(rc));
        return;
    }
    mm->is_listed_once = true;
    for (size_t i = 0; i < mm->n_known; i++)
        mm->known[i].is_listed = false;
    for (size_t i = 0; i + 1 < n; i += 2) {
        char id[256], info[256];
        if (pairs[i].len == 0 || pairs[i].len >= sizeof(id) || pairs[i + 1].len >= sizeof(info))
            continue;
        memcpy(id, pairs[i].p, pairs[i].len);
        id[pairs[i].len] = '\0';
        memcpy(info, pairs[i + 1].p, pairs[i + 1].len);
        info[pairs[i + 1].len] = '\0';
        if (strcmp(id, b->conf->node_id) == 0)
            continue;
        struct mesh_known *k = known_find(mm, id);
        if (!k && mm->n_known < KNOWN_MAX) {
            mm->known = xrealloc(mm->known, (mm->n_known + 1) * sizeof(*mm->known));
            k = &mm->known[mm->n_known++];
            *k = (struct mesh_known){.node_id = xstrdup(id)};
        }
        if (k)
            k->is_listed = true;
        char *sp = strchr(info, ' ');
        if (sp)
            *sp = '\0';
        if (info[0])
            cluster_add_member(b->cluster, id, info);
    }
    round_plan(mm);
    adopt_next(mm);
}

/*
 * Node ids that heartbeated once and are gone from the registry, including ones that died
 * while no member ran (a whole cluster restarted under new names): this node never saw them
 * listed, so without this their offline sessions would wait for their clients, unrouted.
 * They are adopted like any dead member, once reported gone for MEMBER_GONE_MS (a member that
 * is only slow to heartbeat is back by then) and while no link reaches them.
 */
static void on_gone(void *ctx, int rc, const struct store_blob *ids, size_t n)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    mm->is_gone_busy = false;
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "departed members not read rc=%s", err_str(rc));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char id[256];
        if (ids[i].len == 0 || ids[i].len >= sizeof(id))
            continue;
        memcpy(id, ids[i].p, ids[i].len);
        id[ids[i].len] = '\0';
        if (strcmp(id, mm->b->conf->node_id) == 0 || known_find(mm, id) || mm->n_known >= KNOWN_MAX)
            continue;
        mm->known = xrealloc(mm->known, (mm->n_known + 1) * sizeof(*mm->known));
        mm->known[mm->n_known++] =
            (struct mesh_known){.node_id = xstrdup(id), .gone_ms = clock_now_ms()};
    }
}

static void on_forgotten(void *ctx, int rc)
{
    (void)ctx;
    if (rc < 0 && rc != ERR_CANCELED)
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "adopted member not forgotten rc=%s",
                        err_str(rc));
}

/* ---- adoption --------------------------------------------------------------------------- */

static void adopt_finish(struct mesh_members *mm)
{
    free(mm->subject);
    mm->subject = NULL;
    mm->is_busy = false;
}

static void drain(struct mesh_members *mm);

static void on_parked_taken(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    struct broker *b = mm->b;
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "parked messages not read node=%s rc=%s",
                        mm->subject, err_str(rc));
        adopt_finish(mm);
        return;
    }
    uint64_t inc = b->cluster ? cluster_incarnation(b->cluster) : 0;
    for (size_t i = 0; i < n; i++) {
        char pub[256];
        struct mesh_parked k;
        struct msg *m = mesh_park_read(msgs[i].p, msgs[i].len, pub, sizeof(pub), &k);
        if (!m) {
            log_ratelimited(LOG_LEVEL_WARN, "cluster", "unreadable parked message dropped");
            continue;
        }
        if (mm->is_own && inc && k.target_inc == inc) {
            /* Parked while this node was cut off from pub, alive: its sessions here are the
             * ones it was for. Once: not if the same forward came on a link already. */
            if (cluster_parked_admit(b->cluster, pub, k.parker_inc, k.fwd_id))
                mesh_deliver_parked(b, m, pub, &k);
        } else {
            /* To the sessions that moved away from that node, wherever they are now. */
            mesh_replay(b, m, pub, mm->subject);
        }
        msg_unref(&m);
    }
    mm->n_drained += n;
    b->stats.fwd_unparked += n;
    if (n == PARK_TAKE_MAX) {
        /* Like a publisher, the park waits for sessions that cannot keep up: otherwise a
         * long park would overflow their queues at once. */
        if (b->n_congested > 0)
            mm->is_held = true;
        else
            drain(mm);
        return;
    }
    if (mm->n_drained)
        log_info("cluster", "parked messages delivered node=%s n=%zu", mm->subject, mm->n_drained);
    adopt_finish(mm);
    adopt_next(mm); /* the next dead node of this round, if any */
}

static void drain(struct mesh_members *mm)
{
    if (store_park_take(mm->b->store, mm->subject, PARK_TAKE_MAX, on_parked_taken, mm) < 0)
        adopt_finish(mm);
}

static void claim_done(struct mesh_members *mm)
{
    struct mesh_known *k = known_find(mm, mm->subject);
    if (mm->n_adopted)
        log_info("cluster", "sessions adopted from a dead member node=%s n=%zu", mm->subject,
                 mm->n_adopted);
    if (k && !k->adopted_ms)
        k->adopted_ms = clock_now_ms();
    drain(mm);
}

struct adopt_claim {
    struct mesh_members *mm;
    char *client_id;
    uint8_t *state;
    size_t state_len;
};

static void on_adopted(void *ctx, int rc, uint64_t epoch, const char *prev_owner,
                       uint64_t prev_epoch)
{
    struct adopt_claim *a = ctx;
    struct mesh_members *mm = a->mm;
    (void)prev_owner;
    (void)prev_epoch;
    if (rc == 0 && !mm->is_closing) {
        struct store_blob st = {a->state, a->state_len};
        if (persist_adopt(mm->b, a->client_id, &st, epoch, mm->subject) == 0)
            mm->n_adopted++;
    } else if (rc < 0 && rc != ERR_EXISTS && rc != ERR_CANCELED) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "session not adopted rc=%s", err_str(rc));
    }
    free(a->client_id);
    free(a->state);
    free(a);
    if (rc == ERR_CANCELED)
        return;
    if (--mm->n_claiming == 0)
        claim_done(mm);
}

static void on_owned_scanned(void *ctx, int rc, const struct store_blob *pairs, size_t n)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "cluster", "sessions of a dead member not read rc=%s",
                        err_str(rc));
        adopt_finish(mm);
        return;
    }
    mm->n_claiming = 1; /* held until every request is issued */
    for (size_t i = 0; i + 1 < n; i += 2) {
        struct adopt_claim *a = xcalloc(1, sizeof(*a));
        a->mm = mm;
        a->client_id = xstrndup((const char *)pairs[i].p, pairs[i].len);
        a->state = xmalloc(pairs[i + 1].len ? pairs[i + 1].len : 1);
        memcpy(a->state, pairs[i + 1].p, pairs[i + 1].len);
        a->state_len = pairs[i + 1].len;
        if (store_owner_adopt(mm->b->store, a->client_id, mm->subject, on_adopted, a) < 0) {
            free(a->client_id);
            free(a->state);
            free(a);
            continue;
        }
        mm->n_claiming++;
    }
    if (--mm->n_claiming == 0)
        claim_done(mm);
}

static void on_locked(void *ctx, int rc)
{
    struct mesh_members *mm = ctx;
    if (rc == ERR_CANCELED)
        return;
    struct broker *b = mm->b;
    if (rc < 0) {
        /* Another node adopts it (ERR_EXISTS), or the store is away: the next one. */
        adopt_finish(mm);
        adopt_next(mm);
        return;
    }
    struct mesh_known *k = mm->is_own ? NULL : known_find(mm, mm->subject);
    if (!k || k->adopted_ms) {
        drain(mm); /* this node's own parked messages, or late ones for an adopted node */
        return;
    }
    mm->n_adopted = 0;
    if (store_session_scan_owned(b->store, mm->subject, on_owned_scanned, mm) < 0)
        adopt_finish(mm);
}

static void lock(struct mesh_members *mm, const char *node_id, bool is_own, uint32_t ttl_ms)
{
    mm->subject = xstrdup(node_id);
    mm->is_own = is_own;
    mm->n_drained = 0;
    mm->is_busy = true;
    if (store_node_adopt_lock(mm->b->store, node_id, ttl_ms, on_locked, mm) < 0)
        adopt_finish(mm);
}

/* Starts the next step of this round: each dead node in turn, one at a time. */
static void adopt_next(struct mesh_members *mm)
{
    while (!mm->is_busy && !mm->is_closing && mm->round_pos < mm->n_round) {
        char *id = mm->round[mm->round_pos++];
        struct mesh_known *k = known_find(mm, id);
        /* Still dead: not listed again, and no link reaches it. */
        if (k && !k->is_listed && !cluster_is_member(mm->b->cluster, id)) {
            /* The adopter holds the election while it drains; a dead adopter is replaced
             * once its hold runs out. */
            lock(mm, id, false, ADOPT_LOCK_MS);
        }
    }
}

/* Puts the dead node ids in this round's list (a node id seen before that is neither listed
 * nor linked), and forgets the ones adopted long enough ago. */
static void round_plan(struct mesh_members *mm)
{
    for (size_t i = 0; i < mm->n_round; i++)
        free(mm->round[i]);
    mm->n_round = 0;
    mm->round_pos = 0;
    uint64_t now = clock_now_ms();
    for (size_t i = 0; i < mm->n_known;) {
        struct mesh_known *k = &mm->known[i];
        if (k->is_listed) {
            k->adopted_ms = 0; /* back: it takes its parked messages itself */
            k->gone_ms = 0;
            i++;
            continue;
        }
        if (k->adopted_ms && now > k->adopted_ms + ADOPT_DRAIN_MS) {
            log_info("cluster", "adoption finished node=%s", k->node_id);
            /* Nothing of it is left to adopt: no longer reported gone. */
            (void)store_member_forget(mm->b->store, k->node_id, on_forgotten, NULL);
            known_drop(mm, k->node_id);
            continue;
        }
        if (k->gone_ms && now < k->gone_ms + MEMBER_GONE_MS) {
            i++;
            continue;
        }
        if (!cluster_is_member(mm->b->cluster, k->node_id)) {
            mm->round = xrealloc(mm->round, (mm->n_round + 1) * sizeof(*mm->round));
            mm->round[mm->n_round++] = xstrdup(k->node_id);
        }
        i++;
    }
}

/* ---- the timer -------------------------------------------------------------------------- */

void mesh_members_tick(struct broker *b)
{
    struct mesh_members *mm = b->members;
    if (!mm) {
        mm = xcalloc(1, sizeof(*mm));
        mm->b = b;
        b->members = mm;
    }
    uint64_t now = clock_now_ms();
    /* A draining node that left the registry must not write itself back into it. */
    if (now >= mm->next_heartbeat_ms && !mm->is_heartbeat_busy && !b->drain_leaving) {
        mm->next_heartbeat_ms = now + MEMBER_HEARTBEAT_MS;
        heartbeat(mm);
    }
    if (now >= mm->next_list_ms && !mm->is_list_busy && !mm->is_busy) {
        mm->next_list_ms = now + MEMBER_LIST_MS;
        if (store_member_list(b->store, on_listed, mm) == 0)
            mm->is_list_busy = true;
        /* This node's own parked messages (left for it while it was away). */
        lock(mm, b->conf->node_id, true, MEMBER_TTL_MS);
    }
    if (now >= mm->next_gone_ms && mm->is_listed_once && !mm->is_gone_busy) {
        mm->next_gone_ms = now + MEMBER_GONE_MS;
        if (store_member_gone(b->store, on_gone, mm) == 0)
            mm->is_gone_busy = true;
    }
}

void mesh_members_poll(struct broker *b)
{
    struct mesh_members *mm = b->members;
    if (mm && mm->is_held && b->n_congested == 0 && !mm->is_closing) {
        mm->is_held = false;
        drain(mm);
    }
}

bool mesh_members_is_listed(const struct broker *b, const char *node_id)
{
    const struct mesh_known *k = b->members ? known_find(b->members, node_id) : NULL;
    return k && k->is_listed;
}

void mesh_members_kick(struct broker *b)
{
    if (b->members)
        b->members->next_list_ms = 0;
    mesh_members_tick(b);
}

const char *mesh_members_awaited(const struct broker *b)
{
    const struct mesh_members *mm = b->members;
    if (!mm || !mm->is_listed_once)
        return "the member registry";
    for (size_t i = 0; i < mm->n_known; i++)
        if (mm->known[i].is_listed && !cluster_is_member(b->cluster, mm->known[i].node_id))
            return mm->known[i].node_id;
    return NULL;
}

void mesh_members_stop(struct broker *b)
{
    if (b->members)
        b->members->is_closing = true;
}

void mesh_members_free(struct broker *b)
{
    struct mesh_members *mm = b->members;
    if (!mm)
        return;
    for (size_t i = 0; i < mm->n_known; i++)
        free(mm->known[i].node_id);
    free(mm->known);
    for (size_t i = 0; i < mm->n_round; i++)
        free(mm->round[i]);
    free(mm->round);
    free(mm->subject);
    free(mm);
    b->members = NULL;
}
