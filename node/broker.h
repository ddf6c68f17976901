#ifndef SHOAL_NODE_BROKER_H
#define SHOAL_NODE_BROKER_H

/*
 * struct broker is the one root context of a node: loop, configuration, listeners, session
 * table, subscription trie, retained cache, store and statistics. There are no globals; every
 * callback reaches the broker through its handle. The struct is visible to node/ modules only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "node/buf.h"
#include "node/keepalive.h"
#include "node/session.h"
#include "node/stats.h"

struct conf;
struct conn;
struct session;
struct listener;
struct store;
struct topic_tree;
struct retain;
struct auth;
struct acl;
struct security;
struct persist_wait;
struct cluster;
struct cluster_peer;
struct mesh_recent;
struct mesh_handed;

#define BROKER_SCRATCH_SIZE (64u * 1024u)

/* One session's delivery of the message being routed (overlapping subscriptions merged). */
struct broker_match {
    struct session *s;
    struct session_dlv d;
};

struct broker {
    uv_loop_t *loop;
    struct conf *conf;
    struct listener *listeners; /* array of n_listeners */
    size_t n_listeners;
    struct store *store;
    struct topic_tree *subs;
    struct retain *retained;
    struct keepalive_wheel wheel;
    struct stats stats;

    /* Session table: open hashing by client id. */
    struct session **sess_buckets;
    size_t sess_nbuckets;
    size_t sess_count;
    uint64_t next_session_id;

    struct conn *conns;      /* every open connection (for drain and $SYS) */
    struct conn *flush_head; /* connections with output waiting for this pass */

    uv_prepare_t prepare; /* per-pass: refresh clock, flush writes */
    uv_timer_t tick;      /* timing wheel and $SYS */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;

    uint8_t *scratch; /* loop-wide read buffer lent to connections without partial data */
    bool scratch_busy;
    struct buf xbuf[3];     /* transport work areas: between layers (0, 1) and plaintext (2) */
    const uint8_t *cur_raw; /* encoded form of the packet being handled */
    size_t cur_raw_len;

    /* Security state, replaced as a whole by reloads (node/security.c). */
    struct auth *auth; /* NULL without password_file */
    struct acl *acl;   /* NULL without acl_file: everything is allowed */
    struct security *sec;

    /* Router work area reused across publishes. */
    struct broker_match *matches;
    size_t n_matches;
    size_t cap_matches;
    uint64_t match_gen;
    const struct session *match_from; /* publisher, for no-local */
    struct msg *match_msg;

    /* Flow control: while a subscriber is congested, the publishers feeding it are paused. */
    struct conn *publisher;        /* connection whose PUBLISH is being routed, if any */
    struct persist_wait *ack_wait; /* its acknowledgement's store appends, if any */
    struct buf persist_out;        /* encodes one store write (the store copies it) */
    uint64_t store_key_next;       /* keys of stored queue entries: random start, then +1 */
    struct session **trims;        /* sessions with stored messages to trim this pass */
    size_t n_trims;
    size_t cap_trims;
    struct conn *paused;         /* paused publishers, through conn->paused_next */
    struct session_q *congested; /* congested sessions, through session_q->cong_next */
    uint32_t n_congested;
    uint32_t n_links_pressed; /* cluster links with more output than they write */

    /* Cluster (node/mesh.c): NULL on a single node. */
    struct cluster *cluster;
    struct topic_tree *remote;  /* remote routes; owners are peers */
    struct mesh_fwd_to *fwd_to; /* members one publish goes to, with the groups it is for */
    size_t n_fwd_to;
    size_t cap_fwd_to;
    struct mesh_group **groups; /* shared groups ("GROUP/FILTER") routed somewhere */
    size_t n_groups;
    size_t cap_groups;
    /* While a publish is routed here: shared groups are filtered (a group goes to one member
     * cluster-wide), to allow[] only; a forwarded message reaches plain subscribers only if
     * fwd_plain. */
    bool share_filter;
    bool fwd_plain;
    const struct mesh_allow *allow;
    size_t n_allow;
    struct mesh_allow *self_allow; /* this node's picks for a local publish */
    size_t n_self_allow;
    size_t cap_self_allow;
    bool in_forward;            /* routing a message a member forwarded */
    uint64_t fwd_peer_uid;      /* which member, while a live forward is routed (else 0) */
    bool in_forward_wait;       /* its store appends are collected */
    struct mesh_recent *recent; /* takeovers received lately */
    struct mesh_handed *handed; /* sessions taken over, still passing messages on */
    size_t n_handed;
    const struct msg *passed_m; /* the last message passed on, and to whom */
    uint64_t passed_uid;
    size_t n_recent;
    struct mesh_unsettled **unsettled; /* takeovers a member has not answered yet */
    size_t n_unsettled;
    size_t cap_unsettled;
    uint64_t next_settle_ms;
    struct mesh_members *members; /* member registry and adoption (node/mesh_members.c) */
    /* Sessions that moved here from another node and may be owed its parked messages
     * (node/mesh_moved.c). While a publish is routed: the node that published it, and the
     * node it was parked for when it is delivered again (NULL: live). */
    const char *replay_of;
    uint64_t pub_seq;      /* the last sequence number this node gave a QoS >= 1 publish */
    const char *self_name; /* conf->node_id interned (node/names.h), once the cluster is on */

    struct keepalive_entry start_retry; /* loading stored sessions again */
    uint64_t started_ms;
    uint64_t last_sys_ms;
    struct http *http; /* metrics and health endpoint (node/http.c); NULL without one */
    bool stopping;
    bool has_joined; /* the cluster, once since start: readiness (node/mesh.c) */
    bool draining;   /* SIGTERM: no new clients, sessions handed to the store (node/drain.c) */
    bool drain_leaving;
    uint32_t drain_waiting; /* sessions whose clients were sent away, not yet taken over */
    uint64_t drain_started_ms;
    uint64_t drain_left_ms; /* when it left the member registry (has_drain_left) */
    bool has_drain_left;
    struct keepalive_entry drain_timer;
    int exit_code;
};

/*
 * Builds a broker from c (ownership of c passes to the broker): opens the store, binds every
 * listener and starts the timers. Returns 0 or a negative error with a message already logged.
 */
int broker_start(struct broker *b, uv_loop_t *loop, struct conf *c);
/* Begins an orderly stop: closes listeners and connections; uv_run then returns. */
void broker_stop(struct broker *b);
/* Frees everything after uv_run has returned. */
void broker_free(struct broker *b);

/* Session table */
struct session *broker_session_find(struct broker *b, const char *client_id, size_t len);
void broker_session_insert(struct broker *b, struct session *s);
void broker_session_remove(struct broker *b, struct session *s);

/* Resumes every paused publisher (no subscriber is congested any more). */
void broker_resume_publishers(struct broker *b);

/* Queues c to be flushed before the loop next blocks. */
void broker_flush_later(struct broker *b, struct conn *c);

#endif
