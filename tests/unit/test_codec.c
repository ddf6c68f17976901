/*
 * Unit tests for node/codec.c and node/codec_props.c: round trips of every packet type in
 * every version, byte-exact packets as real clients send them, one test per class of
 * malformed input, and streaming through codec_frame one byte at a time. Every decode runs
 * on an exactly-sized heap copy so that ASan catches a read past len.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs these first (clang-format would sort it ahead of them). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "node/codec.h"
#include "node/err.h"

#define OK 1 /* expected outcome "decodes" in check tables */

static struct codec_str str_of(const char *s)
{
    return (struct codec_str){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void assert_str(struct codec_str a, const char *want)
{
    assert_non_null(a.p);
    assert_int_equal(a.len, strlen(want));
    assert_memory_equal(a.p, want, a.len);
}

static int decode_copy(const uint8_t *b, size_t n, uint8_t v, bool srv, uint32_t max,
                       struct codec_packet *p, uint8_t **keep)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n)
        memcpy(c, b, n);
    int rc = codec_decode(c, n, v, srv, max, p);
    if (keep)
        *keep = c;
    else
        free(c);
    return rc;
}

/* Builds fixed header + body and decodes it; returns the decode result. */
static int decode_body(uint8_t h, const uint8_t *body, size_t n, uint8_t v, bool srv)
{
    uint8_t *b = malloc(n + 5);
    assert_non_null(b);
    b[0] = h;
    size_t hl = (size_t)(codec_varint_write(b + 1, (uint32_t)n) - b);
    memcpy(b + hl, body, n);
    struct codec_packet p;
    int rc = decode_copy(b, hl + n, v, srv, 0, &p, NULL);
    if (rc > 0)
        assert_int_equal(rc, hl + n);
    free(b);
    return rc;
}

static void expect(int want, int rc)
{
    if (want == OK)
        assert_true(rc > 0);
    else
        assert_int_equal(rc, want);
}

#define CHECK(want, v, srv, h, ...)                                                                \
    do {                                                                                           \
        static const uint8_t b_[] = {__VA_ARGS__};                                                 \
        expect(want, decode_body(h, b_, sizeof(b_), v, srv));                                      \
    } while (0)

/* Encodes p, checks size == write, decodes it back into *out. The buffer is returned in *buf
 * (views in *out point into it) and must be freed by the caller. */
static size_t roundtrip(uint8_t v, bool srv, const struct codec_packet *p, struct codec_packet *out,
                        uint8_t **buf)
{
    size_t n = codec_size(v, p);
    assert_true(n > 0);
    uint8_t *b = malloc(n);
    assert_non_null(b);
    assert_int_equal(codec_write(b, v, p), n);
    int rc = decode_copy(b, n, v, srv, 0, out, buf);
    assert_int_equal(rc, (int)n);
    free(b);
    return n;
}

/* ---- primitives ---- */

static void test_varint(void **state)
{
    static const uint32_t vals[] = {0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455};
    static const size_t sizes[] = {1, 1, 1, 2, 2, 3, 3, 4, 4};
    (void)state;
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t b[8] = {0x30};
        assert_int_equal(codec_varint_size(vals[i]), sizes[i]);
        uint8_t *e = codec_varint_write(b + 1, vals[i]);
        assert_int_equal(e - (b + 1), sizes[i]);
        size_t total = 0;
        assert_int_equal(codec_frame(b, (size_t)(e - b), 0, &total), 1);
        assert_int_equal(total, 1 + sizes[i] + vals[i]);
    }
    uint8_t b[] = {0x30, 0xff, 0xff, 0xff, 0x7f};
    size_t total;
    assert_int_equal(codec_frame(b, sizeof(b), 0, &total), 1);
    assert_int_equal(total, 5 + CODEC_MAX_REMAINING);
}

static void test_frame_varint_5_bytes(void **state)
{
    uint8_t b[] = {0x30, 0x80, 0x80, 0x80, 0x80, 0x01};
    size_t total;
    (void)state;
    assert_int_equal(codec_frame(b, sizeof(b), 0, &total), ERR_MALFORMED);
    assert_int_equal(codec_frame(b, 5, 0, &total), ERR_MALFORMED); /* known at the 4th byte */
    assert_int_equal(codec_frame(b, 4, 0, &total), CODEC_AGAIN);
    struct codec_packet p;
    assert_int_equal(decode_copy(b, sizeof(b), 4, true, 0, &p, NULL), ERR_MALFORMED);
}

static void test_frame_varint_not_minimal(void **state)
{
    uint8_t b[] = {0xc0, 0x80, 0x00};
    size_t total;
    (void)state;
    assert_int_equal(codec_frame(b, sizeof(b), 0, &total), ERR_MALFORMED);
}

static void test_frame_again(void **state)
{
    uint8_t b[] = {0x30, 0x82, 0x01};
    size_t total = 99;
    (void)state;
    assert_int_equal(codec_frame(b, 0, 0, &total), CODEC_AGAIN);
    assert_int_equal(codec_frame(b, 1, 0, &total), CODEC_AGAIN);
    assert_int_equal(codec_frame(b, 2, 0, &total), CODEC_AGAIN);
    assert_int_equal(total, 99);
    assert_int_equal(codec_frame(b, 3, 0, &total), 1);
    assert_int_equal(total, 3 + 130);
    struct codec_packet p;
    assert_int_equal(decode_copy(b, 3, 4, true, 0, &p, NULL), CODEC_AGAIN);
}

static void test_frame_too_large(void **state)
{
    uint8_t b[] = {0x30, 0x82, 0x01};
    size_t total;
    (void)state;
    assert_int_equal(codec_frame(b, 3, 133, &total), 1);
    assert_int_equal(codec_frame(b, 3, 132, &total), ERR_PACKET_TOO_LARGE);
    /* Known from the fixed header alone, before any body byte arrives. */
    struct codec_packet p;
    assert_int_equal(decode_copy(b, 3, 4, true, 132, &p, NULL), ERR_PACKET_TOO_LARGE);
    /* And even from a partial remaining length that can only grow past the limit. */
    uint8_t big[] = {0x30, 0xff, 0xff};
    assert_int_equal(codec_frame(big, 3, 1000, &total), ERR_PACKET_TOO_LARGE);
    assert_int_equal(codec_frame(big, 2, 100000, &total), CODEC_AGAIN);
    uint8_t small[] = {0xc0, 0x00};
    assert_int_equal(codec_frame(small, 2, 2, &total), 1);
    assert_int_equal(codec_frame(small, 2, 1, &total), ERR_PACKET_TOO_LARGE);
}

static bool utf8(const char *s, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    memcpy(c, s, n);
    bool r = codec_utf8_valid(c, n);
    free(c);
    return r;
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(utf8("", 0));
    assert_true(utf8("hello/world/0123456789", 22));
    assert_true(utf8("\xc3\xa9", 2));          /* U+00E9 */
    assert_true(utf8("\xe2\x82\xac", 3));      /* U+20AC */
    assert_true(utf8("\xef\xbf\xbf", 3));      /* U+FFFF */
    assert_true(utf8("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    assert_true(utf8("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_true(utf8("\xed\x9f\xbf", 3));      /* U+D7FF */
    assert_true(utf8("\xee\x80\x80", 3));      /* U+E000 */
    assert_false(utf8("a\0b", 3));             /* U+0000 */
    assert_false(utf8("abcdefgh\0", 9));       /* U+0000 after the fast path */
    assert_false(utf8("\xc0\x80", 2));         /* overlong U+0000 */
    assert_false(utf8("\xc1\xbf", 2));         /* overlong */
    assert_false(utf8("\xe0\x9f\xbf", 3));     /* overlong */
    assert_false(utf8("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    assert_false(utf8("\xed\xa0\x80", 3));     /* U+D800 */
    assert_false(utf8("\xed\xbf\xbf", 3));     /* U+DFFF */
    assert_false(utf8("\xf4\x90\x80\x80", 4)); /* U+110000 */
    assert_false(utf8("\xf5\x80\x80\x80", 4)); /* beyond */
    assert_false(utf8("\xff", 1));
    assert_false(utf8("\x80", 1));         /* stray continuation */
    assert_false(utf8("\xc3", 1));         /* truncated */
    assert_false(utf8("\xe2\x82", 2));     /* truncated */
    assert_false(utf8("\xf0\x9f\x98", 3)); /* truncated */
    assert_false(utf8("\xe2\x28\xa1", 3)); /* bad continuation */
    assert_false(utf8("0123456789abcde\xc3", 16));
    /* every position of a bad byte inside an ASCII run */
    char buf[40];
    for (size_t i = 0; i < sizeof(buf); i++) {
        memset(buf, 'x', sizeof(buf));
        buf[i] = '\x80';
        assert_false(utf8(buf, sizeof(buf)));
        buf[i] = 0;
        assert_false(utf8(buf, sizeof(buf)));
        buf[i] = 'y';
        assert_true(utf8(buf, sizeof(buf)));
    }
}

/* ---- round trips ---- */

static const uint8_t versions[] = {CODEC_V31, CODEC_V311, CODEC_V5};

static void props_sample(struct codec_props *p, uint64_t mask)
{
    static const uint8_t user[] = {0x26, 0, 1, 'k', 0, 2, 'v', '1', 0x26, 0, 1, 'k', 0, 0};
    memset(p, 0, sizeof(*p));
    p->has = mask;
    p->message_expiry = 3600;
    p->session_expiry = 0xffffffff;
    p->will_delay = 7;
    p->max_packet_size = 1 << 20;
    p->sub_id = 268435455;
    p->server_keepalive = 30;
    p->receive_max = 10;
    p->topic_alias_max = 5;
    p->topic_alias = 3;
    p->payload_format = 1;
    p->request_problem_info = 0;
    p->request_response_info = 1;
    p->max_qos = 1;
    p->retain_available = 1;
    p->wildcard_sub_available = 0;
    p->sub_id_available = 1;
    p->shared_sub_available = 1;
    p->content_type = str_of("text/plain");
    p->response_topic = str_of("re/ply");
    p->correlation_data = (struct codec_str){(const uint8_t *)"\0\1\2", 3};
    p->assigned_client_id = str_of("auto-1");
    p->auth_method = str_of("SCRAM-SHA-1");
    p->auth_data = (struct codec_str){(const uint8_t *)"\xff\x00", 2};
    p->response_info = str_of("info");
    p->server_reference = str_of("other:1883");
    p->reason_string = str_of("because");
    p->user_props = (struct codec_str){user, sizeof(user)};
}

static void assert_props_equal(const struct codec_props *a, const struct codec_props *b)
{
    assert_int_equal(a->has, b->has);
#define SC(f, id)                                                                                  \
    if (CODEC_HAS(a, CODEC_PROP_##id))                                                             \
    assert_int_equal(a->f, b->f)
    SC(message_expiry, MESSAGE_EXPIRY);
    SC(session_expiry, SESSION_EXPIRY);
    SC(will_delay, WILL_DELAY);
    SC(max_packet_size, MAX_PACKET_SIZE);
    SC(server_keepalive, SERVER_KEEPALIVE);
    SC(receive_max, RECEIVE_MAX);
    SC(topic_alias_max, TOPIC_ALIAS_MAX);
    SC(topic_alias, TOPIC_ALIAS);
    SC(payload_format, PAYLOAD_FORMAT);
    SC(request_problem_info, REQUEST_PROBLEM_INFO);
    SC(request_response_info, REQUEST_RESPONSE_INFO);
    SC(max_qos, MAX_QOS);
    SC(retain_available, RETAIN_AVAILABLE);
    SC(wildcard_sub_available, WILDCARD_SUB_AVAILABLE);
    SC(sub_id_available, SUB_ID_AVAILABLE);
    SC(shared_sub_available, SHARED_SUB_AVAILABLE);
    SC(sub_id, SUBSCRIPTION_ID);
#undef SC
#define ST(f, id)                                                                                  \
    if (CODEC_HAS(a, id)) {                                                                        \
        assert_int_equal(a->f.len, b->f.len);                                                      \
        assert_memory_equal(a->f.p, b->f.p, a->f.len);                                             \
    }
    ST(content_type, CODEC_PROP_CONTENT_TYPE);
    ST(response_topic, CODEC_PROP_RESPONSE_TOPIC);
    ST(correlation_data, CODEC_PROP_CORRELATION_DATA);
    ST(assigned_client_id, CODEC_PROP_ASSIGNED_CLIENT_ID);
    ST(auth_method, CODEC_PROP_AUTH_METHOD);
    ST(auth_data, CODEC_PROP_AUTH_DATA);
    ST(response_info, CODEC_PROP_RESPONSE_INFO);
    ST(server_reference, CODEC_PROP_SERVER_REFERENCE);
    ST(reason_string, CODEC_PROP_REASON_STRING);
    ST(user_props, CODEC_PROP_USER_PROPERTY);
#undef ST
}

static void check_zero_props(const struct codec_props *p)
{
    static const struct codec_props zero;
    assert_memory_equal(p, &zero, sizeof(zero));
}

static void test_roundtrip_connect(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        for (int variant = 0; variant < 3; variant++) {
            struct codec_packet p = {.type = CODEC_CONNECT}, d;
            struct codec_connect *c = &p.u.connect;
            uint8_t *buf;
            c->version = v;
            c->clean_start = variant != 1;
            c->keepalive = (uint16_t)(60 * variant);
            c->client_id = str_of(variant == 2 ? "" : "client-\xc3\xa9");
            c->has_will = variant >= 1;
            c->will_qos = (uint8_t)variant;
            c->will_retain = variant == 2;
            c->will_topic = str_of("will/topic");
            c->will_payload = (struct codec_str){(const uint8_t *)"bye\0", 4};
            c->has_username = variant != 1;
            c->username = str_of("user");
            c->has_password = variant != 1;
            c->password = (struct codec_str){(const uint8_t *)"\x00pw", 3};
            if (v == CODEC_V5) {
                props_sample(&p.props, codec__props_mask(CODEC_CONNECT));
                props_sample(&c->will_props, codec__props_mask(CODEC__KIND_WILL));
            }
            roundtrip(0, true, &p, &d, &buf);
            assert_int_equal(d.type, CODEC_CONNECT);
            assert_int_equal(d.flags, 0);
            const struct codec_connect *e = &d.u.connect;
            assert_int_equal(e->version, v);
            assert_int_equal(e->clean_start, c->clean_start);
            assert_int_equal(e->keepalive, c->keepalive);
            assert_int_equal(e->client_id.len, c->client_id.len);
            assert_memory_equal(e->client_id.p, c->client_id.p, c->client_id.len);
            assert_int_equal(e->has_will, c->has_will);
            assert_int_equal(e->has_username, c->has_username);
            assert_int_equal(e->has_password, c->has_password);
            if (c->has_will) {
                assert_int_equal(e->will_qos, c->will_qos);
                assert_int_equal(e->will_retain, c->will_retain);
                assert_str(e->will_topic, "will/topic");
                assert_int_equal(e->will_payload.len, 4);
                assert_memory_equal(e->will_payload.p, "bye\0", 4);
                assert_props_equal(&c->will_props, &e->will_props);
            } else {
                assert_int_equal(e->will_qos, 0);
                assert_false(e->will_retain);
                assert_null(e->will_topic.p);
            }
            if (c->has_username) {
                assert_str(e->username, "user");
                assert_int_equal(e->password.len, 3);
                assert_memory_equal(e->password.p, "\x00pw", 3);
            }
            if (v == CODEC_V5)
                assert_props_equal(&p.props, &d.props);
            else
                check_zero_props(&d.props);
            free(buf);
        }
    }
}

static void test_roundtrip_connack(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        struct codec_packet p = {.type = CODEC_CONNACK}, d;
        uint8_t *buf;
        p.u.connack.session_present = true;
        if (v == CODEC_V5)
            props_sample(&p.props, codec__props_mask(CODEC_CONNACK));
        size_t n = roundtrip(v, false, &p, &d, &buf);
        assert_true(d.u.connack.session_present);
        assert_int_equal(d.u.connack.reason, 0);
        assert_props_equal(&p.props, &d.props);
        if (v != CODEC_V5)
            assert_int_equal(n, 4);
        free(buf);
        p.u.connack.session_present = false;
        p.u.connack.reason = v == CODEC_V5 ? 0x87 : 5;
        roundtrip(v, false, &p, &d, &buf);
        assert_false(d.u.connack.session_present);
        assert_int_equal(d.u.connack.reason, p.u.connack.reason);
        free(buf);
    }
}

static void test_roundtrip_publish(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        for (uint8_t qos = 0; qos < 3; qos++) {
            for (int srv = 0; srv < 2; srv++) {
                uint8_t v = versions[vi];
                struct codec_packet p = {.type = CODEC_PUBLISH}, d;
                uint8_t *buf;
                static const uint32_t ids[] = {1, 200, 268435455};
                p.u.publish.qos = qos;
                p.u.publish.dup = qos > 0;
                p.u.publish.retain = qos != 1;
                p.u.publish.packet_id = qos ? (uint16_t)(0xfff0 + qos) : 0;
                p.u.publish.topic = str_of("a/b/\xe2\x82\xac/long-enough-for-the-word-loop");
                p.u.publish.payload = (struct codec_str){(const uint8_t *)"\0\1payload", 9};
                if (v == CODEC_V5) {
                    props_sample(&p.props, codec__props_mask(CODEC_PUBLISH));
                    if (srv)
                        p.props.has &= ~CODEC_BIT(CODEC_PROP_SUBSCRIPTION_ID);
                    p.props.sub_ids = ids;
                    p.props.n_sub_ids = 3;
                }
                size_t n = roundtrip(v, srv, &p, &d, &buf);
                const struct codec_publish *m = &d.u.publish;
                assert_int_equal(m->qos, qos);
                assert_int_equal(m->dup, qos > 0);
                assert_int_equal(m->retain, qos != 1);
                assert_int_equal(m->packet_id, p.u.publish.packet_id);
                assert_int_equal(m->topic.len, p.u.publish.topic.len);
                assert_memory_equal(m->topic.p, p.u.publish.topic.p, m->topic.len);
                assert_int_equal(m->payload.len, 9);
                assert_memory_equal(m->payload.p, "\0\1payload", 9);
                if (v == CODEC_V5 && !srv) {
                    assert_int_equal(d.props.sub_id, 1); /* the first of several */
                    p.props.sub_id = 1;
                }
                assert_props_equal(&p.props, &d.props);
                /* head + payload == whole packet, byte for byte */
                uint8_t *full = malloc(n), *head = malloc(n);
                assert_non_null(full);
                assert_non_null(head);
                codec_write(full, v, &p);
                size_t hn = codec_publish_head_size(v, &p);
                assert_int_equal(hn + 9, n);
                assert_int_equal(codec_publish_head_write(head, v, &p), hn);
                assert_memory_equal(head, full, hn);
                free(full);
                free(head);
                free(buf);
            }
        }
    }
}

static void test_roundtrip_acks(void **state)
{
    (void)state;
    static const uint8_t types[] = {CODEC_PUBACK, CODEC_PUBREC, CODEC_PUBREL, CODEC_PUBCOMP};
    for (size_t vi = 0; vi < 3; vi++) {
        for (size_t ti = 0; ti < 4; ti++) {
            for (int form = 0; form < 3; form++) {
                for (int srv = 0; srv < 2; srv++) {
                    uint8_t v = versions[vi];
                    struct codec_packet p = {.type = types[ti]}, d;
                    uint8_t *buf;
                    p.u.ack.packet_id = 0x1234;
                    if (v == CODEC_V5 && form >= 1)
                        p.u.ack.reason =
                            types[ti] == CODEC_PUBREL || types[ti] == CODEC_PUBCOMP ? 0x92 : 0x10;
                    if (v == CODEC_V5 && form == 2)
                        props_sample(&p.props, codec__props_mask(types[ti]));
                    size_t n = roundtrip(v, srv, &p, &d, &buf);
                    assert_int_equal(d.type, types[ti]);
                    assert_int_equal(d.flags, types[ti] == CODEC_PUBREL ? 2 : 0);
                    assert_int_equal(d.u.ack.packet_id, 0x1234);
                    assert_int_equal(d.u.ack.reason, p.u.ack.reason);
                    assert_props_equal(&p.props, &d.props);
                    if (v != CODEC_V5 || form == 0)
                        assert_int_equal(n, 4); /* optional parts left out */
                    else if (form == 1)
                        assert_int_equal(n, 5);
                    free(buf);
                }
            }
        }
    }
}

static void test_roundtrip_subscribe(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        struct codec_sub_entry list[3] = {
            {.filter = str_of("a/+/c"), .qos = 0},
            {.filter = str_of("#"), .qos = 1, .no_local = true, .retain_handling = 2},
            {.filter = str_of("$share/g/x"),
             .qos = 2,
             .retain_as_published = true,
             .retain_handling = 1},
        };
        struct codec_packet p = {.type = CODEC_SUBSCRIBE}, d, d2;
        uint8_t *buf, *buf2;
        p.u.subscribe.packet_id = 7;
        p.u.subscribe.list = list;
        p.u.subscribe.count = 3;
        if (v == CODEC_V5) {
            props_sample(&p.props, codec__props_mask(CODEC_SUBSCRIBE));
            p.props.sub_id = 99;
        }
        roundtrip(v, true, &p, &d, &buf);
        assert_int_equal(d.flags, 2);
        assert_int_equal(d.u.subscribe.packet_id, 7);
        assert_int_equal(d.u.subscribe.count, 3);
        assert_props_equal(&p.props, &d.props);
        size_t pos = 0, i = 0;
        struct codec_sub_entry e;
        while (codec_sub_next(&d.u.subscribe, v, &pos, &e)) {
            assert_true(i < 3);
            assert_int_equal(e.filter.len, list[i].filter.len);
            assert_memory_equal(e.filter.p, list[i].filter.p, e.filter.len);
            assert_int_equal(e.qos, list[i].qos);
            assert_int_equal(e.no_local, v == CODEC_V5 && list[i].no_local);
            assert_int_equal(e.retain_as_published, v == CODEC_V5 && list[i].retain_as_published);
            assert_int_equal(e.retain_handling, v == CODEC_V5 ? list[i].retain_handling : 0);
            i++;
        }
        assert_int_equal(i, 3);
        /* a decoded packet re-encodes from its raw payload */
        roundtrip(v, true, &d, &d2, &buf2);
        assert_int_equal(d2.u.subscribe.count, 3);
        assert_int_equal(d2.u.subscribe.raw.len, d.u.subscribe.raw.len);
        assert_memory_equal(d2.u.subscribe.raw.p, d.u.subscribe.raw.p, d.u.subscribe.raw.len);
        free(buf);
        free(buf2);
    }
}

static void test_roundtrip_unsubscribe(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        struct codec_str list[2] = {str_of("a/b"), str_of("x/#")};
        struct codec_packet p = {.type = CODEC_UNSUBSCRIBE}, d;
        uint8_t *buf;
        p.u.unsubscribe.packet_id = 65535;
        p.u.unsubscribe.list = list;
        p.u.unsubscribe.count = 2;
        if (v == CODEC_V5)
            props_sample(&p.props, codec__props_mask(CODEC_UNSUBSCRIBE));
        roundtrip(v, true, &p, &d, &buf);
        assert_int_equal(d.flags, 2);
        assert_int_equal(d.u.unsubscribe.packet_id, 65535);
        assert_int_equal(d.u.unsubscribe.count, 2);
        assert_props_equal(&p.props, &d.props);
        size_t pos = 0;
        struct codec_str f;
        assert_true(codec_unsub_next(&d.u.unsubscribe, &pos, &f));
        assert_str(f, "a/b");
        assert_true(codec_unsub_next(&d.u.unsubscribe, &pos, &f));
        assert_str(f, "x/#");
        assert_false(codec_unsub_next(&d.u.unsubscribe, &pos, &f));
        free(buf);
    }
}

static void test_roundtrip_suback_unsuback(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        static const uint8_t rc3[] = {0, 1, 2, 0x80};
        static const uint8_t rc5[] = {0, 1, 2, 0x80, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2};
        static const uint8_t urc5[] = {0, 0x11, 0x80, 0x8f};
        struct codec_packet p = {.type = CODEC_SUBACK}, d;
        uint8_t *buf;
        p.u.suback.packet_id = 9;
        p.u.suback.reasons = v == CODEC_V5 ? rc5 : rc3;
        p.u.suback.count = v == CODEC_V5 ? sizeof(rc5) : sizeof(rc3);
        if (v == CODEC_V5)
            props_sample(&p.props, codec__props_mask(CODEC_SUBACK));
        roundtrip(v, false, &p, &d, &buf);
        assert_int_equal(d.u.suback.packet_id, 9);
        assert_int_equal(d.u.suback.count, p.u.suback.count);
        assert_memory_equal(d.u.suback.reasons, p.u.suback.reasons, p.u.suback.count);
        assert_props_equal(&p.props, &d.props);
        free(buf);

        p.type = CODEC_UNSUBACK;
        p.u.suback.reasons = urc5;
        p.u.suback.count = sizeof(urc5);
        size_t n = roundtrip(v, false, &p, &d, &buf);
        assert_int_equal(d.type, CODEC_UNSUBACK);
        assert_int_equal(d.u.suback.packet_id, 9);
        if (v == CODEC_V5) {
            assert_int_equal(d.u.suback.count, sizeof(urc5));
            assert_memory_equal(d.u.suback.reasons, urc5, sizeof(urc5));
        } else {
            assert_int_equal(n, 4);
            assert_int_equal(d.u.suback.count, 0);
        }
        free(buf);
    }
}

static void test_roundtrip_ping_disconnect_auth(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < 3; vi++) {
        uint8_t v = versions[vi];
        struct codec_packet p = {.type = CODEC_PINGREQ}, d;
        uint8_t *buf;
        assert_int_equal(roundtrip(v, true, &p, &d, &buf), 2);
        assert_int_equal(d.type, CODEC_PINGREQ);
        free(buf);
        p.type = CODEC_PINGRESP;
        assert_int_equal(roundtrip(v, false, &p, &d, &buf), 2);
        assert_int_equal(d.type, CODEC_PINGRESP);
        free(buf);
        p.type = CODEC_DISCONNECT;
        assert_int_equal(roundtrip(v, true, &p, &d, &buf), 2);
        assert_int_equal(d.u.disconnect.reason, 0);
        free(buf);
        if (v != CODEC_V5) {
            p.type = CODEC_AUTH;
            assert_int_equal(codec_size(v, &p), 0);
            continue;
        }
        for (int srv = 0; srv < 2; srv++) {
            p.type = CODEC_DISCONNECT;
            p.u.disconnect.reason = 0x8e;
            assert_int_equal(roundtrip(v, srv, &p, &d, &buf), 3);
            assert_int_equal(d.u.disconnect.reason, 0x8e);
            free(buf);
            props_sample(&p.props, codec__props_mask(CODEC_DISCONNECT));
            if (!srv)
                p.props.has &= ~CODEC_BIT(CODEC_PROP_SESSION_EXPIRY);
            roundtrip(v, srv, &p, &d, &buf);
            assert_int_equal(d.u.disconnect.reason, 0x8e);
            assert_props_equal(&p.props, &d.props);
            free(buf);
            memset(&p.props, 0, sizeof(p.props));

            p.type = CODEC_AUTH;
            p.u.disconnect.reason = 0;
            assert_int_equal(roundtrip(v, srv, &p, &d, &buf), 2);
            assert_int_equal(d.type, CODEC_AUTH);
            free(buf);
            p.u.disconnect.reason = 0x18;
            props_sample(&p.props, codec__props_mask(CODEC_AUTH));
            roundtrip(v, srv, &p, &d, &buf);
            assert_int_equal(d.u.disconnect.reason, 0x18);
            assert_props_equal(&p.props, &d.props);
            free(buf);
            memset(&p.props, 0, sizeof(p.props));
            p.u.disconnect.reason = 0;
        }
    }
}

/* ---- byte-exact packets ---- */

/* mosquitto_pub -i mosq-abcdef -t t -m hi (MQTT 3.1.1, keepalive 60, clean session) */
static const uint8_t mosq_connect_v4[] = {0x10, 0x17, 0x00, 0x04, 'M',  'Q', 'T', 'T', 0x04,
                                          0x02, 0x00, 0x3c, 0x00, 0x0b, 'm', 'o', 's', 'q',
                                          '-',  'a',  'b',  'c',  'd',  'e', 'f'};

static void test_exact_mosquitto_connect(void **state)
{
    struct codec_packet p;
    (void)state;
    assert_int_equal(decode_copy(mosq_connect_v4, sizeof(mosq_connect_v4), 0, true, 0, &p, NULL),
                     sizeof(mosq_connect_v4));
    /* rebuild from fields and compare bytes */
    struct codec_packet q = {.type = CODEC_CONNECT};
    q.u.connect.version = CODEC_V311;
    q.u.connect.clean_start = true;
    q.u.connect.keepalive = 60;
    q.u.connect.client_id = str_of("mosq-abcdef");
    uint8_t out[64];
    assert_int_equal(codec_size(0, &q), sizeof(mosq_connect_v4));
    assert_int_equal(codec_write(out, 0, &q), sizeof(mosq_connect_v4));
    assert_memory_equal(out, mosq_connect_v4, sizeof(mosq_connect_v4));
    assert_int_equal(codec_write(out, CODEC_V311, &q), sizeof(mosq_connect_v4));
    assert_memory_equal(out, mosq_connect_v4, sizeof(mosq_connect_v4));
}

static void test_exact_v5_connect_with_props(void **state)
{
    /* MQTT 5 CONNECT: session expiry 120, receive max 20, user u=v, will with delay 5,
     * username/password. */
    static const uint8_t pkt[] = {
        0x10, 0x37, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05, 0xee, 0x00, 0x0a, /* flags: u p wr q1
                                                                                   w c */
        0x0f, 0x11, 0x00, 0x00, 0x00, 0x78, 0x21, 0x00, 0x14, 0x26, 0x00, 0x01, 'u',
        0x00, 0x01, 'v',  0x00, 0x02, 'c',  '1',                    /* client id */
        0x05, 0x18, 0x00, 0x00, 0x00, 0x05,                         /* will props */
        0x00, 0x03, 'w',  '/',  't',  0x00, 0x02, 'g',  'o',        /* will topic, payload */
        0x00, 0x04, 'u',  's',  'e',  'r',  0x00, 0x02, 'p',  'w'}; /* username, password */
    struct codec_packet p;
    uint8_t *keep;
    (void)state;
    assert_int_equal(decode_copy(pkt, sizeof(pkt), 0, true, 0, &p, &keep), sizeof(pkt));
    const struct codec_connect *c = &p.u.connect;
    assert_int_equal(c->version, 5);
    assert_true(c->clean_start && c->has_will && c->will_retain && c->has_username &&
                c->has_password);
    assert_int_equal(c->will_qos, 1);
    assert_int_equal(c->keepalive, 10);
    assert_int_equal(p.props.has, CODEC_BIT(CODEC_PROP_SESSION_EXPIRY) |
                                      CODEC_BIT(CODEC_PROP_RECEIVE_MAX) |
                                      CODEC_BIT(CODEC_PROP_USER_PROPERTY));
    assert_int_equal(p.props.session_expiry, 120);
    assert_int_equal(p.props.receive_max, 20);
    size_t pos = 0;
    struct codec_str k, v;
    assert_true(codec_user_prop_next(&p.props.user_props, &pos, &k, &v));
    assert_str(k, "u");
    assert_str(v, "v");
    assert_false(codec_user_prop_next(&p.props.user_props, &pos, &k, &v));
    assert_int_equal(c->will_props.has, CODEC_BIT(CODEC_PROP_WILL_DELAY));
    assert_int_equal(c->will_props.will_delay, 5);
    assert_str(c->client_id, "c1");
    assert_str(c->will_topic, "w/t");
    assert_str(c->will_payload, "go");
    assert_str(c->username, "user");
    assert_str(c->password, "pw");
    /* re-encode: identical bytes (properties already in ascending order) */
    uint8_t out[sizeof(pkt)];
    assert_int_equal(codec_size(0, &p), sizeof(pkt));
    assert_int_equal(codec_write(out, 0, &p), sizeof(pkt));
    assert_memory_equal(out, pkt, sizeof(pkt));
    free(keep);
}

static void test_exact_small_packets(void **state)
{
    struct codec_packet p = {.type = CODEC_PUBACK};
    uint8_t out[16];
    (void)state;
    p.u.ack.packet_id = 1;
    assert_int_equal(codec_write(out, CODEC_V5, &p), 4);
    assert_memory_equal(out, "\x40\x02\x00\x01", 4);
    p.u.ack.reason = 0x10;
    assert_int_equal(codec_write(out, CODEC_V5, &p), 5);
    assert_memory_equal(out, "\x40\x03\x00\x01\x10", 5);
    assert_int_equal(codec_write(out, CODEC_V311, &p), 4); /* no reason in 3.1.1 */
    p.type = CODEC_PUBREL;
    p.u.ack.reason = 0;
    assert_int_equal(codec_write(out, CODEC_V311, &p), 4);
    assert_memory_equal(out, "\x62\x02\x00\x01", 4);
    p.type = CODEC_DISCONNECT;
    memset(&p.u, 0, sizeof(p.u));
    assert_int_equal(codec_write(out, CODEC_V5, &p), 2);
    assert_memory_equal(out, "\xe0\x00", 2);
    p.u.disconnect.reason = 0x04;
    assert_int_equal(codec_write(out, CODEC_V5, &p), 3);
    assert_memory_equal(out, "\xe0\x01\x04", 3);
    p.type = CODEC_PINGRESP;
    assert_int_equal(codec_write(out, CODEC_V311, &p), 2);
    assert_memory_equal(out, "\xd0\x00", 2);

    struct codec_packet c = {.type = CODEC_CONNACK};
    c.u.connack.session_present = true;
    assert_int_equal(codec_write(out, CODEC_V311, &c), 4);
    assert_memory_equal(out, "\x20\x02\x01\x00", 4);
    assert_int_equal(codec_write(out, CODEC_V5, &c), 5);
    assert_memory_equal(out, "\x20\x03\x01\x00\x00", 5);

    /* mosquitto_pub -q 1 -t t -m hi, v3.1.1 and v5 */
    struct codec_packet m = {.type = CODEC_PUBLISH};
    m.u.publish.qos = 1;
    m.u.publish.packet_id = 1;
    m.u.publish.topic = str_of("t");
    m.u.publish.payload = str_of("hi");
    assert_int_equal(codec_write(out, CODEC_V311, &m), 9);
    assert_memory_equal(out, "\x32\x07\x00\x01t\x00\x01hi", 9);
    assert_int_equal(codec_write(out, CODEC_V5, &m), 10);
    assert_memory_equal(out, "\x32\x08\x00\x01t\x00\x01\x00hi", 10);

    /* mosquitto_sub -t 'a/#' -q 2 -V 5 */
    struct codec_sub_entry e = {.filter = str_of("a/#"), .qos = 2};
    struct codec_packet s = {.type = CODEC_SUBSCRIBE};
    s.u.subscribe.packet_id = 1;
    s.u.subscribe.list = &e;
    s.u.subscribe.count = 1;
    assert_int_equal(codec_write(out, CODEC_V5, &s), 11);
    assert_memory_equal(out, "\x82\x09\x00\x01\x00\x00\x03\x61\x2f\x23\x02", 11);
}

static void test_exact_mqtt31_connect(void **state)
{
    static const uint8_t pkt[] = {0x10, 0x11, 0x00, 0x06, 'M',  'Q',  'I', 's', 'd', 'p',
                                  0x03, 0x02, 0x00, 0x3c, 0x00, 0x03, 'a', 'b', 'c'};
    struct codec_packet p;
    (void)state;
    assert_int_equal(decode_copy(pkt, sizeof(pkt), 0, true, 0, &p, NULL), sizeof(pkt));
    assert_int_equal(p.u.connect.version, CODEC_V31);
    uint8_t out[sizeof(pkt)];
    p.u.connect.client_id = str_of("abc");
    assert_int_equal(codec_write(out, 0, &p), sizeof(pkt));
    assert_memory_equal(out, pkt, sizeof(pkt));
    /* 3.1 retransmissions may set DUP on SUBSCRIBE */
    CHECK(OK, CODEC_V31, true, 0x8a, 0x00, 0x01, 0x00, 0x01, 'a', 0x00);
    CHECK(ERR_MALFORMED, CODEC_V311, true, 0x8a, 0x00, 0x01, 0x00, 0x01, 'a', 0x00);
}

/* ---- malformed input, one class per test ---- */

static void test_reserved_flags(void **state)
{
    (void)state;
    CHECK(ERR_MALFORMED, 4, true, 0x41, 0x00, 0x01); /* PUBACK */
    CHECK(ERR_MALFORMED, 4, true, 0x60, 0x00, 0x01); /* PUBREL needs 2 */
    CHECK(OK, 4, true, 0x62, 0x00, 0x01);
    CHECK(ERR_MALFORMED, 4, true, 0x80, 0x00, 0x01, 0x00, 0x01, 'a', 0);    /* SUBSCRIBE */
    CHECK(ERR_MALFORMED, 5, true, 0xa0, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'); /* UNSUBSCRIBE */
    CHECK(ERR_MALFORMED, 4, true, 0xc1);                                    /* PINGREQ */
    CHECK(ERR_MALFORMED, 5, true, 0xe8);                                    /* DISCONNECT */
    CHECK(ERR_MALFORMED, 4, false, 0x22, 0x00, 0x00);                       /* CONNACK */
    CHECK(ERR_MALFORMED, 0, true, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0);
    CHECK(ERR_MALFORMED, 4, true, 0x00); /* type 0 */
    CHECK(ERR_MALFORMED, 4, false, 0x21, 0x00, 0x00);
}

static void test_qos3_and_dup(void **state)
{
    (void)state;
    CHECK(ERR_MALFORMED, 4, true, 0x36, 0x00, 0x01, 'a', 0x00, 0x01);
    CHECK(ERR_MALFORMED, 5, true, 0x36, 0x00, 0x01, 'a', 0x00, 0x01, 0x00);
    CHECK(ERR_MALFORMED, 5, true, 0x38, 0x00, 0x01, 'a', 0x00); /* QoS 0 + DUP in 5.0 */
    CHECK(ERR_PROTOCOL, 4, true, 0x38, 0x00, 0x01, 'a');
    CHECK(OK, 4, true, 0x3b, 0x00, 0x01, 'a', 0x00, 0x01); /* QoS 1 + DUP + retain */
}

static void test_packet_id_zero(void **state)
{
    (void)state;
    CHECK(ERR_PROTOCOL, 4, true, 0x32, 0x00, 0x01, 'a', 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 5, true, 0x34, 0x00, 0x01, 'a', 0x00, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0x40, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 5, false, 0x50, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0x62, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0x70, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0x82, 0x00, 0x00, 0x00, 0x01, 'a', 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0xa2, 0x00, 0x00, 0x00, 0x01, 'a');
    CHECK(ERR_PROTOCOL, 4, false, 0x90, 0x00, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 4, false, 0xb0, 0x00, 0x00);
    CHECK(OK, 4, true, 0x30, 0x00, 0x01, 'a'); /* QoS 0 has none */
}

static void test_publish_topic(void **state)
{
    (void)state;
    CHECK(ERR_TOPIC_NAME, 4, true, 0x30, 0x00, 0x03, 'a', '/', '+');
    CHECK(ERR_TOPIC_NAME, 4, true, 0x30, 0x00, 0x01, '#');
    CHECK(ERR_TOPIC_NAME, 5, false, 0x30, 0x00, 0x0a, 's', 'p', 'o', 'r', 't', '/', 't', 'e', 'n',
          '#', 0x00);
    CHECK(ERR_TOPIC_NAME, 4, true, 0x30, 0x00, 0x00, 'x'); /* empty before 5.0 */
    CHECK(ERR_TOPIC_NAME, 3, true, 0x30, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 5, true, 0x30, 0x00, 0x00, 0x00);         /* empty without alias */
    CHECK(OK, 5, true, 0x30, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01); /* empty with alias */
    CHECK(ERR_MALFORMED, 4, true, 0x30, 0x00, 0x02, 0xc3, 0x28);  /* bad UTF-8 */
    CHECK(ERR_MALFORMED, 4, true, 0x30, 0x00, 0x02, 'a', 0x00);   /* U+0000 */
    CHECK(ERR_MALFORMED, 4, true, 0x30, 0x00, 0x0b, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 0xed,
          0xa0, 0x80); /* surrogate after the word loop */
    CHECK(OK, 4, true, 0x30, 0x00, 0x0b, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 0xe2, 0x82, 0xac);
}

/* The word-at-a-time topic check: a bad byte at every position of every length. */
static void test_publish_topic_every_position(void **state)
{
    static const uint8_t bad[] = {'+', '#', 0x00, 0x80, 0xff};
    static const int want[] = {ERR_TOPIC_NAME, ERR_TOPIC_NAME, ERR_MALFORMED, ERR_MALFORMED,
                               ERR_MALFORMED};
    uint8_t body[64];
    (void)state;
    for (size_t len = 1; len <= 40; len++) {
        body[0] = 0;
        body[1] = (uint8_t)len;
        memset(body + 2, 'a', len);
        expect(OK, decode_body(0x30, body, 2 + len, CODEC_V311, true));
        for (size_t at = 0; at < len; at++) {
            for (size_t b = 0; b < sizeof(bad); b++) {
                memset(body + 2, 'a', len);
                body[2 + at] = bad[b];
                expect(want[b], decode_body(0x30, body, 2 + len, CODEC_V311, true));
            }
        }
    }
}

static void test_invalid_utf8_fields(void **state)
{
    (void)state;
    /* client id */
    CHECK(ERR_MALFORMED, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0x00, 0x02,
          0xc0, 0x80);
    /* username */
    CHECK(ERR_MALFORMED, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0x82, 0, 0, 0x00, 0x01,
          'c', 0x00, 0x01, 0xff);
    /* will topic */
    CHECK(ERR_MALFORMED, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 0, 0x00, 0x01,
          'c', 0x00, 0x01, 0x80, 0x00, 0x00);
    /* subscribe filter, unsubscribe filter */
    CHECK(ERR_MALFORMED, 4, true, 0x82, 0x00, 0x01, 0x00, 0x01, 0xfe, 0x00);
    CHECK(ERR_MALFORMED, 4, true, 0xa2, 0x00, 0x01, 0x00, 0x01, 0x00);
    /* property string: content type */
    CHECK(ERR_MALFORMED, 5, true, 0x30, 0x00, 0x01, 't', 0x04, 0x03, 0x00, 0x01, 0xc1);
    /* reason string */
    CHECK(ERR_MALFORMED, 5, true, 0x40, 0x00, 0x01, 0x00, 0x04, 0x1f, 0x00, 0x01, 0x00);
    /* user property key, then value */
    CHECK(ERR_MALFORMED, 5, true, 0x30, 0x00, 0x01, 't', 0x07, 0x26, 0x00, 0x01, 0xed, 0x00, 0x01,
          'v');
    CHECK(ERR_MALFORMED, 5, true, 0x30, 0x00, 0x01, 't', 0x09, 0x26, 0x00, 0x01, 'k', 0x00, 0x03,
          0xf4, 0x90, 0x80);
    CHECK(OK, 5, true, 0x30, 0x00, 0x01, 't', 0x08, 0x26, 0x00, 0x01, 'k', 0x00, 0x02, 0xc3, 0xa9);
}

static void test_wildcard_will_and_response_topic(void **state)
{
    (void)state;
    CHECK(ERR_TOPIC_NAME, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 0, 0x00, 0x01,
          'c', 0x00, 0x01, '#', 0x00, 0x00);
    CHECK(ERR_TOPIC_NAME, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 0, 0x00, 0x01,
          'c', 0x00, 0x00, 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 5, true, 0x30, 0x00, 0x01, 't', 0x04, 0x08, 0x00, 0x01, '+');
}

static void check_pub_props(int want, bool srv, const uint8_t *props, size_t n)
{
    uint8_t body[300] = {0x00, 0x01, 't'};
    size_t at = 3;
    assert_true(n < 200);
    at = (size_t)(codec_varint_write(body + at, (uint32_t)n) - body);
    memcpy(body + at, props, n);
    expect(want, decode_body(0x30, body, at + n, CODEC_V5, srv));
}

#define PUBP(want, srv, ...)                                                                       \
    do {                                                                                           \
        static const uint8_t p_[] = {__VA_ARGS__};                                                 \
        check_pub_props(want, srv, p_, sizeof(p_));                                                \
    } while (0)

static void check_connect_props(int want, const uint8_t *props, size_t n)
{
    uint8_t body[300] = {0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 0x02, 0x00, 0x00};
    size_t at = (size_t)(codec_varint_write(body + 10, (uint32_t)n) - body);
    memcpy(body + at, props, n);
    at += n;
    body[at++] = 0;
    body[at++] = 1;
    body[at++] = 'c';
    expect(want, decode_body(0x10, body, at, 0, true));
}

#define CONP(want, ...)                                                                            \
    do {                                                                                           \
        static const uint8_t p_[] = {__VA_ARGS__};                                                 \
        check_connect_props(want, p_, sizeof(p_));                                                 \
    } while (0)

static void check_connack_props(int want, const uint8_t *props, size_t n)
{
    uint8_t body[300] = {0x00, 0x00};
    size_t at = (size_t)(codec_varint_write(body + 2, (uint32_t)n) - body);
    memcpy(body + at, props, n);
    expect(want, decode_body(0x20, body, at + n, CODEC_V5, false));
}

#define ACKP(want, ...)                                                                            \
    do {                                                                                           \
        static const uint8_t p_[] = {__VA_ARGS__};                                                 \
        check_connack_props(want, p_, sizeof(p_));                                                 \
    } while (0)

static void test_duplicate_property(void **state)
{
    (void)state;
    PUBP(ERR_PROTOCOL, true, 0x01, 0x00, 0x01, 0x01);
    PUBP(ERR_PROTOCOL, true, 0x02, 0, 0, 0, 1, 0x03, 0x00, 0x00, 0x02, 0, 0, 0, 1);
    PUBP(ERR_PROTOCOL, true, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02);
    PUBP(OK, true, 0x26, 0, 1, 'a', 0, 0, 0x26, 0, 1, 'a', 0, 0); /* user property repeats */
    /* subscription ids repeat only in a server's PUBLISH */
    PUBP(OK, false, 0x0b, 0x01, 0x0b, 0x02);
    PUBP(ERR_PROTOCOL, true, 0x0b, 0x01);
    CHECK(ERR_PROTOCOL, 5, true, 0x82, 0x00, 0x01, 0x04, 0x0b, 0x01, 0x0b, 0x02, 0x00, 0x01, 'a',
          0x00);
    CHECK(OK, 5, true, 0x82, 0x00, 0x01, 0x02, 0x0b, 0x01, 0x00, 0x01, 'a', 0x00);
    CONP(ERR_PROTOCOL, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1);
    CONP(ERR_PROTOCOL, 0x15, 0, 1, 'm', 0x15, 0, 1, 'm');
    ACKP(ERR_PROTOCOL, 0x12, 0, 1, 'a', 0x12, 0, 1, 'b');
}

static void test_property_not_allowed(void **state)
{
    (void)state;
    PUBP(ERR_PROTOCOL, true, 0x11, 0, 0, 0, 1); /* session expiry in PUBLISH */
    PUBP(ERR_PROTOCOL, false, 0x1f, 0, 0);      /* reason string in PUBLISH */
    PUBP(ERR_PROTOCOL, true, 0x18, 0, 0, 0, 1); /* will delay outside the will */
    CONP(ERR_PROTOCOL, 0x01, 0x01);             /* payload format in CONNECT */
    CONP(ERR_PROTOCOL, 0x24, 0x01);             /* max QoS in CONNECT */
    ACKP(ERR_PROTOCOL, 0x17, 0x01);             /* request problem info in CONNACK */
    CHECK(ERR_PROTOCOL, 5, true, 0x40, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01); /* PUBACK */
    CHECK(ERR_PROTOCOL, 5, true, 0xa2, 0x00, 0x01, 0x02, 0x0b, 0x01, 0x00, 0x01, 'a');
    /* a server's DISCONNECT carries no session expiry; a client's may */
    CHECK(ERR_PROTOCOL, 5, false, 0xe0, 0x00, 0x05, 0x11, 0, 0, 0, 1);
    CHECK(OK, 5, true, 0xe0, 0x00, 0x05, 0x11, 0, 0, 0, 1);
    CHECK(ERR_PROTOCOL, 5, true, 0xf0, 0x00, 0x02, 0x01, 0x01); /* AUTH */
    /* will properties: will delay yes, topic alias no */
    CHECK(OK, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0x00, 0x00, 0x01, 'c',
          0x05, 0x18, 0, 0, 0, 9, 0x00, 0x01, 't', 0x00, 0x00);
    CHECK(ERR_PROTOCOL, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0x00, 0x00,
          0x01, 'c', 0x03, 0x23, 0, 9, 0x00, 0x01, 't', 0x00, 0x00);
    /* unknown identifiers are malformed */
    PUBP(ERR_MALFORMED, true, 0x04, 0x00);
    PUBP(ERR_MALFORMED, true, 0x80, 0x01);
    PUBP(ERR_MALFORMED, true, 0x2b, 0x00);
}

static void test_property_values(void **state)
{
    (void)state;
    PUBP(ERR_PROTOCOL, true, 0x01, 0x02); /* payload format 0/1 */
    PUBP(OK, true, 0x01, 0x01);
    PUBP(ERR_PROTOCOL, true, 0x23, 0x00, 0x00);                     /* topic alias 0 */
    PUBP(ERR_PROTOCOL, false, 0x0b, 0x00);                          /* sub id 0 */
    PUBP(ERR_MALFORMED, false, 0x0b, 0x80, 0x80, 0x80, 0x80, 0x01); /* sub id 5 bytes */
    PUBP(ERR_MALFORMED, false, 0x0b, 0x80, 0x00);                   /* not the shortest form */
    PUBP(OK, false, 0x0b, 0xff, 0xff, 0xff, 0x7f);                  /* 268435455 */
    CONP(ERR_PROTOCOL, 0x21, 0x00, 0x00);                           /* receive max 0 */
    CONP(ERR_PROTOCOL, 0x27, 0, 0, 0, 0);                           /* max packet size 0 */
    CONP(ERR_PROTOCOL, 0x17, 0x02);                                 /* request problem info */
    CONP(ERR_PROTOCOL, 0x19, 0x02);                                 /* request response info */
    CONP(OK, 0x17, 0x00, 0x19, 0x01, 0x21, 0xff, 0xff, 0x27, 0, 0, 0, 1, 0x22, 0, 0);
    ACKP(ERR_PROTOCOL, 0x24, 0x02); /* max QoS 0/1 */
    ACKP(ERR_PROTOCOL, 0x25, 0x02);
    ACKP(ERR_PROTOCOL, 0x28, 0x02);
    ACKP(ERR_PROTOCOL, 0x29, 0x02);
    ACKP(ERR_PROTOCOL, 0x2a, 0x02);
    ACKP(ERR_PROTOCOL, 0x21, 0x00, 0x00);
    ACKP(OK, 0x24, 0x00, 0x25, 0x01, 0x28, 0x00, 0x29, 0x01, 0x2a, 0x00, 0x13, 0x00, 0x00);
    /* truncated property values and blocks */
    PUBP(ERR_MALFORMED, true, 0x02, 0x00, 0x00);
    PUBP(ERR_MALFORMED, true, 0x03, 0x00, 0x05, 'a');
    PUBP(ERR_MALFORMED, true, 0x26, 0x00, 0x01, 'a');
    CHECK(ERR_MALFORMED, 5, true, 0x30, 0x00, 0x01, 't', 0x05, 0x01); /* block past the end */
}

static void test_property_order_and_user_run(void **state)
{
    /* user properties interleaved with another property */
    static const uint8_t props[] = {0x26, 0, 1,   'a', 0, 1,    '1', 0x01, 0x01, 0x26,
                                    0,    1, 'b', 0,   0, 0x02, 0,   0,    0,    9};
    uint8_t body[64] = {0x00, 0x01, 't', sizeof(props)};
    struct codec_packet p;
    uint8_t *keep;
    (void)state;
    memcpy(body + 4, props, sizeof(props));
    uint8_t pkt[80] = {0x30, (uint8_t)(4 + sizeof(props))};
    memcpy(pkt + 2, body, 4 + sizeof(props));
    size_t n = 6 + sizeof(props);
    assert_int_equal(decode_copy(pkt, n, 5, true, 0, &p, &keep), n);
    size_t pos = 0, count = 0;
    struct codec_str k, v;
    while (codec_user_prop_next(&p.props.user_props, &pos, &k, &v))
        count++;
    assert_int_equal(count, 2);
    /* re-encoded in ascending order, user properties contiguous */
    static const uint8_t want[] = {0x01, 0x01, 0x02, 0,   0,    0, 9, 0x26, 0, 1,
                                   'a',  0,    1,    '1', 0x26, 0, 1, 'b',  0, 0};
    uint64_t all = ~0ull;
    assert_int_equal(codec_props_size(&p.props, all), sizeof(want));
    uint8_t out[64];
    assert_int_equal(codec_props_write(out, &p.props, all) - out, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    /* a mask selects */
    uint64_t fwd = CODEC_PROPS_FORWARD;
    assert_int_equal(codec_props_size(&p.props, fwd), 2 + 13);
    assert_int_equal(codec_props_write(out, &p.props, fwd) - out, 15);
    assert_memory_equal(out, "\x01\x01", 2);
    assert_memory_equal(out + 2, want + 7, 13);
    free(keep);

    /* several subscription ids from sub_ids[] */
    static const uint32_t ids[] = {1, 128, 16384};
    struct codec_props q = {.has = CODEC_BIT(CODEC_PROP_SUBSCRIPTION_ID) |
                                   CODEC_BIT(CODEC_PROP_TOPIC_ALIAS),
                            .sub_ids = ids,
                            .n_sub_ids = 3,
                            .topic_alias = 2};
    static const uint8_t want2[] = {0x0b, 0x01, 0x0b, 0x80, 0x01, 0x0b,
                                    0x80, 0x80, 0x01, 0x23, 0x00, 0x02};
    assert_int_equal(codec_props_size(&q, all), sizeof(want2));
    assert_int_equal(codec_props_write(out, &q, all) - out, sizeof(want2));
    assert_memory_equal(out, want2, sizeof(want2));
}

static void test_bad_protocol_name_level(void **state)
{
    (void)state;
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'X', 4, 2, 0, 0, 0, 0);
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 6, 2, 0, 0, 0, 0);
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 3, 2, 0, 0, 0, 0);
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 4, 2, 0,
          0, 0, 0);
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x04, 'm', 'q', 't', 't', 4, 2, 0, 0, 0, 0);
    CHECK(ERR_UNSUPPORTED_VERSION, 0, true, 0x10, 0x00, 0x00, 4, 2, 0, 0, 0, 0);
    CHECK(OK, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0);
}

static void test_bad_connect_flags(void **state)
{
    (void)state;
#define CON4(want, flags, ...)                                                                     \
    CHECK(want, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, flags, 0, 0, 0x00, 0x01, 'c',    \
          __VA_ARGS__)
    CON4(ERR_MALFORMED, 0x03, 0x00);                        /* reserved bit */
    CON4(ERR_MALFORMED, 0x08, 0x00);                        /* will QoS without will */
    CON4(ERR_MALFORMED, 0x20, 0x00);                        /* will retain without will */
    CON4(ERR_MALFORMED, 0x1c, 0x00, 0x01, 't', 0x00, 0x00); /* will QoS 3 */
    CON4(OK, 0x34, 0x00, 0x01, 't', 0x00, 0x00);            /* will QoS 2 + retain */
    CON4(ERR_PROTOCOL, 0x40, 0x00, 0x00);                   /* password without username */
    CON4(OK, 0xc0, 0x00, 0x01, 'u', 0x00, 0x00);
#undef CON4
    /* 5.0 allows a password without a user name */
    CHECK(OK, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 0x40, 0, 0, 0x00, 0x00, 0x01, 'c',
          0x00, 0x02, 'p', 'w');
    CHECK(ERR_PROTOCOL, 0, true, 0x10, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x40, 0, 0,
          0x00, 0x01, 'c', 0x00, 0x00);
}

static void test_subscribe_options(void **state)
{
    (void)state;
#define SUB(want, v, opt)                                                                          \
    do {                                                                                           \
        if ((v) == 5)                                                                              \
            CHECK(want, 5, true, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', opt);                    \
        else                                                                                       \
            CHECK(want, v, true, 0x82, 0x00, 0x01, 0x00, 0x01, 'a', opt);                          \
    } while (0)
    SUB(ERR_MALFORMED, 4, 0x04); /* no-local bit is reserved in 3.1.1 */
    SUB(ERR_MALFORMED, 4, 0x80);
    SUB(ERR_MALFORMED, 4, 0x03); /* QoS 3 */
    SUB(ERR_MALFORMED, 5, 0x03);
    SUB(ERR_MALFORMED, 5, 0x40);
    SUB(ERR_MALFORMED, 5, 0x80);
    SUB(ERR_PROTOCOL, 5, 0x30); /* retain handling 3 */
    SUB(OK, 5, 0x2e);
    SUB(OK, 4, 0x02);
#undef SUB
    /* empty payloads */
    CHECK(ERR_PROTOCOL, 4, true, 0x82, 0x00, 0x01);
    CHECK(ERR_PROTOCOL, 5, true, 0x82, 0x00, 0x01, 0x00);
    CHECK(ERR_PROTOCOL, 4, true, 0xa2, 0x00, 0x01);
    CHECK(ERR_PROTOCOL, 5, true, 0xa2, 0x00, 0x01, 0x00);
    CHECK(ERR_MALFORMED, 4, true, 0x82, 0x00, 0x01, 0x00, 0x01, 'a'); /* options missing */
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    CHECK(ERR_MALFORMED, 4, true, 0x40, 0x00, 0x01, 0x00);
    CHECK(ERR_MALFORMED, 5, true, 0x40, 0x00, 0x01, 0x00, 0x00, 0x00);
    CHECK(ERR_MALFORMED, 4, true, 0xc0, 0x00);
    CHECK(ERR_MALFORMED, 4, false, 0xd0, 0x00);
    CHECK(ERR_MALFORMED, 4, true, 0xe0, 0x00);
    CHECK(ERR_MALFORMED, 4, false, 0x20, 0x00, 0x00, 0x00);
    CHECK(ERR_MALFORMED, 4, false, 0xb0, 0x00, 0x01, 0x00);
    CHECK(ERR_MALFORMED, 0, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0, 'x');
    CHECK(ERR_MALFORMED, 5, true, 0xe0, 0x00, 0x00, 0x00);
}

static void test_reason_codes(void **state)
{
    (void)state;
    CHECK(ERR_PROTOCOL, 5, true, 0x40, 0x00, 0x01, 0x92); /* PUBACK may not say "not found" */
    CHECK(OK, 5, true, 0x62, 0x00, 0x01, 0x92);
    CHECK(ERR_PROTOCOL, 5, true, 0xe0, 0x01);
    CHECK(ERR_PROTOCOL, 5, true, 0xf0, 0x04);
    CHECK(OK, 5, true, 0xf0, 0x19);
    CHECK(ERR_PROTOCOL, 4, false, 0x20, 0x00, 0x06); /* 3.1.1 return codes 0..5 */
    CHECK(ERR_PROTOCOL, 4, false, 0x20, 0x01, 0x05); /* session present with an error */
    CHECK(ERR_PROTOCOL, 4, false, 0x90, 0x00, 0x01, 0x03);
    CHECK(ERR_PROTOCOL, 4, false, 0x90, 0x00, 0x01, 0x87); /* 5.0 code in 3.1.1 */
    CHECK(OK, 4, false, 0x90, 0x00, 0x01, 0x80);
    CHECK(ERR_PROTOCOL, 5, false, 0x90, 0x00, 0x01, 0x00, 0x11);
    CHECK(ERR_PROTOCOL, 5, false, 0x90, 0x00, 0x01, 0x00); /* no reason codes */
    CHECK(ERR_MALFORMED, 5, false, 0x20, 0x00, 0x00);      /* CONNACK needs its properties */
}

static void test_direction_and_version(void **state)
{
    (void)state;
    CHECK(ERR_PROTOCOL, 0, true, 0x30, 0x00, 0x01, 'a'); /* nothing before CONNECT */
    CHECK(ERR_PROTOCOL, 0, true, 0xc0);
    CHECK(ERR_PROTOCOL, 0, false, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0);
    CHECK(ERR_PROTOCOL, 4, true, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0);
    CHECK(ERR_PROTOCOL, 4, true, 0x20, 0x00, 0x00);       /* CONNACK to a server */
    CHECK(ERR_PROTOCOL, 4, true, 0x90, 0x00, 0x01, 0x00); /* SUBACK to a server */
    CHECK(ERR_PROTOCOL, 4, true, 0xd0);                   /* PINGRESP to a server */
    CHECK(ERR_PROTOCOL, 4, false, 0xc0);                  /* PINGREQ to a client */
    CHECK(ERR_PROTOCOL, 4, false, 0x82, 0x00, 0x01, 0x00, 0x01, 'a', 0x00);
    CHECK(ERR_PROTOCOL, 4, false, 0xa2, 0x00, 0x01, 0x00, 0x01, 'a');
    CHECK(ERR_PROTOCOL, 4, true, 0xf0);  /* AUTH before 5.0 */
    CHECK(ERR_PROTOCOL, 4, false, 0xe0); /* server DISCONNECT before 5.0 */
    CHECK(OK, 5, false, 0xe0);
    CHECK(OK, 5, true, 0xf0);
    CHECK(ERR_INVALID, 7, true, 0xc0);
}

/* Every strict prefix of a valid packet is CODEC_AGAIN; every shortened body is an error. */
static void test_truncated(void **state)
{
    static const uint8_t v5conn[] = {
        0x10, 0x2a, 0x00, 0x04, 'M',  'Q',  'T', 'T',  0x05, 0xce, 0x00, 0x0a, 0x05, 0x11, 0,
        0,    0,    0x78, 0x00, 0x02, 'c',  '1', 0x02, 0x01, 0x01, 0x00, 0x03, 'w',  '/',  't',
        0x00, 0x02, 'g',  'o',  0x00, 0x04, 'u', 's',  'e',  'r',  0x00, 0x02, 'p',  'w'};
    struct codec_packet p;
    (void)state;
    static const uint8_t sub[] = {0x82, 0x0a, 0x00, 0x01, 0x02, 0x0b,
                                  0x05, 0x00, 0x02, 'a',  '/',  0x01};
    const struct {
        const uint8_t *b;
        size_t n;
        uint8_t v;
        bool srv;
    } cases[] = {
        {v5conn, sizeof(v5conn), 0, true},
        {sub, sizeof(sub), 5, true},
        {mosq_connect_v4, sizeof(mosq_connect_v4), 0, true},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const uint8_t *b = cases[c].b;
        size_t n = cases[c].n;
        assert_int_equal(decode_copy(b, n, cases[c].v, cases[c].srv, 0, &p, NULL), (int)n);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(decode_copy(b, k, cases[c].v, cases[c].srv, 0, &p, NULL), CODEC_AGAIN);
        /* shorten the body by 1..rl bytes, fixing the remaining length (1 byte here) */
        for (size_t cut = 1; cut <= b[1]; cut++) {
            uint8_t *t = malloc(n);
            assert_non_null(t);
            memcpy(t, b, n - cut);
            t[1] = (uint8_t)(b[1] - cut);
            int rc = decode_copy(t, n - cut, cases[c].v, cases[c].srv, 0, &p, NULL);
            assert_true(rc < 0);
            free(t);
        }
    }
}

/* A reader fed one byte at a time: codec_frame says when a packet is whole. */
static void test_stream_one_byte(void **state)
{
    static const uint8_t stream[] = {
        0x10, 0x17, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x04, 0x02, 0x00, 0x3c, 0x00,
        0x0b, 'm',  'o',  's',  'q',  '-',  'a',  'b',  'c',  'd',  'e',  'f', /* CONNECT */
        0x32, 0x07, 0x00, 0x01, 't',  0x00, 0x01, 'h',  'i',                   /* PUBLISH QoS 1 */
        0x82, 0x06, 0x00, 0x02, 0x00, 0x01, '#',  0x01,                        /* SUBSCRIBE */
        0xc0, 0x00,                                                            /* PINGREQ */
        0x30, 0x80, 0x01, 0x00, 0x01, 'x'}; /* PUBLISH, 128-byte body */
    static const uint8_t want[] = {CODEC_CONNECT, CODEC_PUBLISH, CODEC_SUBSCRIBE,
                                   CODEC_PINGREQ, CODEC_PUBLISH, CODEC_DISCONNECT};
    uint8_t in[sizeof(stream) + 200];
    uint8_t buf[512];
    size_t have = 0, got = 0;
    uint8_t version = 0;
    (void)state;
    memcpy(in, stream, sizeof(stream));
    memset(in + sizeof(stream), 'p', 125);
    in[sizeof(stream) + 125] = 0xe0;
    in[sizeof(stream) + 126] = 0x00;
    size_t total_in = sizeof(stream) + 127;

    for (size_t i = 0; i < total_in; i++) {
        buf[have++] = in[i];
        for (;;) {
            size_t total;
            int rc = codec_frame(buf, have, 1024, &total);
            assert_true(rc >= 0);
            if (rc == CODEC_AGAIN || total > have)
                break;
            struct codec_packet p;
            rc = decode_copy(buf, total, version, true, 1024, &p, NULL);
            assert_int_equal(rc, (int)total);
            assert_true(got < sizeof(want));
            assert_int_equal(p.type, want[got]);
            got++;
            if (p.type == CODEC_CONNECT)
                version = p.u.connect.version;
            memmove(buf, buf + total, have - total);
            have -= total;
        }
    }
    assert_int_equal(got, sizeof(want));
    assert_int_equal(have, 0);
}

static void test_encode_limits(void **state)
{
    struct codec_packet p = {.type = CODEC_PUBLISH};
    static uint8_t big[70000];
    (void)state;
    p.u.publish.topic = (struct codec_str){big, 65536};
    assert_int_equal(codec_size(4, &p), 0);
    p.u.publish.topic = str_of("t");
    p.u.publish.payload = (struct codec_str){big, CODEC_MAX_REMAINING};
    assert_int_equal(codec_size(4, &p), 0);
    p.u.publish.payload.len = CODEC_MAX_REMAINING - 3;
    assert_int_equal(codec_size(4, &p), 5 + CODEC_MAX_REMAINING);
    assert_int_equal(codec_publish_head_size(4, &p), 5 + 3);
    uint8_t head[16];
    assert_int_equal(codec_publish_head_write(head, 4, &p), 8);
    assert_memory_equal(head, "\x30\xff\xff\xff\x7f\x00\x01t", 8);
    p.u.publish.payload.len = 0;
    p.props.has = CODEC_BIT(CODEC_PROP_SUBSCRIPTION_ID);
    p.props.sub_id = 0;
    assert_int_equal(codec_size(5, &p), 0); /* sub id 0 cannot be sent */
    assert_true(codec_size(4, &p) > 0);     /* properties do not exist in 3.1.1 */
    assert_int_equal(codec_size(9, &p), 0);
    /* properties a packet may not carry are left out */
    p.props.has = CODEC_BIT(CODEC_PROP_SESSION_EXPIRY);
    assert_int_equal(codec_size(5, &p), 2 + 3 + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_frame_varint_5_bytes),
        cmocka_unit_test(test_frame_varint_not_minimal),
        cmocka_unit_test(test_frame_again),
        cmocka_unit_test(test_frame_too_large),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_roundtrip_connect),
        cmocka_unit_test(test_roundtrip_connack),
        cmocka_unit_test(test_roundtrip_publish),
        cmocka_unit_test(test_roundtrip_acks),
        cmocka_unit_test(test_roundtrip_subscribe),
        cmocka_unit_test(test_roundtrip_unsubscribe),
        cmocka_unit_test(test_roundtrip_suback_unsuback),
        cmocka_unit_test(test_roundtrip_ping_disconnect_auth),
        cmocka_unit_test(test_exact_mosquitto_connect),
        cmocka_unit_test(test_exact_v5_connect_with_props),
        cmocka_unit_test(test_exact_small_packets),
        cmocka_unit_test(test_exact_mqtt31_connect),
        cmocka_unit_test(test_reserved_flags),
        cmocka_unit_test(test_qos3_and_dup),
        cmocka_unit_test(test_packet_id_zero),
        cmocka_unit_test(test_publish_topic),
        cmocka_unit_test(test_publish_topic_every_position),
        cmocka_unit_test(test_invalid_utf8_fields),
        cmocka_unit_test(test_wildcard_will_and_response_topic),
        cmocka_unit_test(test_duplicate_property),
        cmocka_unit_test(test_property_not_allowed),
        cmocka_unit_test(test_property_values),
        cmocka_unit_test(test_property_order_and_user_run),
        cmocka_unit_test(test_bad_protocol_name_level),
        cmocka_unit_test(test_bad_connect_flags),
        cmocka_unit_test(test_subscribe_options),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_reason_codes),
        cmocka_unit_test(test_direction_and_version),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_stream_one_byte),
        cmocka_unit_test(test_encode_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
