#ifndef SHOAL_STORE_STORE_INT_H
#define SHOAL_STORE_STORE_INT_H

/*
 * Folder-internal interface between store.c (requests, deferred delivery, lifecycle) and the
 * backends (memory, redis). store.c allocates one struct store__req per request and
 * hands it to the backend; the backend fills the result through the store__req_set_* helpers
 * and finishes it with store__complete(), at once (memory) or on a later reply (redis).
 * store.c then delivers the callback on a later loop pass. Backends never call user callbacks.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

enum store__cb_kind {
    STORE__CB_DONE = 0,
    STORE__CB_CLAIM,
    STORE__CB_LOAD,
    STORE__CB_RETAIN,
};

struct store__req {
    struct store *s;
    struct store__req *next; /* in-flight list, done FIFO or free list */
    struct store__req *prev; /* in-flight list only */
    enum store__cb_kind kind;
    bool is_inflight;
    int rc;
    uint64_t started_us; /* for the latency histogram */
    union {
        store_done_cb done;
        store_claim_cb claim;
        store_load_cb load;
        store_retain_cb retain;
    } cb;
    void *ctx;
    /* Results, owned by the request until its callback returns. */
    uint64_t epoch;
    uint64_t prev_epoch;
    char *prev_owner;
    uint8_t *state_buf;
    size_t state_len;
    struct store_blob *blobs; /* one allocation: n_cap blobs, then the bytes they point into */
    size_t n_blobs;
    size_t n_cap;
    uint8_t *arena;
    size_t arena_used;
    size_t arena_cap;
};

/*
 * A backend. Each request function takes ownership of r when it returns 0 and must then call
 * store__complete(r, rc) exactly once (possibly before returning). It returns a negative ERR_*
 * without completing r when the request cannot even be started; the caller then sees that
 * error and no callback runs. Arguments are borrowed for the duration of the call only.
 */
struct store__backend_ops {
    const char *name;
    /* Whether what it stores survives a restart of this process. */
    bool is_durable;
    /* Opens the backend; sets *impl. On error writes a message to err. */
    int (*open)(struct store *s, const char *url, const char *node_id, void **impl, char *err,
                size_t errlen);
    /* Frees the backend. It may complete in-flight requests (any rc); whatever is still in
     * flight afterwards is cancelled by store.c. Never calls user code. */
    void (*close)(void *impl);
    /* Optional: whether it can serve requests now. NULL means always. */
    bool (*is_up)(void *impl);
    int (*owner_claim)(void *impl, struct store__req *r, const char *client_id);
    int (*owner_release)(void *impl, struct store__req *r, const char *client_id, uint64_t epoch);
    int (*session_save)(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                        struct store_blob state, uint64_t expiry_s);
    int (*session_load)(void *impl, struct store__req *r, const char *client_id);
    int (*session_delete)(void *impl, struct store__req *r, const char *client_id, uint64_t epoch);
    int (*queue_push)(void *impl, struct store__req *r, const char *client_id,
                      struct store_blob msg, uint32_t max_count, uint64_t max_bytes);
    int (*queue_trim)(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                      const struct store_blob *ids, size_t n);
    int (*retain_set)(void *impl, struct store__req *r, const char *topic, struct store_blob msg);
    int (*retain_load)(void *impl, struct store__req *r);
    int (*session_scan)(void *impl, struct store__req *r);
    int (*member_heartbeat)(void *impl, struct store__req *r, const char *node_id,
                            struct store_blob info, uint32_t ttl_ms);
    int (*member_leave)(void *impl, struct store__req *r, const char *node_id);
    int (*member_list)(void *impl, struct store__req *r);
    int (*member_gone)(void *impl, struct store__req *r);
    int (*member_forget)(void *impl, struct store__req *r, const char *node_id);
    int (*session_scan_owned)(void *impl, struct store__req *r, const char *owner);
    int (*owner_adopt)(void *impl, struct store__req *r, const char *client_id,
                       const char *dead_owner);
    int (*node_adopt_lock)(void *impl, struct store__req *r, const char *dead_node,
                           uint32_t ttl_ms);
    int (*park_push)(void *impl, struct store__req *r, const char *dead_node,
                     struct store_blob msg);
    int (*park_take)(void *impl, struct store__req *r, const char *dead_node, size_t max);
};

extern const struct store__backend_ops store__memory_ops;
extern const struct store__backend_ops store__redis_ops;

/* The loop the store runs on, for backends that own handles. */
uv_loop_t *store__loop(const struct store *s);

/* Finishes r with rc (0 or a negative ERR_*); its callback runs on a later loop pass. */
void store__complete(struct store__req *r, int rc);

/* Records a claim result; prev_owner (may be NULL) is copied. */
void store__req_set_claim(struct store__req *r, uint64_t epoch, const char *prev_owner,
                          uint64_t prev_epoch);
/* Copies the session state blob into r. */
void store__req_set_state(struct store__req *r, const uint8_t *p, size_t len);
/* Reserves room for n blobs of total_bytes bytes in all; then store__req_add_blob() copies each
 * one in order. Must be called at most once per request. */
void store__req_blobs_begin(struct store__req *r, size_t n, size_t total_bytes);
void store__req_add_blob(struct store__req *r, const uint8_t *p, size_t len);

#endif
