/*
 * libFuzzer target for the cluster wire codec. The input is a byte stream as a link would
 * receive it. Frames are parsed one after another, each on an exactly-sized heap copy, until
 * the stream ends or is refused; a parse either consumes a whole frame or errs, and a frame cut
 * one byte short always asks for more.
 *
 * Every frame that parses is re-encoded with the matching wire_put_*; the re-encoding must
 * parse to an equal frame, and encoding that must give the same bytes again (the encoder's
 * output is canonical). Every parsed frame is freed, twice, to hold free's idempotence.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"
#include "node/buf.h"
#include "node/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(x)                                                                                 \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool str_eq(struct wire_str a, struct wire_str b)
{
    /* decoded strings are NUL-terminated views */
    REQUIRE(a.p && a.p[a.len] == '\0' && b.p && b.p[b.len] == '\0');
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool strs_eq(const struct wire_str *a, size_t na, const struct wire_str *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        if (!str_eq(a[i], b[i]))
            return false;
    }
    return true;
}

static bool bytes_eq(struct wire_bytes a, struct wire_bytes b)
{
    REQUIRE(a.p && b.p);
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool hello_eq(const struct wire_hello *a, const struct wire_hello *b)
{
    return str_eq(a->cluster_name, b->cluster_name) && str_eq(a->node_id, b->node_id) &&
           a->incarnation == b->incarnation && a->protocol_version == b->protocol_version &&
           bytes_eq(a->nonce, b->nonce) && str_eq(a->advertise, b->advertise);
}

static bool members_eq(const struct wire_frame *a, const struct wire_frame *b)
{
    if (a->u.members.n != b->u.members.n)
        return false;
    for (size_t i = 0; i < a->u.members.n; i++) {
        const struct wire_member *x = &a->u.members.v[i], *y = &b->u.members.v[i];
        if (!str_eq(x->node_id, y->node_id) || !str_eq(x->advertise, y->advertise) ||
            x->incarnation != y->incarnation)
            return false;
    }
    return true;
}

static bool forward_eq(const struct wire_frame *a, const struct wire_frame *b)
{
    if (a->u.forward.n != b->u.forward.n)
        return false;
    for (size_t i = 0; i < a->u.forward.n; i++) {
        const struct wire_fwd *x = &a->u.forward.v[i], *y = &b->u.forward.v[i];
        if (x->id != y->id || !bytes_eq(x->msg, y->msg) || x->plain != y->plain ||
            !strs_eq(x->shared, x->n_shared, y->shared, y->n_shared))
            return false;
    }
    return true;
}

static bool retain_eq(const struct wire_frame *a, const struct wire_frame *b)
{
    if (a->u.retain.n != b->u.retain.n)
        return false;
    for (size_t i = 0; i < a->u.retain.n; i++) {
        if (!str_eq(a->u.retain.v[i].topic, b->u.retain.v[i].topic) ||
            !bytes_eq(a->u.retain.v[i].msg, b->u.retain.v[i].msg))
            return false;
    }
    return true;
}

static bool frame_eq(const struct wire_frame *a, const struct wire_frame *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case WIRE_HELLO:
        return hello_eq(&a->u.hello, &b->u.hello);
    case WIRE_PROOF:
        return bytes_eq(a->u.proof, b->u.proof);
    case WIRE_PING:
        return a->u.ping_seq == b->u.ping_seq;
    case WIRE_ACK:
        return a->u.ack_seq == b->u.ack_seq;
    case WIRE_MEMBERS:
        return members_eq(a, b);
    case WIRE_ROUTE_DELTA:
        return a->u.route_delta.seq == b->u.route_delta.seq &&
               strs_eq(a->u.route_delta.added, a->u.route_delta.n_added, b->u.route_delta.added,
                       b->u.route_delta.n_added) &&
               strs_eq(a->u.route_delta.removed, a->u.route_delta.n_removed,
                       b->u.route_delta.removed, b->u.route_delta.n_removed);
    case WIRE_ROUTE_SNAPSHOT:
        return a->u.route_snapshot.seq == b->u.route_snapshot.seq &&
               strs_eq(a->u.route_snapshot.filters, a->u.route_snapshot.n,
                       b->u.route_snapshot.filters, b->u.route_snapshot.n);
    case WIRE_ROUTE_DIGEST:
        return a->u.route_digest.seq == b->u.route_digest.seq &&
               a->u.route_digest.digest == b->u.route_digest.digest &&
               a->u.route_digest.count == b->u.route_digest.count;
    case WIRE_ROUTE_SNAPSHOT_REQUEST:
        return a->u.snapshot_have_seq == b->u.snapshot_have_seq;
    case WIRE_FORWARD:
        return forward_eq(a, b);
    case WIRE_FORWARD_ACK:
        return a->u.forward_ack.n == b->u.forward_ack.n &&
               (a->u.forward_ack.n == 0 || memcmp(a->u.forward_ack.ids, b->u.forward_ack.ids,
                                                  a->u.forward_ack.n * sizeof(uint64_t)) == 0) &&
               a->u.forward_ack.n_failed == b->u.forward_ack.n_failed &&
               (a->u.forward_ack.n_failed == 0 ||
                memcmp(a->u.forward_ack.failed, b->u.forward_ack.failed,
                       a->u.forward_ack.n_failed * sizeof(uint64_t)) == 0);
    case WIRE_TAKEOVER:
        return a->u.takeover.req == b->u.takeover.req &&
               str_eq(a->u.takeover.client_id, b->u.takeover.client_id) &&
               a->u.takeover.epoch == b->u.takeover.epoch;
    case WIRE_TAKEOVER_ACK:
        return a->u.takeover_ack.req == b->u.takeover_ack.req &&
               a->u.takeover_ack.result == b->u.takeover_ack.result;
    case WIRE_RETAIN_NOTICE:
        return retain_eq(a, b);
    case WIRE_NONE:
        break;
    }
    return false;
}

/* Appends f encoded by the wire_put_* of its type. */
static void put(struct buf *out, const struct wire_frame *f)
{
    switch (f->type) {
    case WIRE_HELLO:
        wire_put_hello(out, &f->u.hello);
        break;
    case WIRE_PROOF:
        wire_put_proof(out, f->u.proof);
        break;
    case WIRE_PING:
        wire_put_ping(out, f->u.ping_seq);
        break;
    case WIRE_ACK:
        wire_put_ack(out, f->u.ack_seq);
        break;
    case WIRE_MEMBERS:
        wire_put_members(out, f->u.members.v, f->u.members.n);
        break;
    case WIRE_ROUTE_DELTA:
        wire_put_route_delta(out, f->u.route_delta.seq, f->u.route_delta.added,
                             f->u.route_delta.n_added, f->u.route_delta.removed,
                             f->u.route_delta.n_removed);
        break;
    case WIRE_ROUTE_SNAPSHOT:
        wire_put_route_snapshot(out, f->u.route_snapshot.seq, f->u.route_snapshot.filters,
                                f->u.route_snapshot.n);
        break;
    case WIRE_ROUTE_DIGEST:
        wire_put_route_digest(out, f->u.route_digest.seq, f->u.route_digest.digest,
                              f->u.route_digest.count);
        break;
    case WIRE_ROUTE_SNAPSHOT_REQUEST:
        wire_put_route_snapshot_request(out, f->u.snapshot_have_seq);
        break;
    case WIRE_FORWARD:
        wire_put_forward(out, f->u.forward.v, f->u.forward.n);
        break;
    case WIRE_FORWARD_ACK:
        wire_put_forward_ack(out, f->u.forward_ack.ids, f->u.forward_ack.n, f->u.forward_ack.failed,
                             f->u.forward_ack.n_failed);
        break;
    case WIRE_TAKEOVER:
        wire_put_takeover(out, f->u.takeover.req, f->u.takeover.client_id, f->u.takeover.epoch);
        break;
    case WIRE_TAKEOVER_ACK:
        wire_put_takeover_ack(out, f->u.takeover_ack.req, f->u.takeover_ack.result);
        break;
    case WIRE_RETAIN_NOTICE:
        wire_put_retain_notice(out, f->u.retain.v, f->u.retain.n);
        break;
    case WIRE_NONE:
        REQUIRE(!"a parsed frame has a type");
    }
}

static int parse_exact(const uint8_t *p, size_t n, struct wire_frame *f)
{
    uint8_t *c = malloc(n ? n : 1);
    REQUIRE(c);
    if (n)
        memcpy(c, p, n);
    int rc = wire_frame_parse(c, n, f);
    free(c); /* views must not point into the input */
    return rc;
}

static void free_twice(struct wire_frame *f)
{
    wire_frame_free(f);
    REQUIRE(f->type == WIRE_NONE && f->priv == NULL);
    wire_frame_free(f);
    REQUIRE(f->type == WIRE_NONE && f->priv == NULL);
}

/* Re-encodes f, parses that, compares, and checks the encoding is canonical. */
static void roundtrip(const struct wire_frame *f)
{
    struct buf b1 = {0}, b2 = {0};
    struct wire_frame g;

    put(&b1, f);
    REQUIRE(buf_used(&b1) > WIRE_LEN_PREFIX);
    REQUIRE(parse_exact(buf_head(&b1), buf_used(&b1), &g) == (int)buf_used(&b1));
    REQUIRE(frame_eq(f, &g));
    put(&b2, &g);
    REQUIRE(buf_used(&b2) == buf_used(&b1));
    REQUIRE(memcmp(buf_head(&b1), buf_head(&b2), buf_used(&b1)) == 0);
    free_twice(&g);
    buf_free(&b1);
    buf_free(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        struct wire_frame f, g;
        int rc = parse_exact(data + off, size - off, &f);
        if (rc <= 0) {
            REQUIRE(rc == 0 || rc == ERR_MALFORMED || rc == ERR_PACKET_TOO_LARGE);
            break; /* more bytes needed, or the link would be closed */
        }
        REQUIRE(rc > WIRE_LEN_PREFIX && (size_t)rc <= size - off);
        REQUIRE(parse_exact(data + off, (size_t)rc - 1, &g) == 0);
        roundtrip(&f);
        free_twice(&f);
        off += (size_t)rc;
    }
    return 0;
}
