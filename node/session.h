#ifndef SHOAL_NODE_SESSION_H
#define SHOAL_NODE_SESSION_H

/*
 * Session state independent of the socket: subscriptions, outgoing inflight window, offline
 * queue, incoming QoS 2 packet ids, will and expiry. A session outlives its connection when it
 * is persistent. session_queue.c owns the delivery path (window, queue, redelivery).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/keepalive.h"

struct broker;
struct conn;
struct msg;
struct persist_wait;

#define SESSION_MAX_SUB_IDS 4

struct session_sub {
    struct session *s;
    char *filter; /* as subscribed, including any $share prefix */
    uint16_t filter_len;
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    bool is_shared;
    uint8_t retain_handling;
    uint32_t sub_id; /* 0 = none */
};

/* One delivery of a message to this session. */
struct session_dlv {
    struct msg *m;
    uint32_t sub_ids[SESSION_MAX_SUB_IDS];
    uint8_t n_sub_ids;
    uint8_t qos;
    bool retain;
    bool from_store;    /* in the stored queue: trimmed there by its key once it leaves */
    uint64_t store_key; /* its entry's key there (persist.c) */
};

enum session_inflight_state {
    SESSION_WAIT_PUBACK = 1, /* QoS 1 sent */
    SESSION_WAIT_PUBREC,     /* QoS 2 PUBLISH sent */
    SESSION_WAIT_PUBCOMP,    /* QoS 2 PUBREL sent */
};

struct session_inflight {
    struct session_dlv d;
    uint16_t pid;
    uint8_t state;
};

/* A will, allocated only for clients that set one. */
struct session_will {
    struct session *s;
    struct msg *m;
    uint8_t qos;
    bool retain;
    uint32_t delay_s;
    uint32_t expiry_s; /* message expiry to apply when published */
    struct keepalive_entry timer;
};

/* QoS 1/2 delivery state: the outgoing window (in send order), the queue behind it and the
 * incoming QoS 2 packet ids awaiting PUBREL. Allocated on first use, so that a client that
 * only ever uses QoS 0 carries none of it. */
struct session_q {
    struct session *s;
    struct keepalive_entry expiry; /* armed while a persistent session is offline */
    /* Flow control: the broker's list of congested sessions, and when this one last made
     * progress. */
    struct session_q *cong_next;
    struct session_q *cong_prev;
    uint64_t progress_ms;
    uint64_t progress_bytes; /* conn_bytes_written at the last check */
    struct session_inflight *inflight;
    uint32_t n_inflight;
    uint32_t cap_inflight;
    struct session_dlv *queue; /* ring */
    uint32_t q_head;
    uint32_t q_len;
    uint32_t q_cap;
    uint64_t q_bytes;
    uint16_t *rx_qos2;
    uint32_t n_rx_qos2;
    uint32_t cap_rx_qos2;
    /* This client's PUBLISH acknowledgements waiting for store writes, in arrival order. */
    struct persist_wait *acks;
    struct persist_wait *acks_tail;
    /* Keys of stored messages gone this loop pass, trimmed in one request. */
    uint64_t *trim_keys;
    uint32_t n_trim_keys;
    uint32_t cap_trim_keys;
};

/* One per client id, connected or not: the fields are ordered to leave no holes, and the
 * client id is stored inline, so an idle client costs one allocation of about 160 bytes. */
struct session {
    struct broker *b;
    size_t client_id_len;
    char *username;        /* of the last connection, for the ACL; NULL when anonymous */
    uint64_t id;           /* unique per process, for no-local */
    struct session *hnext; /* session table chain */
    struct conn *conn;     /* NULL while offline */
    uint8_t version;
    bool is_stored;    /* offline, its queue lives in the durable store */
    bool drain_wait;   /* sent away by a drain: waited for until taken over */
    bool is_congested; /* flow control: holds the publishers feeding it */

    /* Expiry: seconds after disconnect; UINT32_MAX = never; 0 = ends with the connection. */
    uint32_t expiry_s;

    struct session_sub **subs;
    uint32_t n_subs;
    uint32_t cap_subs;

    struct session_q *q;       /* QoS 1/2 state, created on first use */
    struct session_will *will; /* NULL unless the client set a will */

    uint64_t epoch;          /* owner epoch in a durable store, fencing its writes */
    uint32_t stored_backlog; /* messages read from the store and not yet gone */
    uint16_t next_pid;
    bool is_flow_exempt;         /* gave up waiting for it; cleared when it acks again */
    struct session_moved *moved; /* came from another node lately (node/mesh_moved.c) */
    uint64_t handed_to;          /* taken over by that peer (uid): matches go there a moment */

    uint64_t match_gen; /* router de-duplication of overlapping subscriptions */
    uint32_t match_idx;
    char client_id[]; /* client_id_len bytes and a NUL */
};

/* Creates a session and inserts it in the broker's table. Never fails. */
struct session *session_create(struct broker *b, const char *client_id, size_t len);
/* Removes from the table, drops subscriptions and queued messages, frees. Sets *sp NULL.
 * The session must be detached. */
void session_destroy(struct session **sp);

/* Binds s to c (resume or fresh). Delivers the inflight window again (DUP) and the queue. */
void session_attach(struct session *s, struct conn *c);
/* Unbinds from its connection. Handles the will and expiry; may destroy s. err is the
 * connection's close reason (0 for a normal DISCONNECT). */
void session_detach(struct session *s, int err);

/* Subscriptions. add returns the record (new or replaced) and sets *is_new. */
struct session_sub *session_sub_add(struct session *s, const char *filter, size_t len,
                                    bool *is_new);
/* Removes the subscription; returns 0 or ERR_NOT_FOUND. */
int session_sub_remove(struct session *s, const char *filter, size_t len);

/* Delivers (or queues) one message. Takes its own reference on d->m. */
void session_deliver(struct session *s, const struct session_dlv *d);
/* PUBACK/PUBREC/PUBCOMP from the client for pid: advances the window. Returns 0 or
 * ERR_PACKET_ID_NOT_FOUND. */
int session_ack(struct session *s, uint16_t pid, uint8_t type);
/* Sends as much of the queue as the window allows. */
void session_pump(struct session *s);
/* For persistence: takes the first queued delivery (reference passes to out); false when
 * empty. */
bool session_queue_pop(struct session *s, struct session_dlv *out);
/* Puts d (takes its own reference) at the head of the queue, whatever the limits. */
void session_queue_push_front(struct session *s, const struct session_dlv *d);
/* Forgets the inflight window without acknowledging anything. */
void session_queue_clear_inflight(struct session *s);
/* Arms the expiry of an offline session loaded from the store. */
void session_offline_expiry(struct session *s);

/* Flow control: re-evaluates congestion after acks or drained writes. */
void session_flow_check(struct session *s);
/* Ends congestion (detach, destroy, or a consumer that stopped making progress). */
void session_uncongest(struct session *s);

/* The QoS 1/2 state, created if missing. */
struct session_q *session_q_get(struct session *s);
/* Messages queued behind the window. */
static inline uint32_t session_queued(const struct session *s)
{
    return s->q ? s->q->q_len : 0;
}

/* Incoming QoS 2: returns true if pid was already recorded (duplicate), else records it. */
bool session_rx_qos2_seen(struct session *s, uint16_t pid);
/* PUBREL received: forgets pid. Returns 0 or ERR_PACKET_ID_NOT_FOUND. */
int session_rx_qos2_release(struct session *s, uint16_t pid);

/* Sets (takes ownership of m) or clears the will. */
void session_will_set(struct session *s, struct msg *m, uint8_t qos, bool retain, uint32_t delay_s,
                      uint32_t expiry_s);
/* Publishes the will now, if any, and clears it. */
void session_will_publish(struct session *s);

#endif
