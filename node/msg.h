#ifndef SHOAL_NODE_MSG_H
#define SHOAL_NODE_MSG_H

/*
 * A published application message, immutable once created and shared by reference count
 * across every subscriber, queue and pending write. Topic, forwardable MQTT 5 properties and
 * payload live in one allocation. The refcount is not atomic: one loop per process.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-version cached wire heads for QoS 0 deliveries that carry no per-subscriber data. */
enum msg_cache_slot { MSG_CACHE_V3 = 0, MSG_CACHE_V5, MSG_CACHE_N };

struct msg {
    uint32_t refs;
    uint8_t qos; /* QoS it was published with */
    bool retain; /* RETAIN flag as published */
    uint16_t topic_len;
    uint32_t props_len; /* encoded forwardable properties (no length prefix) */
    uint32_t payload_len;
    uint64_t expiry_ms;   /* monotonic deadline (clock_now_ms), 0 = never expires */
    uint64_t origin;      /* id of the publishing session, for no-local; 0 = none */
    uint64_t pub_seq;     /* publishing node's sequence number (QoS >= 1 in a cluster); 0 = none */
    const char *pub_node; /* and that node's id (node/names.h), NULL with pub_seq 0 */
    char *topic;          /* NUL-terminated, inside data */
    uint8_t *props;       /* inside data */
    uint8_t *payload;     /* inside data */
    uint8_t *cache[MSG_CACHE_N];
    uint16_t cache_len[MSG_CACHE_N];
    uint8_t data[];
};

/* Creates a message with refs = 1, copying topic, props and payload once.
 * Never fails (aborts on OOM); sizes must already be checked against configured limits. */
struct msg *msg_create(const void *topic, size_t topic_len, const void *props, size_t props_len,
                       const void *payload, size_t payload_len);

static inline struct msg *msg_ref(struct msg *m)
{
    m->refs++;
    return m;
}

/* Drops one reference; frees on the last. Sets *mp to NULL. */
void msg_unref(struct msg **mp);

/* Remaining message-expiry seconds to advertise, or 0 when it has none. Expired messages
 * return 0 too: check msg_is_expired first. */
uint32_t msg_expiry_left_s(const struct msg *m, uint64_t now_ms);
static inline bool msg_is_expired(const struct msg *m, uint64_t now_ms)
{
    return m->expiry_ms != 0 && now_ms >= m->expiry_ms;
}

/*
 * Serialised form for the store: a fixed 24-byte header (format version, QoS, flags, absolute
 * wall-clock expiry in ms, the three lengths, big-endian) followed by topic, properties and
 * payload. Expiry is stored as wall-clock time so it survives a restart or a move to another
 * node.
 */
#define MSG_BLOB_HEADER 24
size_t msg_blob_size(const struct msg *m);
/* Writes msg_blob_size(m) bytes to out. */
void msg_blob_write(const struct msg *m, uint8_t *out, uint64_t now_ms, uint64_t wall_ms);
/* Parses a blob into a new message (refs = 1), or returns NULL if it is malformed. */
struct msg *msg_blob_read(const uint8_t *p, size_t len, uint64_t now_ms, uint64_t wall_ms);

/* Number of live messages, for statistics and leak checks in tests. */
uint64_t msg_live_count(void);

#endif
