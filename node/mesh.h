#ifndef SHOAL_NODE_MESH_H
#define SHOAL_NODE_MESH_H

/*
 * The node's side of the cluster (cluster/ holds the links and protocol): remote routes in a
 * trie of their own, forwarding of locally published messages to the members whose routes
 * match, delivery of forwarded ones, cross-node takeover, and retained notices. Every function
 * is a no-op on a node without cluster_listener.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct msg;
struct session;

/* Starts the cluster listener and links when configured. Returns 0 or a negative error
 * (logged). */
int mesh_start(struct broker *b);
/* Closes the links (one more loop run closes the handles). */
void mesh_stop(struct broker *b);
/* Frees the remote route trie. */
void mesh_free(struct broker *b);

/* A local route (a plain filter, or a shared group "$share/G/F") appeared or went. */
void mesh_route_change(struct broker *b, const char *filter, size_t len, bool is_added);

/* A shared group key ("GROUP/FILTER") allowed for the publish being routed. */
struct mesh_allow {
    const char *p;
    size_t len;
};

/* Before m, published locally, is routed here: chooses the members it goes to, and for each
 * matching shared group the one node (this one or a member) that delivers it. */
void mesh_pick(struct broker *b, const struct msg *m);
/* Whether the shared subscription filter ("$share/GROUP/FILTER") may take the message being
 * routed (always on a single node). */
bool mesh_group_allowed(const struct broker *b, const char *filter, size_t len);
/* Forwards m, just published locally, to the members mesh_pick chose. QoS 1/2 from a
 * client: the publisher's acknowledgement waits for the members' (through persist). */
void mesh_publish(struct broker *b, struct msg *m);
/* A retained message changed on this node (m->payload_len 0: cleared). */
void mesh_retain_changed(struct broker *b, const struct msg *m);
/* Sends this pass's batches. */
void mesh_flush(struct broker *b);

/* The answer to a forwarded message that waited for store appends: rc 0 when all succeeded,
 * else the first failure (the member then tells its publisher). */
void mesh_forward_done(struct broker *b, uint64_t peer_uid, uint64_t tok, int rc);

/* CONNECT claimed client_id from prev_owner: when that is another live member, asks it to
 * drop the client and calls cont(ctx) once it answered or timed out; returns false (and
 * never calls) when there is nobody to ask. */
bool mesh_takeover(struct broker *b, const char *prev_owner, const char *client_id, uint64_t epoch,
                   void (*cont)(void *ctx), void *ctx);

/* Whether another member claimed client_id with an epoch newer than epoch lately (a CONNECT
 * here that claimed epoch has lost the race). */
bool mesh_is_superseded(const struct broker *b, const char *client_id, uint64_t epoch);

/* Once per broker tick: asks again the takeovers a member could not answer, and runs the
 * member registry (node/mesh_members.c). */
void mesh_tick(struct broker *b);

/* The member registry in the store: heartbeat, discovery of members, adoption of dead
 * members' sessions and delivery of their parked messages (node/mesh_members.c). */
void mesh_members_tick(struct broker *b);
/* Reads the registry now (a member was just declared dead: adopt it without waiting). */
void mesh_members_kick(struct broker *b);
/* Stops starting new registry work (callbacks still pending complete harmlessly). */
/* NULL once the registry was read and every node it lists is a joined member; else what is
 * still awaited (a node id, or the registry itself). */
const char *mesh_members_awaited(const struct broker *b);
void mesh_members_stop(struct broker *b);
void mesh_members_free(struct broker *b);

/*
 * Messages parked for a node that could not be reached (node/mesh_moved.c). A session that
 * moved here from node X (a takeover, an adoption, or this node's own restart) is marked for a
 * while; a message parked for X is then delivered again cluster-wide (mesh_replay), and only
 * sessions that moved from X take it, and only if they have not had that publisher's stream
 * since.
 */
/* Marks s as moved here from node from (this node's own id after a restart). */
void mesh_moved_mark(struct session *s, const char *from);
void mesh_moved_free(struct session *s);
/* Called by the router for each session a message matches: false when s must not get it
 * (a replay it does not need); records the first sequence number of each publisher it gets
 * after a move. */
bool mesh_moved_admit(struct broker *b, struct session *s, const struct msg *m);
/* Records that moved session s holds m in its stored queue: a replay of it, or of anything
 * its publisher sent before it, is not taken again. */
void mesh_moved_stored(struct session *s, const struct msg *m);
/* Delivers a message parked for parked_for, published by pub_node, to the sessions that moved
 * away from parked_for: here, and on every member with a matching route. */
void mesh_replay(struct broker *b, struct msg *m, const char *pub_node, const char *parked_for);
/* Drops every session kept only to pass messages on, so that its route goes too (a node
 * about to stop: what would still reach it is parked for it by the members). */
void mesh_hand_over_end(struct broker *b);
/* Passes m on to the member that took session s over a moment ago (s->handed_to). */
void mesh_pass_on(struct broker *b, struct session *s, struct msg *m);
/* A parked entry: the publishing node, its sequence number, the forward it was (whom it was
 * parked for and why, below) and the message blob. */
struct mesh_parked {
    uint64_t target_inc; /* incarnation of the node it was parked for; 0: not recorded */
    uint64_t fwd_id;     /* its forward id on the links; 0: it was never sent */
    uint64_t parker_inc; /* incarnation of the node that parked it */
    bool plain;          /* for plain subscribers */
    const char *groups;  /* and these shared groups (NUL-terminated, groups_len bytes) */
    size_t groups_len;
};
struct cluster_fwd_info;
size_t mesh_park_size(const struct broker *b, const struct msg *m,
                      const struct cluster_fwd_info *fi);
void mesh_park_write(const struct broker *b, const struct msg *m, const struct cluster_fwd_info *fi,
                     uint8_t *out);
/* Parses a parked entry into a new message (m->pub_seq set), the publisher's node id (a
 * NUL-terminated copy in pub, at most pub_cap bytes) and *k (groups point into p). NULL when
 * it is malformed. */
struct msg *mesh_park_read(const uint8_t *p, size_t len, char *pub, size_t pub_cap,
                           struct mesh_parked *k);
/* Delivers here a message parked for this node while it was cut off from pub_node: as the
 * forward it would have been. */
void mesh_deliver_parked(struct broker *b, struct msg *m, const char *pub_node,
                         const struct mesh_parked *k);
/* Flow control for members' forwards: stops reading the link of member peer_uid (a forward
 * from it filled a session that cannot keep up), and reads every such link again. */
void mesh_hold(struct broker *b, uint64_t peer_uid);
void mesh_unhold(struct broker *b);
/* Once per loop pass: goes on taking parked messages once no session here is congested. */
void mesh_members_poll(struct broker *b);
/* Whether the member registry listed node_id in its last read. */
bool mesh_members_is_listed(const struct broker *b, const char *node_id);

/* Whether this node runs in a cluster. */
bool mesh_is_on(const struct broker *b);

#endif
