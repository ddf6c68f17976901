#ifndef SHOAL_NODE_PERSIST_H
#define SHOAL_NODE_PERSIST_H

/*
 * Persistent sessions in a durable store (Redis): what lets a node restart, or die, without
 * losing a session, its subscriptions or the QoS 1/2 messages queued for it while it was
 * offline. With the memory store none of this runs: sessions live in the node as before.
 *
 * The node keeps every persistent session in memory too (loaded at start), because routing
 * needs their subscriptions; what an offline session receives goes to the store only. When
 * the client comes back its queue is read from the store, delivered, and trimmed there as the
 * client acknowledges it. Writes are fenced by the owner epoch claimed at CONNECT.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct session;
struct session_dlv;
struct conn;
struct persist_wait;
struct store_blob;

/* True when the broker's store is durable, so persistent sessions live in it. */
bool persist_is_on(const struct broker *b);

/*
 * Loads every stored session into the node (subscriptions routed, offline), before the
 * listeners accept anyone. Returns 0 or a negative error after logging it. done() runs once
 * the sessions are in, with ctx.
 */
int persist_load_all(struct broker *b, void (*done)(void *ctx, int rc), void *ctx);

/* Writes the session's state (subscriptions, expiry, identity) to the store, fenced by its
 * epoch. Fire and forget: a failure is logged. No-op for non-persistent sessions. */
void persist_save(struct session *s);
/* SUBSCRIBE or UNSUBSCRIBE changed c's persistent session: writes its state, and holds c's
 * output, the SUBACK or UNSUBACK included, until it is stored (the connection is closed if it
 * cannot be). No-op unless persistent with a durable store. */
void persist_save_acked(struct conn *c);
/* Deletes the stored session (fenced). */
void persist_forget(struct session *s);
/* The session goes offline: its state is saved with its expiry, and its unacknowledged and
 * queued messages move to the stored queue. */
void persist_detach(struct session *s);

/* An offline stored session receives d: appended to its stored queue. When a client's
 * PUBLISH is being routed (b->publisher), its acknowledgement waits for the append. */
void persist_deliver_offline(struct session *s, const struct session_dlv *d);
/* A connected persistent session receives d: appended to its stored queue (the publisher's
 * acknowledgement waits, as above) and trimmed once acknowledged. Returns the stored entry's
 * key when the append was issued (the local copy is then marked as stored), else 0. */
uint64_t persist_deliver_online(struct session *s, const struct session_dlv *d);
/* A message that came from the stored queue has left the session (acknowledged, expired or
 * dropped): trims it from the store. */
void persist_dlv_done(struct session *s, const struct session_dlv *d);

/* Sends this loop pass's trims, one per session (called once per pass, before flushing). */
void persist_flush_trims(struct broker *b);

/*
 * Acknowledgement of a PUBLISH by conn c (packet type, packet id) once every store append
 * made while routing it has completed, in the order the PUBLISH packets arrived. Returns true
 * when the acknowledgement was deferred (the caller must not send it).
 */
bool persist_ack_defer(struct conn *c, uint8_t type, uint16_t pid);
/* The incoming QoS 2 state of c's session changed (a new packet id, or PUBREL): writes it,
 * and makes the acknowledgement about to be deferred with persist_ack_defer wait for it. */
void persist_save_before_ack(struct conn *c);
/* Takes over a dead member's stored session (state as stored, claimed with epoch): it is
 * held offline here, its queue in the store, its subscriptions routed, its will sent after its
 * delay. It is marked as moved from that member (from), for the messages parked for it.
 * Returns 0, ERR_EXISTS when a session with that id is here already, or ERR_MALFORMED for an
 * unreadable state. */
int persist_adopt(struct broker *b, const char *client_id, const struct store_blob *state,
                  uint64_t epoch, const char *from);

/* Cluster forwards (node/mesh.c). persist_hold adds one pending completion to the
 * acknowledgement being collected for the message now routed (NULL when there is none);
 * persist_unhold completes it with rc. */
struct persist_wait *persist_hold(struct broker *b);
/* The broker a wait from persist_hold belongs to. */
struct broker *persist_wait_broker(const struct persist_wait *w);
void persist_unhold(struct persist_wait *w, int rc);
/* Routing of a message a member forwarded with token tok: appends made between begin and end
 * are collected, and mesh_forward_done(b, peer_uid, tok) runs once they all completed (at
 * once when there are none). */
void persist_forward_begin(struct broker *b);
void persist_forward_end(struct broker *b, uint64_t peer_uid, uint64_t tok);

/* Drops the publisher's pending acknowledgements (its session is going away). */
void persist_session_gone(struct session *s);

/*
 * CONNECT of a persistent session (or one that resumes) with a durable store: claims the
 * client id (new owner epoch) and reads the stored queue into the local session, then calls
 * cont(ctx, rc, epoch) on a later pass; the caller keeps c alive until then. Returns 0, or
 * ERR_SERVER_UNAVAILABLE (and no callback) when the store is down.
 */
int persist_resume(struct conn *c, const char *client_id, size_t len, bool clean_start,
                   void (*cont)(void *ctx, int rc, uint64_t epoch), void *ctx);
/* Applies a resume's result to s (the session chosen by CONNECT, with its expiry and will
 * set) and writes its state; c's output (the CONNACK about to be queued) is held until the
 * state is stored, and c is closed without it if the write fails. */
void persist_resumed(struct session *s, struct conn *c, uint64_t epoch);

#endif
