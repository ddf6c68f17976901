#ifndef SHOAL_CLUSTER_WIRE_H
#define SHOAL_CLUSTER_WIRE_H

/*
 * Frames of the node-to-node protocol (proto/cluster.proto) without protobuf-c types: the
 * only file that includes the generated header is cluster/wire.c. A frame on TCP is a 4-byte
 * big-endian length followed by one encoded Frame message.
 *
 * Decoding yields views: strings and byte fields point into storage that the decoded frame
 * owns, valid until wire_frame_free(). Strings are NUL-terminated and also carry their length.
 * Encoding appends whole length-prefixed frames to a struct buf, so a batch of frames costs one
 * write.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/buf.h"

#define WIRE_PROTOCOL_VERSION 1
/* Largest frame body accepted or produced (a Forward batch is cut before it). */
#define WIRE_MAX_FRAME  (16u * 1024u * 1024u)
#define WIRE_LEN_PREFIX 4

enum wire_type {
    WIRE_NONE = 0,
    WIRE_HELLO,
    WIRE_PROOF,
    WIRE_PING,
    WIRE_ACK,
    WIRE_MEMBERS,
    WIRE_ROUTE_DELTA,
    WIRE_ROUTE_SNAPSHOT,
    WIRE_ROUTE_DIGEST,
    WIRE_ROUTE_SNAPSHOT_REQUEST,
    WIRE_FORWARD,
    WIRE_FORWARD_ACK,
    WIRE_TAKEOVER,
    WIRE_TAKEOVER_ACK,
    WIRE_RETAIN_NOTICE,
};

struct wire_str {
    const char *p; /* NUL-terminated when decoded; need not be when encoding */
    size_t len;
};

struct wire_bytes {
    const uint8_t *p;
    size_t len;
};

struct wire_hello {
    struct wire_str cluster_name;
    struct wire_str node_id;
    uint64_t incarnation;
    uint32_t protocol_version;
    struct wire_bytes nonce;
    struct wire_str advertise;
};

struct wire_member {
    struct wire_str node_id;
    struct wire_str advertise;
    uint64_t incarnation;
};

struct wire_fwd {
    uint64_t id;
    struct wire_bytes msg;
    bool plain;
    const struct wire_str *shared;
    size_t n_shared;
    uint64_t pub_seq;
    struct wire_str replay_of; /* empty: a live forward */
    struct wire_str pub_node;
};

struct wire_retain {
    struct wire_str topic;
    struct wire_bytes msg; /* empty: cleared */
};

/* A decoded frame: type says which member of the union is set. Arrays are owned by the
 * frame. */
struct wire_frame {
    enum wire_type type;
    union {
        struct wire_hello hello;
        struct wire_bytes proof; /* hmac */
        uint64_t ping_seq;
        uint64_t ack_seq;
        struct {
            const struct wire_member *v;
            size_t n;
        } members;
        struct {
            uint64_t seq;
            const struct wire_str *added;
            size_t n_added;
            const struct wire_str *removed;
            size_t n_removed;
        } route_delta;
        struct {
            uint64_t seq;
            const struct wire_str *filters;
            size_t n;
        } route_snapshot;
        struct {
            uint64_t seq;
            uint64_t digest;
            uint32_t count;
        } route_digest;
        uint64_t snapshot_have_seq;
        struct {
            const struct wire_fwd *v;
            size_t n;
        } forward;
        struct {
            const uint64_t *ids; /* durable there */
            size_t n;
            const uint64_t *failed; /* not stored there */
            size_t n_failed;
        } forward_ack;
        struct {
            uint64_t req;
            struct wire_str client_id;
            uint64_t epoch;
        } takeover;
        struct {
            uint64_t req;
            int32_t result;
        } takeover_ack;
        struct {
            const struct wire_retain *v;
            size_t n;
        } retain;
    } u;
    void *priv; /* decoder storage */
};

/*
 * Parses one frame from the front of p[0..n). Returns the bytes consumed (> 0) and fills *f,
 * which the caller must release with wire_frame_free(); 0 when more bytes are needed (*f
 * untouched); ERR_PACKET_TOO_LARGE when the length prefix exceeds WIRE_MAX_FRAME; ERR_MALFORMED
 * when the body does not decode, holds no known body, or a string is not valid UTF-8 or holds
 * a NUL. Never calls back.
 */
int wire_frame_parse(const uint8_t *p, size_t n, struct wire_frame *f);
/* Releases what wire_frame_parse allocated; f->type becomes WIRE_NONE. Safe on a zeroed or
 * already freed frame. */
void wire_frame_free(struct wire_frame *f);

/* Each wire_put_* appends one complete frame (length prefix included) to out. Inputs are
 * copied; nothing is retained. */
void wire_put_hello(struct buf *out, const struct wire_hello *h);
void wire_put_proof(struct buf *out, struct wire_bytes hmac);
void wire_put_ping(struct buf *out, uint64_t seq);
void wire_put_ack(struct buf *out, uint64_t seq);
void wire_put_members(struct buf *out, const struct wire_member *v, size_t n);
void wire_put_route_delta(struct buf *out, uint64_t seq, const struct wire_str *added,
                          size_t n_added, const struct wire_str *removed, size_t n_removed);
void wire_put_route_snapshot(struct buf *out, uint64_t seq, const struct wire_str *filters,
                             size_t n);
void wire_put_route_digest(struct buf *out, uint64_t seq, uint64_t digest, uint32_t count);
void wire_put_route_snapshot_request(struct buf *out, uint64_t have_seq);
void wire_put_forward(struct buf *out, const struct wire_fwd *v, size_t n);
void wire_put_forward_ack(struct buf *out, const uint64_t *ids, size_t n, const uint64_t *failed,
                          size_t n_failed);
void wire_put_takeover(struct buf *out, uint64_t req, struct wire_str client_id, uint64_t epoch);
void wire_put_takeover_ack(struct buf *out, uint64_t req, int32_t result);
void wire_put_retain_notice(struct buf *out, const struct wire_retain *v, size_t n);

/*
 * Order-independent digest of a route set: combine wire_route_hash() of every filter with
 * addition modulo 2^64, so adding and removing one filter updates it in O(1).
 */
uint64_t wire_route_hash(const char *filter, size_t len);

#endif
