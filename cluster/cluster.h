#ifndef SHOAL_CLUSTER_CLUSTER_H
#define SHOAL_CLUSTER_CLUSTER_H

/*
 * The node-to-node layer: links to every member over TCP, membership (seeds, gossip, failure
 * detection), the route-set protocol (deltas with sequence numbers, snapshots, digests),
 * batched forwarding with acknowledgements and retransmission, takeover requests and retained
 * notices. It knows nothing of MQTT sessions: the node answers through struct cluster_hooks,
 * and keeps the remote route table (the trie) itself.
 *
 * A peer handle (struct cluster_peer) stands for one incarnation of one member: it survives
 * link breaks, and is given to peer_down exactly once, after which it is never used again.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct cluster;
struct cluster_peer;
struct msg;
struct wire_str;

struct cluster_conf {
    const char *node_id;
    const char *cluster_name;
    const char *bind;      /* NULL: all addresses */
    uint16_t port;         /* cluster listener */
    const char *advertise; /* HOST:PORT; NULL: derived from bind and port */
    const char *seeds;     /* HOST:PORT[,...] or NULL */
    const char *dns;       /* name re-resolved as seeds, or NULL */
    const uint8_t *secret; /* NULL: no proof asked */
    size_t secret_len;
};

/* What the completion of a forward says of it, beside the message. */
struct cluster_fwd_info {
    const char *node_id;  /* the peer's */
    uint64_t incarnation; /* the peer's */
    uint64_t id;          /* the forward's id on the links (0: it was never sent) */
    bool plain;
    const char *groups; /* NUL-terminated shared groups it was for, groups_len bytes */
    size_t groups_len;
};

/* Completion of a forward: 0 once the peer made it durable, ERR_SERVER_UNAVAILABLE when the
 * peer could not store it, ERR_QUOTA when its queue is full, or ERR_IO when the peer died
 * before acknowledging it, or cannot be reached while it is still alive (the message may then
 * be parked for it; see cluster_parked_admit). m and fi are borrowed for the duration of the
 * call. */
typedef void (*cluster_forward_cb)(void *ctx, int rc, struct msg *m,
                                   const struct cluster_fwd_info *fi);

struct cluster_hooks {
    void *ctx;
    /* A member is joined: its route snapshot has been applied. Optional (may be NULL), as is
     * peer_down. */
    void (*peer_up)(void *ctx, struct cluster_peer *p, const char *node_id);
    /* The member is gone (is_dead: failure detected or restarted with a new incarnation;
     * false: it left cleanly). Its routes must be dropped; p is invalid after return. */
    void (*peer_down)(void *ctx, struct cluster_peer *p, const char *node_id, bool is_dead);
    void (*route_add)(void *ctx, struct cluster_peer *p, const char *filter, size_t len);
    void (*route_remove)(void *ctx, struct cluster_peer *p, const char *filter, size_t len);
    /* A forwarded message: m has one reference for the callee to take or drop. It goes to
     * the plain subscribers when plain is set, and to one member of each of the n shared
     * groups ("GROUP/FILTER", NUL-terminated) listed. When tok is non-zero, the callee must
     * call cluster_forward_done(c, peer_uid, tok, rc) once the message is durable for its
     * persistent sessions (at once if none), or failed to be. m->pub_seq is the publisher's
     * sequence number and pub_node the publishing node (the peer itself for a live forward).
     * replay_of is NULL, or the node id m was parked for (see cluster_forward_replay). */
    void (*forward_in)(void *ctx, uint64_t peer_uid, struct msg *m, uint64_t tok, bool plain,
                       const struct wire_str *groups, size_t n, const char *pub_node,
                       const char *replay_of);
    /* Peer asks to close client_id (epoch now owns it) and flush it; the callee answers
     * with cluster_takeover_done(c, peer_uid, req, rc). */
    void (*takeover_in)(void *ctx, uint64_t peer_uid, const char *client_id, uint64_t epoch,
                        uint64_t req);
    /* A retained message was set (m non-NULL, one reference for the callee) or cleared. */
    void (*retain_in)(void *ctx, const char *topic, struct msg *m);
    /* Optional: whether the member registry still lists node_id as alive. A member whose link
     * stays down that is still listed is cut off, not dead: its routes stay, and what it
     * would get completes with ERR_IO at once, to be parked for it. */
    bool (*is_listed)(void *ctx, const char *node_id);
    /* Optional: a link's unwritten output went over 4 MiB (is_high), or back under 1 MiB (or
     * wrote nothing for a second, or closed): pause the publishers that feed it meanwhile
     * (cluster_peer_is_pressed), as for a slow consumer. Calls balance per link. */
    void (*link_pressure)(void *ctx, bool is_high);
    /* HMAC-SHA256(key, data) into out[32]. */
    void (*hmac)(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                 uint8_t out[32]);
};

/*
 * Starts listening and dialing the seeds. Strings in cf are copied. Returns 0 and sets *out, or
 * a negative error (the listener cannot bind) with a message in err.
 */
int cluster_create(uv_loop_t *loop, const struct cluster_conf *cf, const struct cluster_hooks *h,
                   struct cluster **out, char *err, size_t errlen);
/* Closes every link and frees the cluster; pending forwards complete with ERR_CANCELED. Needs
 * one more loop run for the handles to close. Sets *c to NULL. */
void cluster_destroy(struct cluster **c);

/* Adds a node to dial: "HOST:PORT". */
void cluster_add_seed(struct cluster *c, const char *host_port);
/* The same for a node whose id is known (from the store's member registry, or gossip): it is
 * not dialed while a link to that member is up. */
void cluster_add_member(struct cluster *c, const char *node_id, const char *host_port);
/* This node's advertised HOST:PORT and incarnation, for the member registry. */
const char *cluster_advertise(const struct cluster *c);
uint64_t cluster_incarnation(const struct cluster *c);

/* The local route set changed: filter went from 0 to 1 local subscription (or back). */
void cluster_route_add(struct cluster *c, const char *filter, size_t len);
void cluster_route_remove(struct cluster *c, const char *filter, size_t len);

/*
 * Sends m to peer p in this pass's batch (takes its own reference), for its plain subscribers
 * (plain) and for one member of each shared group in groups: "GROUP/FILTER" strings, each
 * NUL-terminated, groups_len bytes in all (copied). With cb, the peer acknowledges once m is
 * durable there; the frame is resent after a link break, and cb runs once with 0, ERR_IO (p
 * died) or ERR_CANCELED. Without cb (QoS 0) nothing is acknowledged.
 */
void cluster_forward(struct cluster *c, struct cluster_peer *p, struct msg *m, bool plain,
                     const char *groups, size_t groups_len, cluster_forward_cb cb, void *ctx);
/* Like cluster_forward for plain subscribers, for a message that was parked for the node
 * replay_of and published by pub_node: the peer delivers it only to the sessions that moved
 * away from replay_of and missed it. */
void cluster_forward_replay(struct cluster *c, struct cluster_peer *p, struct msg *m,
                            const char *replay_of, const char *pub_node, cluster_forward_cb cb,
                            void *ctx);
/*
 * Flow control across links. A forward from peer_uid just filled a session here that cannot
 * keep up: stop reading that member's link, as a local publisher is paused, so that its
 * QoS 1/2 publishers wait for their acknowledgements instead of this node dropping what they
 * send. cluster_unhold_all reads every held link again (call it once no session is
 * congested); a link is read again after a second in any case. QoS 0 forwards that would wait
 * behind more than 16 MiB of unwritten output on their link are dropped and counted instead.
 */
void cluster_hold(struct cluster *c, uint64_t peer_uid);
void cluster_unhold_all(struct cluster *c);

/* Whether p's link has more output waiting than it writes (see link_pressure). */
bool cluster_peer_is_pressed(struct cluster_peer *p);
/* Whether p has a link now (a shared-group member to prefer). */
bool cluster_peer_is_up(const struct cluster_peer *p);
/*
 * A message parked for this node by node_id (of that incarnation) while this node was cut off
 * from it, under forward id id (0: it was never sent): false when it arrived here on a link
 * already, so that it is not delivered twice. Otherwise records it as delivered, so that the
 * same forward sent again once the link is back is dropped. Parked forwards are taken in the
 * order they were sent.
 */
bool cluster_parked_admit(struct cluster *c, const char *node_id, uint64_t incarnation,
                          uint64_t id);
/* Answers a forward received with token tok from the peer peer_uid (see forward_in): rc 0
 * once it is durable here, or negative when it could not be stored (the sender's callback then
 * gets ERR_SERVER_UNAVAILABLE). The peer may have died meanwhile: harmless. Peer uids are
 * never reused. */
void cluster_forward_done(struct cluster *c, uint64_t peer_uid, uint64_t tok, int rc);

/*
 * Asks the member named node_id to drop client_id, which epoch now owns. cb runs once: 0 when
 * the member acknowledged, ERR_NOT_FOUND when no such member is joined, ERR_TIMEOUT after
 * timeout_ms, ERR_CANCELED at destroy.
 */
int cluster_takeover(struct cluster *c, const char *node_id, const char *client_id, uint64_t epoch,
                     uint32_t timeout_ms, void (*cb)(void *ctx, int rc), void *ctx);
void cluster_takeover_done(struct cluster *c, uint64_t peer_uid, uint64_t req, int rc);

/* Tells every member that topic's retained message is now m (NULL: cleared). */
void cluster_retain_notice(struct cluster *c, const char *topic, const struct msg *m);

/* Sends what was batched this pass (call once per loop pass). */
void cluster_flush(struct cluster *c);
/* Sends the route changes made so far, then a Ping to every linked member. Once a member's
 * Ack is back, it has applied those changes, and every Forward it sent before them has
 * arrived here (one link is one ordered stream). A draining node fences after it dropped its
 * routes, so that no member is still forwarding to it when it stops. */
void cluster_fence(struct cluster *c);
/* True when every linked member answered the last cluster_fence(), every forward received
 * is answered, every forward sent is acknowledged, and nothing is waiting to go out: no route
 * change, batch or answer kept for the next flush, and every write handed to the kernel. */
bool cluster_is_settled(const struct cluster *c);

/* Whether a node_id is a joined member now. */
bool cluster_is_member(const struct cluster *c, const char *node_id);
/* Joined members, this node excluded. */
size_t cluster_members(const struct cluster *c);
/* True when every member this node knows of is linked and joined (readiness). */
bool cluster_is_joined(const struct cluster *c);
/* The member behind a peer uid (as given to the handlers), or NULL once it is gone. */
struct cluster_peer *cluster_peer_by_uid(struct cluster *c, uint64_t uid);
const char *cluster_peer_node_id(const struct cluster_peer *p);

struct cluster_stats {
    uint64_t forwards_sent;
    uint64_t forwards_received;
    uint64_t forwards_retried;
    uint64_t forwards_dropped;
    uint64_t takeovers_sent;
    uint64_t takeovers_received;
    uint64_t links_refused;
    uint64_t route_snapshots;
    uint64_t members_cut; /* found unreachable while the registry listed them alive */
};
const struct cluster_stats *cluster_get_stats(const struct cluster *c);

/* Calls fn once for each member this node knows of (itself excluded) with its node id
 * (borrowed for the call) and whether it is linked and joined now: per-member link state for
 * metrics. fn must not change the cluster. */
void cluster_peer_foreach(const struct cluster *c,
                          void (*fn)(void *ctx, const char *node_id, bool is_up), void *ctx);

#endif
