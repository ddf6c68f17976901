/*
 * Unit tests for cluster/wire.c: a round trip of every frame type with all fields set and
 * with empty ones, byte-exact small frames, streams of frames, frames cut at every byte,
 * hand-built bodies that must be refused (size, garbage, missing or unknown body, bad
 * strings at every depth), the route hash and its digest, and frame release. Every parse runs
 * on an exactly-sized heap copy that is freed before the views are read, so ASan catches a
 * read past the end and a view that points into the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs these first (clang-format would sort it ahead of them). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "cluster/wire.h"
#include "node/buf.h"
#include "node/err.h"

static struct wire_str str_of(const char *s)
{
    return (struct wire_str){s, strlen(s)};
}

static struct wire_bytes bytes_of(const void *p, size_t n)
{
    return (struct wire_bytes){p, n};
}

static int parse_copy(const uint8_t *p, size_t n, struct wire_frame *f)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n)
        memcpy(c, p, n);
    int rc = wire_frame_parse(c, n, f);
    free(c);
    return rc;
}

/* Parses the one frame that b holds; it must use every byte. Empties b. */
static void parse_all(struct buf *b, struct wire_frame *f)
{
    assert_true(buf_used(b) > WIRE_LEN_PREFIX);
    assert_int_equal(parse_copy(buf_head(b), buf_used(b), f), (int)buf_used(b));
    buf_reset(b);
}

static void assert_str(struct wire_str s, const char *want)
{
    assert_non_null(s.p);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len + 1); /* NUL-terminated too */
}

static void assert_bytes(struct wire_bytes b, const void *want, size_t n)
{
    assert_non_null(b.p); /* even when empty, so that memcpy(dst, b.p, 0) is defined */
    assert_int_equal(b.len, n);
    if (n)
        assert_memory_equal(b.p, want, n);
}

/* ---- hand-built protobuf bodies ---- */

struct pb {
    uint8_t b[512];
    size_t n;
};

static void pb_raw(struct pb *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof(w->b));
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void pb_varint(struct pb *w, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        pb_raw(w, &c, 1);
        v >>= 7;
    } while (v);
}

static void pb_uint(struct pb *w, unsigned field, uint64_t v)
{
    pb_varint(w, (uint64_t)field << 3);
    pb_varint(w, v);
}

static void pb_len(struct pb *w, unsigned field, const void *p, size_t n)
{
    pb_varint(w, (uint64_t)field << 3 | 2);
    pb_varint(w, n);
    pb_raw(w, p, n);
}

static void pb_sub(struct pb *w, unsigned field, const struct pb *inner)
{
    pb_len(w, field, inner->b, inner->n);
}

/* Parses body behind a length prefix; frees what a successful parse returns. */
static int parse_body(const void *body, size_t n)
{
    uint8_t *c = malloc(n + WIRE_LEN_PREFIX);
    assert_non_null(c);
    c[0] = (uint8_t)(n >> 24);
    c[1] = (uint8_t)(n >> 16);
    c[2] = (uint8_t)(n >> 8);
    c[3] = (uint8_t)n;
    if (n)
        memcpy(c + WIRE_LEN_PREFIX, body, n);
    struct wire_frame f;
    int rc = wire_frame_parse(c, n + WIRE_LEN_PREFIX, &f);
    if (rc > 0) {
        assert_int_equal(rc, n + WIRE_LEN_PREFIX);
        wire_frame_free(&f);
    }
    free(c);
    return rc;
}

static int parse_pb(const struct pb *w)
{
    return parse_body(w->b, w->n);
}

/* Frame { takeover { req: 1, client_id: s[0..n) } } */
static int parse_takeover_client_id(const void *s, size_t n)
{
    struct pb t = {0}, fr = {0};
    pb_uint(&t, 1, 1);
    pb_len(&t, 2, s, n);
    pb_sub(&fr, 12, &t);
    return parse_pb(&fr);
}

/* ---- round trips ---- */

static void test_small_frames_byte_exact(void **state)
{
    (void)state;
    struct buf b = {0};

    /* prefix 4 (big-endian), then Frame{ping(3){seq(1): 5}} */
    wire_put_ping(&b, 5);
    static const uint8_t ping5[] = {0, 0, 0, 4, 0x1a, 0x02, 0x08, 0x05};
    assert_int_equal(buf_used(&b), sizeof(ping5));
    assert_memory_equal(buf_head(&b), ping5, sizeof(ping5));
    buf_reset(&b);

    /* proto3 leaves zero fields out: an Ack with seq 0 is an empty sub-message */
    wire_put_ack(&b, 0);
    static const uint8_t ack0[] = {0, 0, 0, 2, 0x22, 0x00};
    assert_int_equal(buf_used(&b), sizeof(ack0));
    assert_memory_equal(buf_head(&b), ack0, sizeof(ack0));

    /* frames append: the earlier one is kept */
    wire_put_ping(&b, 300);
    static const uint8_t both[] = {0, 0, 0,    2,    0x22, 0x00, 0,   0,
                                   0, 5, 0x1a, 0x03, 0x08, 0xac, 0x02};
    assert_int_equal(buf_used(&b), sizeof(both));
    assert_memory_equal(buf_head(&b), both, sizeof(both));
    buf_free(&b);
}

static void test_hello(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    static const uint8_t nonce[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff};
    struct wire_hello h = {
        .cluster_name = str_of("prod-eu"),
        .node_id = str_of("node-\xc3\xa9-1"),
        .incarnation = UINT64_MAX,
        .protocol_version = WIRE_PROTOCOL_VERSION,
        .nonce = bytes_of(nonce, sizeof(nonce)),
        .advertise = str_of("10.0.0.7:7946"),
    };

    wire_put_hello(&b, &h);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_HELLO);
    assert_str(f.u.hello.cluster_name, "prod-eu");
    assert_str(f.u.hello.node_id, "node-\xc3\xa9-1");
    assert_true(f.u.hello.incarnation == UINT64_MAX);
    assert_int_equal(f.u.hello.protocol_version, WIRE_PROTOCOL_VERSION);
    assert_bytes(f.u.hello.nonce, nonce, sizeof(nonce));
    assert_str(f.u.hello.advertise, "10.0.0.7:7946");
    wire_frame_free(&f);

    /* every field empty or zero: still a Hello, with empty (not NULL) views */
    struct wire_hello e = {{NULL, 0}, {NULL, 0}, 0, 0, {NULL, 0}, {NULL, 0}};
    wire_put_hello(&b, &e);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_HELLO);
    assert_str(f.u.hello.cluster_name, "");
    assert_str(f.u.hello.node_id, "");
    assert_true(f.u.hello.incarnation == 0);
    assert_int_equal(f.u.hello.protocol_version, 0);
    assert_bytes(f.u.hello.nonce, NULL, 0);
    assert_str(f.u.hello.advertise, "");
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_proof_ping_ack(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    uint8_t hmac[32];
    for (size_t i = 0; i < sizeof(hmac); i++)
        hmac[i] = (uint8_t)(i * 37);

    wire_put_proof(&b, bytes_of(hmac, sizeof(hmac)));
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_PROOF);
    assert_bytes(f.u.proof, hmac, sizeof(hmac));
    wire_frame_free(&f);

    wire_put_proof(&b, bytes_of(NULL, 0));
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_PROOF);
    assert_bytes(f.u.proof, NULL, 0);
    wire_frame_free(&f);

    static const uint64_t seqs[] = {0, 1, 127, 128, UINT32_MAX, (uint64_t)1 << 63, UINT64_MAX};
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        wire_put_ping(&b, seqs[i]);
        parse_all(&b, &f);
        assert_int_equal(f.type, WIRE_PING);
        assert_true(f.u.ping_seq == seqs[i]);
        wire_frame_free(&f);

        wire_put_ack(&b, seqs[i]);
        parse_all(&b, &f);
        assert_int_equal(f.type, WIRE_ACK);
        assert_true(f.u.ack_seq == seqs[i]);
        wire_frame_free(&f);
    }
    buf_free(&b);
}

static void test_members(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    const struct wire_member m[3] = {
        {str_of("a"), str_of("10.0.0.1:7946"), 1},
        {str_of("node-b"), str_of(""), UINT64_MAX},
        {str_of(""), str_of("[::1]:7946"), 0},
    };

    wire_put_members(&b, m, 3);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_MEMBERS);
    assert_int_equal(f.u.members.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_str(f.u.members.v[i].node_id, m[i].node_id.p);
        assert_str(f.u.members.v[i].advertise, m[i].advertise.p);
        assert_true(f.u.members.v[i].incarnation == m[i].incarnation);
    }
    wire_frame_free(&f);

    wire_put_members(&b, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_MEMBERS);
    assert_int_equal(f.u.members.n, 0);
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_route_delta(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    const struct wire_str added[3] = {str_of("a/+/c"), str_of(""), str_of("$share/g/#")};
    const struct wire_str removed[1] = {str_of("sensors/\xe2\x82\xac/#")};

    wire_put_route_delta(&b, UINT64_MAX - 1, added, 3, removed, 1);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_DELTA);
    assert_true(f.u.route_delta.seq == UINT64_MAX - 1);
    assert_int_equal(f.u.route_delta.n_added, 3);
    for (size_t i = 0; i < 3; i++)
        assert_str(f.u.route_delta.added[i], added[i].p);
    assert_int_equal(f.u.route_delta.n_removed, 1);
    assert_str(f.u.route_delta.removed[0], removed[0].p);
    wire_frame_free(&f);

    wire_put_route_delta(&b, 0, NULL, 0, removed, 1);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_DELTA);
    assert_true(f.u.route_delta.seq == 0);
    assert_int_equal(f.u.route_delta.n_added, 0);
    assert_int_equal(f.u.route_delta.n_removed, 1);
    assert_str(f.u.route_delta.removed[0], removed[0].p);
    wire_frame_free(&f);

    wire_put_route_delta(&b, 9, NULL, 0, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_DELTA);
    assert_true(f.u.route_delta.seq == 9);
    assert_int_equal(f.u.route_delta.n_added, 0);
    assert_int_equal(f.u.route_delta.n_removed, 0);
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_route_snapshot_digest_request(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    enum { N = 600 };
    char(*names)[32] = malloc(sizeof(*names) * N);
    struct wire_str *v = malloc(sizeof(*v) * N);
    assert_non_null(names);
    assert_non_null(v);
    for (size_t i = 0; i < N; i++)
        v[i] = (struct wire_str){names[i], (size_t)snprintf(names[i], 32, "site/%zu/+/temp", i)};

    /* over the encoder's stack scratch, so its heap path runs too */
    wire_put_route_snapshot(&b, 77, v, N);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_SNAPSHOT);
    assert_true(f.u.route_snapshot.seq == 77);
    assert_int_equal(f.u.route_snapshot.n, N);
    for (size_t i = 0; i < N; i++)
        assert_str(f.u.route_snapshot.filters[i], names[i]);
    wire_frame_free(&f);
    free(v);
    free(names);

    wire_put_route_snapshot(&b, 0, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_SNAPSHOT);
    assert_true(f.u.route_snapshot.seq == 0);
    assert_int_equal(f.u.route_snapshot.n, 0);
    wire_frame_free(&f);

    wire_put_route_digest(&b, UINT64_MAX, 0x8000000000000001u, UINT32_MAX);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_DIGEST);
    assert_true(f.u.route_digest.seq == UINT64_MAX);
    assert_true(f.u.route_digest.digest == 0x8000000000000001u);
    assert_true(f.u.route_digest.count == UINT32_MAX);
    wire_frame_free(&f);

    wire_put_route_digest(&b, 0, 0, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_DIGEST);
    assert_true(f.u.route_digest.seq == 0 && f.u.route_digest.digest == 0);
    assert_true(f.u.route_digest.count == 0);
    wire_frame_free(&f);

    wire_put_route_snapshot_request(&b, 123456789012345u);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_ROUTE_SNAPSHOT_REQUEST);
    assert_true(f.u.snapshot_have_seq == 123456789012345u);
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_forward(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    static const uint8_t blob[] = {1, 0, 2, 0, 0xff}; /* bytes may hold NUL and non-UTF-8 */
    const struct wire_str shared[2] = {str_of("g1/a/#"), str_of("g2/+")};
    const struct wire_fwd v[3] = {
        {0, bytes_of(blob, sizeof(blob)), true, NULL, 0, 0, str_of(""), str_of("")},
        {UINT64_MAX, bytes_of(NULL, 0), false, shared, 2, UINT64_MAX, str_of(""), str_of("")},
        {42, bytes_of(blob, 1), true, shared + 1, 1, 1764000000123456u, str_of("node-3"),
         str_of("node-1")},
    };

    wire_put_forward(&b, v, 3);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_FORWARD);
    assert_int_equal(f.u.forward.n, 3);
    for (size_t i = 0; i < 3; i++) {
        const struct wire_fwd *g = &f.u.forward.v[i];
        assert_true(g->id == v[i].id);
        assert_bytes(g->msg, v[i].msg.p, v[i].msg.len);
        assert_int_equal(g->plain, v[i].plain);
        assert_int_equal(g->n_shared, v[i].n_shared);
        for (size_t j = 0; j < v[i].n_shared; j++)
            assert_str(g->shared[j], v[i].shared[j].p);
        assert_true(g->pub_seq == v[i].pub_seq);
        assert_str(g->replay_of, v[i].replay_of.p);
        assert_str(g->pub_node, v[i].pub_node.p);
    }
    wire_frame_free(&f);

    wire_put_forward(&b, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_FORWARD);
    assert_int_equal(f.u.forward.n, 0);
    wire_frame_free(&f);

    /* a batch too big for the encoder's stack scratch */
    enum { N = 300 };
    struct wire_fwd *big = calloc(N, sizeof(*big));
    assert_non_null(big);
    for (size_t i = 0; i < N; i++)
        big[i] = (struct wire_fwd){
            i + 1,     bytes_of(blob, i % sizeof(blob)), i & 1, shared, i % 3, i * 7, str_of(""),
            str_of("")};
    wire_put_forward(&b, big, N);
    parse_all(&b, &f);
    assert_int_equal(f.u.forward.n, N);
    for (size_t i = 0; i < N; i++) {
        assert_true(f.u.forward.v[i].id == i + 1);
        assert_bytes(f.u.forward.v[i].msg, blob, i % sizeof(blob));
        assert_int_equal(f.u.forward.v[i].n_shared, i % 3);
        for (size_t j = 0; j < i % 3; j++)
            assert_str(f.u.forward.v[i].shared[j], shared[j].p);
    }
    wire_frame_free(&f);
    free(big);
    buf_free(&b);
}

static void test_forward_ack(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    static const uint64_t ids[] = {0, 1, UINT64_MAX, 1000};
    static const uint64_t failed[] = {5, 9};

    wire_put_forward_ack(&b, ids, 4, failed, 2);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_FORWARD_ACK);
    assert_int_equal(f.u.forward_ack.n, 4);
    assert_memory_equal(f.u.forward_ack.ids, ids, sizeof(ids));
    assert_int_equal(f.u.forward_ack.n_failed, 2);
    assert_memory_equal(f.u.forward_ack.failed, failed, sizeof(failed));
    wire_frame_free(&f);

    wire_put_forward_ack(&b, NULL, 0, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_FORWARD_ACK);
    assert_int_equal(f.u.forward_ack.n, 0);
    assert_int_equal(f.u.forward_ack.n_failed, 0);
    wire_frame_free(&f);

    /* ids one varint field each (unpacked), as another encoder may send them */
    struct pb a = {0}, fr = {0};
    pb_uint(&a, 1, 7);
    pb_uint(&a, 1, 8);
    pb_sub(&fr, 11, &a);
    uint8_t raw[64] = {0, 0, 0, (uint8_t)fr.n};
    memcpy(raw + 4, fr.b, fr.n);
    assert_int_equal(parse_copy(raw, fr.n + 4, &f), (int)fr.n + 4);
    assert_int_equal(f.type, WIRE_FORWARD_ACK);
    assert_int_equal(f.u.forward_ack.n, 2);
    assert_true(f.u.forward_ack.ids[0] == 7 && f.u.forward_ack.ids[1] == 8);
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_takeover(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;

    wire_put_takeover(&b, 17, str_of("client-\xf0\x9f\x98\x80"), UINT64_MAX);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_TAKEOVER);
    assert_true(f.u.takeover.req == 17);
    assert_str(f.u.takeover.client_id, "client-\xf0\x9f\x98\x80");
    assert_true(f.u.takeover.epoch == UINT64_MAX);
    wire_frame_free(&f);

    wire_put_takeover(&b, 0, str_of(""), 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_TAKEOVER);
    assert_str(f.u.takeover.client_id, "");
    assert_true(f.u.takeover.req == 0 && f.u.takeover.epoch == 0);
    wire_frame_free(&f);

    static const int32_t results[] = {0, -1, ERR_TIMEOUT, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
        wire_put_takeover_ack(&b, UINT64_MAX - i, results[i]);
        parse_all(&b, &f);
        assert_int_equal(f.type, WIRE_TAKEOVER_ACK);
        assert_true(f.u.takeover_ack.req == UINT64_MAX - i);
        assert_int_equal(f.u.takeover_ack.result, results[i]);
        wire_frame_free(&f);
    }
    buf_free(&b);
}

static void test_retain_notice(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    static const uint8_t blob[] = {0x10, 0, 0x20};
    const struct wire_retain v[2] = {
        {str_of("a/b"), bytes_of(blob, sizeof(blob))},
        {str_of("a/c"), bytes_of(NULL, 0)}, /* cleared */
    };

    wire_put_retain_notice(&b, v, 2);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_RETAIN_NOTICE);
    assert_int_equal(f.u.retain.n, 2);
    assert_str(f.u.retain.v[0].topic, "a/b");
    assert_bytes(f.u.retain.v[0].msg, blob, sizeof(blob));
    assert_str(f.u.retain.v[1].topic, "a/c");
    assert_bytes(f.u.retain.v[1].msg, NULL, 0);
    wire_frame_free(&f);

    wire_put_retain_notice(&b, NULL, 0);
    parse_all(&b, &f);
    assert_int_equal(f.type, WIRE_RETAIN_NOTICE);
    assert_int_equal(f.u.retain.n, 0);
    wire_frame_free(&f);
    buf_free(&b);
}

static void test_strings_by_length(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    /* the encoder copies len bytes and never looks for a NUL */
    const char text[] = "abcdefgh";
    const struct wire_str part = {text + 2, 3};

    wire_put_takeover(&b, 1, part, 2);
    wire_put_route_snapshot(&b, 1, &part, 1);
    size_t n = buf_used(&b);
    uint8_t *c = malloc(n);
    assert_non_null(c);
    memcpy(c, buf_head(&b), n);
    int rc = wire_frame_parse(c, n, &f);
    assert_true(rc > 0 && (size_t)rc < n);
    assert_str(f.u.takeover.client_id, "cde");
    wire_frame_free(&f);
    assert_int_equal(wire_frame_parse(c + rc, n - (size_t)rc, &f), (int)(n - (size_t)rc));
    assert_str(f.u.route_snapshot.filters[0], "cde");
    wire_frame_free(&f);
    free(c);
    buf_free(&b);
}

/* ---- streams ---- */

/* Appends one frame of each type to b; returns how many. */
static size_t put_one_of_each(struct buf *b)
{
    static const uint8_t nonce[16] = {1};
    static const uint64_t ids[] = {5, 6};
    const struct wire_str s = str_of("t/#");
    const struct wire_hello h = {str_of("c"), str_of("n"), 3, 1, bytes_of(nonce, 16), str_of("")};
    const struct wire_member m = {str_of("n"), str_of("h:1"), 2};
    const struct wire_fwd fw = {1, bytes_of(nonce, 3), true, &s, 1, 0, str_of(""), str_of("")};
    const struct wire_retain r = {s, bytes_of(NULL, 0)};

    wire_put_hello(b, &h);
    wire_put_proof(b, bytes_of(nonce, 16));
    wire_put_ping(b, 1);
    wire_put_ack(b, 1);
    wire_put_members(b, &m, 1);
    wire_put_route_delta(b, 1, &s, 1, NULL, 0);
    wire_put_route_snapshot(b, 1, &s, 1);
    wire_put_route_digest(b, 1, 2, 3);
    wire_put_route_snapshot_request(b, 4);
    wire_put_forward(b, &fw, 1);
    wire_put_forward_ack(b, ids, 2, ids, 1);
    wire_put_takeover(b, 1, s, 2);
    wire_put_takeover_ack(b, 1, -5);
    wire_put_retain_notice(b, &r, 1);
    return WIRE_RETAIN_NOTICE;
}

static void test_stream_of_frames(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    size_t count = put_one_of_each(&b);
    size_t n = buf_used(&b), off = 0;
    uint8_t *c = malloc(n);
    assert_non_null(c);
    memcpy(c, buf_head(&b), n);

    for (size_t i = 0; i < count; i++) {
        int rc = wire_frame_parse(c + off, n - off, &f);
        assert_true(rc > WIRE_LEN_PREFIX);
        assert_int_equal(f.type, (enum wire_type)(WIRE_HELLO + i));
        wire_frame_free(&f);
        off += (size_t)rc;
    }
    assert_int_equal(off, n);
    assert_int_equal(wire_frame_parse(c + off, 0, &f), 0);
    free(c);
    buf_free(&b);
}

static void test_split_at_every_byte(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f, before;
    static const uint8_t msg[40] = {9};
    const struct wire_str sh = str_of("g/x");
    const struct wire_fwd v[2] = {
        {7, bytes_of(msg, sizeof(msg)), false, &sh, 1, 9, str_of("a"), str_of("b")},
        {8, bytes_of(msg, 0), true, NULL, 0, 0, str_of(""), str_of("")}};

    put_one_of_each(&b);
    wire_put_forward(&b, v, 2);
    const uint8_t *all = buf_head(&b);
    size_t n = buf_used(&b), off = 0;

    while (off < n) {
        size_t total = WIRE_LEN_PREFIX + ((size_t)all[off] << 24 | (size_t)all[off + 1] << 16 |
                                          (size_t)all[off + 2] << 8 | all[off + 3]);
        for (size_t k = 0; k < total; k++) {
            memset(&f, 0xa5, sizeof(f));
            before = f;
            assert_int_equal(parse_copy(all + off, k, &f), 0);
            assert_memory_equal(&f, &before, sizeof(f)); /* untouched */
        }
        assert_int_equal(parse_copy(all + off, total, &f), (int)total);
        wire_frame_free(&f);
        off += total;
    }
    assert_int_equal(off, n);
    buf_free(&b);
}

/* ---- refusals ---- */

static void test_size_limit(void **state)
{
    (void)state;
    struct wire_frame f;
    const uint32_t max = WIRE_MAX_FRAME;
    const uint8_t over[4] = {(uint8_t)((max + 1) >> 24), (uint8_t)((max + 1) >> 16),
                             (uint8_t)((max + 1) >> 8), (uint8_t)(max + 1)};
    const uint8_t at[4] = {(uint8_t)(max >> 24), (uint8_t)(max >> 16), (uint8_t)(max >> 8),
                           (uint8_t)max};
    static const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};

    /* refused from the prefix alone, before any of the body is there */
    assert_int_equal(parse_copy(over, 4, &f), ERR_PACKET_TOO_LARGE);
    assert_int_equal(parse_copy(huge, 4, &f), ERR_PACKET_TOO_LARGE);
    assert_int_equal(parse_copy(at, 4, &f), 0);

    /* the largest body parses; one byte more is never produced */
    struct buf b = {0};
    size_t hl = WIRE_MAX_FRAME - 10; /* Frame{proof{hmac}}: two tags, two 4-byte lengths */
    uint8_t *hmac = calloc(1, hl + 1);
    assert_non_null(hmac);
    hmac[0] = 0x5a;
    hmac[hl - 1] = 0xa5;
    wire_put_proof(&b, bytes_of(hmac, hl));
    assert_int_equal(buf_used(&b), WIRE_LEN_PREFIX + WIRE_MAX_FRAME);
    assert_int_equal(wire_frame_parse(buf_head(&b), buf_used(&b), &f),
                     WIRE_LEN_PREFIX + WIRE_MAX_FRAME);
    assert_int_equal(f.type, WIRE_PROOF);
    assert_bytes(f.u.proof, hmac, hl);
    wire_frame_free(&f);
    buf_reset(&b);

    wire_put_ping(&b, 1);
    size_t had = buf_used(&b);
    wire_put_proof(&b, bytes_of(hmac, hl + 1));
    assert_int_equal(buf_used(&b), had); /* dropped, the buffer is as it was */
    free(hmac);
    buf_free(&b);
}

static void test_garbage_and_truncation(void **state)
{
    (void)state;
    static const uint8_t ff[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    /* ping (3) with a length past the end of the body */
    static const uint8_t past[] = {0x1a, 0x05, 0x08, 0x01};
    /* ping's seq varint cut short inside its sub-message */
    static const uint8_t cut[] = {0x1a, 0x02, 0x08, 0x80};
    /* ping (3) sent as a varint instead of a sub-message */
    static const uint8_t wrong_type[] = {0x18, 0x01};
    /* a group (wire type 3), which proto3 never sends */
    static const uint8_t group[] = {0x1b, 0x1c};
    /* a tag with an 11-byte varint */
    static const uint8_t long_key[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x01};

    assert_int_equal(parse_body(ff, sizeof(ff)), ERR_MALFORMED);
    assert_int_equal(parse_body(past, sizeof(past)), ERR_MALFORMED);
    assert_int_equal(parse_body(cut, sizeof(cut)), ERR_MALFORMED);
    assert_int_equal(parse_body(wrong_type, sizeof(wrong_type)), ERR_MALFORMED);
    assert_int_equal(parse_body(group, sizeof(group)), ERR_MALFORMED);
    assert_int_equal(parse_body(long_key, sizeof(long_key)), ERR_MALFORMED);

    /* a string sent as a varint: Frame{takeover{client_id: varint 5}} */
    struct pb t = {0}, fr = {0};
    pb_uint(&t, 2, 5);
    pb_sub(&fr, 12, &t);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);
}

static void test_missing_or_unknown_body(void **state)
{
    (void)state;
    struct pb fr = {0}, p = {0};

    /* an empty body is a Frame with no oneof member */
    assert_int_equal(parse_body(NULL, 0), ERR_MALFORMED);

    /* only fields this version does not know */
    pb_uint(&fr, 15, 1);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);
    fr.n = 0;
    pb_len(&fr, 99, "xyz", 3);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);

    /* unknown fields next to a known body are ignored (fields are only ever added) */
    fr.n = 0;
    pb_uint(&p, 1, 77);
    pb_len(&p, 9, "future", 6);
    pb_uint(&fr, 40, 3);
    pb_sub(&fr, 3, &p);
    pb_len(&fr, 41, "\xff\x00", 2); /* an unknown field is not checked as a string */
    uint8_t raw[64] = {0, 0, 0, (uint8_t)fr.n};
    memcpy(raw + 4, fr.b, fr.n);
    struct wire_frame f;
    assert_int_equal(parse_copy(raw, fr.n + 4, &f), (int)fr.n + 4);
    assert_int_equal(f.type, WIRE_PING);
    assert_true(f.u.ping_seq == 77);
    wire_frame_free(&f);
}

static void test_bad_strings(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
    } bad[] = {
        {"a\0b", 3},             /* embedded NUL */
        {"\0", 1},               /* only a NUL */
        {"ab\0", 3},             /* trailing NUL */
        {"\x80", 1},             /* lone continuation byte */
        {"\xc3", 1},             /* sequence cut short */
        {"\xe2\x82", 2},         /* sequence cut short */
        {"\xc0\x80", 2},         /* overlong NUL */
        {"\xc1\xbf", 2},         /* overlong */
        {"\xe0\x9f\xbf", 3},     /* overlong three-byte */
        {"\xf0\x8f\xbf\xbf", 4}, /* overlong four-byte */
        {"\xed\xa0\x80", 3},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4}, /* invalid lead */
        {"\xff", 1},             /* invalid lead */
        {"a\xe2\x28\xa1", 4},    /* bad continuation */
    };
    static const struct {
        const char *s;
        size_t n;
    } good[] = {
        {"", 0},
        {"plain/ascii", 11},
        {"\x7f", 1},
        {"\xc2\x80", 2},
        {"\xed\x9f\xbf", 3},     /* U+D7FF */
        {"\xee\x80\x80", 3},     /* U+E000 */
        {"\xef\xbf\xbf", 3},     /* U+FFFF */
        {"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF */
        {"\xe2\x82\xac/\xf0\x9f\x98\x80", 8},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_takeover_client_id(bad[i].s, bad[i].n) != ERR_MALFORMED)
            fail_msg("bad string %zu accepted", i);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (parse_takeover_client_id(good[i].s, good[i].n) <= 0)
            fail_msg("good string %zu refused", i);
    }
}

/* A NUL is found at every depth: in Frame > X > string and Frame > X > Y > string. */
static void test_bad_strings_nested(void **state)
{
    (void)state;
    struct pb in = {0}, mid = {0}, fr = {0};

    /* Hello.advertise */
    pb_len(&in, 6, "h\0:1", 4);
    pb_sub(&fr, 1, &in);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);

    /* RouteDelta.removed, the second of two */
    in.n = fr.n = 0;
    pb_len(&in, 3, "ok", 2);
    pb_len(&in, 3, "x\0", 2);
    pb_sub(&fr, 6, &in);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);

    /* MemberList.members[1].node_id */
    in.n = mid.n = fr.n = 0;
    pb_len(&in, 1, "n1", 2);
    pb_sub(&mid, 1, &in);
    in.n = 0;
    pb_len(&in, 1, "\xc0\x80", 2);
    pb_sub(&mid, 1, &in);
    pb_sub(&fr, 5, &mid);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);

    /* Forward.msgs[0].shared[0]; the msg bytes next to it may hold anything */
    in.n = mid.n = fr.n = 0;
    pb_len(&in, 2, "\0\xff", 2);
    pb_len(&in, 4, "g/\0", 3);
    pb_sub(&mid, 1, &in);
    pb_sub(&fr, 10, &mid);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);

    /* the same Forward with a clean shared name decodes */
    in.n = mid.n = fr.n = 0;
    pb_len(&in, 2, "\0\xff", 2);
    pb_len(&in, 4, "g/a", 3);
    pb_sub(&mid, 1, &in);
    pb_sub(&fr, 10, &mid);
    assert_true(parse_pb(&fr) > 0);

    /* RetainNotice.changes[0].topic */
    in.n = mid.n = fr.n = 0;
    pb_len(&in, 1, "t\xed\xa0\x80", 4);
    pb_sub(&mid, 1, &in);
    pb_sub(&fr, 14, &mid);
    assert_int_equal(parse_pb(&fr), ERR_MALFORMED);
}

/* ---- route hash ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t hash_of(const char *s)
{
    return wire_route_hash(s, strlen(s));
}

static void test_route_hash(void **state)
{
    (void)state;
    enum { N = 20000 };
    uint64_t *h = malloc(sizeof(*h) * N);
    assert_non_null(h);
    char name[48];

    /* close filters hash apart, and no two of many patterned ones collide */
    assert_true(hash_of("a/b") != hash_of("a/c"));
    assert_true(hash_of("a/b") != hash_of("b/a"));
    assert_true(hash_of("a/+") != hash_of("a/#"));
    assert_true(hash_of("") != hash_of("#"));
    for (size_t i = 0; i < N; i++) {
        int n = snprintf(name, sizeof(name), "dev/%zu/%s", i / 2, i % 2 ? "+" : "#");
        h[i] = wire_route_hash(name, (size_t)n);
    }
    qsort(h, N, sizeof(*h), cmp_u64);
    for (size_t i = 1; i < N; i++)
        assert_true(h[i] != h[i - 1]);
    free(h);

    /* the hash reads len bytes and depends on content only */
    char copy[] = "a/b/c";
    assert_true(wire_route_hash("a/b/c", 5) == wire_route_hash(copy, 5));
    assert_true(wire_route_hash("a/b/zzz", 3) == wire_route_hash(copy, 3));
    assert_true(wire_route_hash(copy, 3) != wire_route_hash(copy, 5));

    /* the digest: order-independent, and adding then removing a filter undoes it */
    const char *set[] = {"a/#", "b/+/c", "$share/g/x", "", "\xc3\xa9/t"};
    uint64_t fwd = 0, rev = 0;
    for (size_t i = 0; i < 5; i++) {
        fwd += hash_of(set[i]);
        rev += hash_of(set[4 - i]);
    }
    assert_true(fwd == rev);
    uint64_t d = fwd + hash_of("new/filter");
    assert_true(d != fwd);
    assert_true(d - hash_of("new/filter") == fwd);
    assert_true(fwd - hash_of("b/+/c") + hash_of("b/+/d") != fwd);
    assert_true(fwd - hash_of("b/+/c") != fwd - hash_of("a/#"));
}

/* ---- release ---- */

static void test_frame_free(void **state)
{
    (void)state;
    struct buf b = {0};
    struct wire_frame f;
    const struct wire_str s = str_of("x");

    memset(&f, 0, sizeof(f));
    wire_frame_free(&f); /* zeroed */
    assert_int_equal(f.type, WIRE_NONE);

    wire_put_route_delta(&b, 1, &s, 1, &s, 1);
    parse_all(&b, &f);
    assert_non_null(f.priv);
    wire_frame_free(&f);
    assert_int_equal(f.type, WIRE_NONE);
    assert_null(f.priv);
    wire_frame_free(&f); /* already freed */
    assert_int_equal(f.type, WIRE_NONE);

    /* a refused frame leaves nothing to free, and freeing it is harmless */
    static const uint8_t bad[] = {0, 0, 0, 2, 0x18, 0x01};
    assert_int_equal(parse_copy(bad, sizeof(bad), &f), ERR_MALFORMED);
    wire_frame_free(&f);
    assert_int_equal(f.type, WIRE_NONE);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_frames_byte_exact),
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_proof_ping_ack),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_route_delta),
        cmocka_unit_test(test_route_snapshot_digest_request),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_forward_ack),
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_retain_notice),
        cmocka_unit_test(test_strings_by_length),
        cmocka_unit_test(test_stream_of_frames),
        cmocka_unit_test(test_split_at_every_byte),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_garbage_and_truncation),
        cmocka_unit_test(test_missing_or_unknown_body),
        cmocka_unit_test(test_bad_strings),
        cmocka_unit_test(test_bad_strings_nested),
        cmocka_unit_test(test_route_hash),
        cmocka_unit_test(test_frame_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
