#ifndef SHOAL_STORE_STORE_H
#define SHOAL_STORE_STORE_H

/*
 * The session and retained-message store: one asynchronous interface, several backends
 * (memory for a single node; redis, shared by a cluster). Every request takes a callback and a
 * context. Contract: a call that returns an error never calls back; otherwise the callback runs
 * exactly once, never from inside the call (always from a later loop pass), with ERR_CANCELED if
 * the store is destroyed first. Byte blobs passed in are copied before the call returns; blobs
 * passed to callbacks are borrowed for the duration of the callback.
 *
 * Keys: a session is named by its client id. Ownership is a registry entry (owner node, epoch)
 * claimed atomically; every session write carries the writer's epoch and is refused with
 * ERR_EXISTS when a newer epoch has claimed the client id since (fencing).
 *
 * A cluster also keeps here which nodes are alive (member registry), elects one node to adopt
 * a dead node's sessions, and parks the messages that could not reach a node for its adopter.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct store;

struct store_blob {
    const uint8_t *p;
    size_t len;
};

/* Generic completion: rc is 0 or a negative ERR_*. */
typedef void (*store_done_cb)(void *ctx, int rc);
/* Owner claim result: epoch is the new epoch; prev_owner is the node that held the client id
 * before (NULL if none), prev_epoch its epoch. */
typedef void (*store_claim_cb)(void *ctx, int rc, uint64_t epoch, const char *prev_owner,
                               uint64_t prev_epoch);
/* Session load: rc ERR_NOT_FOUND when there is no session; otherwise state is the saved blob
 * and queue holds n queued message blobs in order. */
typedef void (*store_load_cb)(void *ctx, int rc, struct store_blob state,
                              const struct store_blob *queue, size_t n);
/* Retained scan: called with every retained message blob (n of them), then done. */
typedef void (*store_retain_cb)(void *ctx, int rc, const struct store_blob *msgs, size_t n);

/*
 * Opens a store from its URL: "memory", or "redis://[USER:PASS@]HOST[:PORT][/DB]" (port 6379 by
 * default, database 0; USER and PASS may be %-escaped; without USER, AUTH sends the password
 * alone). Returns 0 and sets *out, or ERR_INVALID for an unknown or malformed URL (with a
 * message in err that never repeats the password). A redis store connects in the background:
 * it opens even while the server is down. Until it is up, requests wait for it, each at most
 * the command timeout (3 s) from when it was made, then fail with ERR_TIMEOUT. On a broken
 * connection the requests already sent fail with ERR_IO (they may or may not have been applied);
 * when the server rejects the password or database, requests fail with ERR_IO at once.
 */
int store_create(uv_loop_t *loop, const char *url, const char *node_id, struct store **out,
                 char *err, size_t errlen);
/* Cancels pending requests (their callbacks run with ERR_CANCELED on a later pass, so the
 * loop must run once more) and frees the store. Sets *s to NULL. */
void store_destroy(struct store **s);

/* Whether the store keeps its contents when this node restarts: true for redis, false for
 * memory. false for NULL. Never calls back. */
bool store_is_durable(const struct store *s);
/* Whether the store can serve requests now: always for memory; for redis, while connected and
 * past AUTH and SELECT. Requests made while it is not up are still accepted (see
 * store_create). false for NULL or a store being destroyed. Never calls back. */
bool store_is_up(const struct store *s);

/* Claims client_id for this node with a new epoch. */
int store_owner_claim(struct store *s, const char *client_id, store_claim_cb cb, void *ctx);
/* Releases the claim if epoch is still current. */
int store_owner_release(struct store *s, const char *client_id, uint64_t epoch, store_done_cb cb,
                        void *ctx);

/* Writes the session state blob, fenced by epoch; expiry_s 0 = never expires. */
int store_session_save(struct store *s, const char *client_id, uint64_t epoch,
                       struct store_blob state, uint64_t expiry_s, store_done_cb cb, void *ctx);
/* Reads the state and the offline queue. */
int store_session_load(struct store *s, const char *client_id, store_load_cb cb, void *ctx);
/* Deletes state and queue, fenced by epoch. */
int store_session_delete(struct store *s, const char *client_id, uint64_t epoch, store_done_cb cb,
                         void *ctx);
/* Appends a message blob to the offline queue; ERR_QUOTA past max_count/max_bytes (0 = no
 * limit). Not fenced: any node may queue for an offline session. */
int store_queue_push(struct store *s, const char *client_id, struct store_blob msg,
                     uint32_t max_count, uint64_t max_bytes, store_done_cb cb, void *ctx);
/*
 * Removes the queued messages named by ids (n of them, n >= 1), fenced by epoch. Queue entries
 * are opaque to the store except for their id: an entry that starts with a 0 byte followed by
 * at least STORE_ENTRY_KEY_LEN more bytes has those bytes as its id (a key its writer keeps
 * unique within the queue); any other entry is its own id. The search starts at the head and
 * covers the first n + STORE_TRIM_SLACK entries: acknowledged messages are near the head. An
 * id that matches nothing there is ignored, so a trim can be repeated safely.
 */
#define STORE_ENTRY_KEY_LEN 8
#define STORE_TRIM_SLACK    1024
/* The id of a queue entry, pointing into it. */
struct store_blob store_entry_id(struct store_blob entry);
int store_queue_trim(struct store *s, const char *client_id, uint64_t epoch,
                     const struct store_blob *ids, size_t n, store_done_cb cb, void *ctx);

/* Sets (or with an empty blob, clears) the retained message for topic. */
int store_retain_set(struct store *s, const char *topic, struct store_blob msg, store_done_cb cb,
                     void *ctx);
/* Reads every stored session (a node loads them at start, to route to offline ones): the
 * callback gets blobs in pairs, client id then state blob, so n is twice the sessions. */
int store_session_scan(struct store *s, store_retain_cb cb, void *ctx);
/* Reads every retained message (used to warm a node's cache at start). */
int store_retain_load(struct store *s, store_retain_cb cb, void *ctx);

/*
 * What a cluster keeps in the store. These calls follow the contract above: ERR_INVALID and no
 * callback for a NULL store or callback, an empty id, a bad blob or a zero ttl_ms; otherwise
 * exactly one callback, with ERR_TIMEOUT or ERR_IO while a redis server cannot be reached.
 * Node ids are any non-empty strings (not only this store's node_id); strings are copied.
 */

/* ---- member registry: which nodes are alive (a cluster finds its members through it) ---- */

/* Records node_id as alive with info (an opaque blob: its advertised address and incarnation),
 * until ttl_ms after this call unless renewed by another heartbeat. A heartbeat replaces the
 * info and the deadline of the previous one. The memory backend measures ttl_ms with the
 * loop's clock, redis with its own. */
int store_member_heartbeat(struct store *s, const char *node_id, struct store_blob info,
                           uint32_t ttl_ms, store_done_cb cb, void *ctx);
/* Removes node_id at once (a clean leave). rc 0 also when it was not listed. */
int store_member_leave(struct store *s, const char *node_id, store_done_cb cb, void *ctx);
/* Lists live members: blobs in pairs, node id then info (n is twice the members), in no
 * particular order. Expired members are not listed (and are dropped from the index on the
 * way). */
int store_member_list(struct store *s, store_retain_cb cb, void *ctx);
/* Node ids that heartbeated once and are not alive now (they died or left), even if that was
 * while no member ran: the nodes whose sessions may wait for an adopter. The callback gets the
 * ids as n blobs. */
int store_member_gone(struct store *s, store_retain_cb cb, void *ctx);
/* Drops node_id from those: its sessions were adopted. A later heartbeat records it again. */
int store_member_forget(struct store *s, const char *node_id, store_done_cb cb, void *ctx);

/* ---- sessions by owner (a node adopting the sessions of a dead one) ---- */

/* Like store_session_scan, but only sessions whose owner entry names owner (released or
 * unowned sessions are not returned). Pairs: client id, state. owner is copied; ERR_INVALID
 * (no callback) when it is empty. A session claimed by another node while the scan runs may
 * or may not be listed: store_owner_adopt settles each one. */
int store_session_scan_owned(struct store *s, const char *owner, store_retain_cb cb, void *ctx);
/* Claims client_id for this node with a new epoch only while dead_owner still owns it:
 * rc 0 with the new epoch (prev_owner = dead_owner, prev_epoch its epoch, now fenced off), or
 * ERR_EXISTS (no change, epoch 0) when another node owns it now (prev_owner/prev_epoch then
 * say who) or nobody does (prev_owner NULL, prev_epoch 0). The new epoch is made exactly as
 * store_owner_claim makes one. ERR_INVALID (no callback) for an empty id or dead_owner. */
int store_owner_adopt(struct store *s, const char *client_id, const char *dead_owner,
                      store_claim_cb cb, void *ctx);
/* Atomically elects one adopter for a dead node's sessions: rc 0 if this node (the store's
 * node_id) won, or it had already won (which renews its hold for ttl_ms); ERR_EXISTS if
 * another node won (within ttl_ms; after that the election may be won again, so an adopter
 * that dies mid-way is replaced). ERR_INVALID (no callback) for an empty dead_node or a zero
 * ttl_ms. */
int store_node_adopt_lock(struct store *s, const char *dead_node, uint32_t ttl_ms, store_done_cb cb,
                          void *ctx);

/* ---- parked messages: for a node that could not be reached, kept for its adopter ---- */

/* Appends an opaque message blob (copied; may be empty) to dead_node's parked list. The list
 * has no expiry: it waits for a taker. */
int store_park_push(struct store *s, const char *dead_node, struct store_blob msg, store_done_cb cb,
                    void *ctx);
/* Removes and returns up to max parked messages of dead_node, oldest first (n = 0 when none
 * are left). Atomic: two takers never get the same message, and none is lost between them.
 * ERR_INVALID (no callback) for an empty dead_node or max 0. */
int store_park_take(struct store *s, const char *dead_node, size_t max, store_retain_cb cb,
                    void *ctx);

/* ---- statistics ---- */

#define STORE_LATENCY_BUCKETS 13 /* finite upper bounds; one more bucket holds the rest */

/* Upper bounds of the latency buckets, in microseconds, ascending: 100 us to 1 s. */
extern const uint32_t store_latency_bounds_us[STORE_LATENCY_BUCKETS];

/*
 * Every request that completed, timed from the call that made it to its result (queueing
 * while a redis server is down included), and those that failed for want of a working store:
 * ERR_IO, ERR_TIMEOUT or any other error that is not an answer about the data (ERR_NOT_FOUND,
 * ERR_EXISTS and ERR_QUOTA are answers; ERR_CANCELED at shutdown is neither).
 */
struct store_stats {
    uint64_t buckets[STORE_LATENCY_BUCKETS + 1]; /* per bucket, not cumulative; last: > 1 s */
    uint64_t count;
    uint64_t sum_us;
    uint64_t errors;
};

/* The counters of s (never NULL for a live store); valid until store_destroy. */
const struct store_stats *store_get_stats(const struct store *s);

#endif
