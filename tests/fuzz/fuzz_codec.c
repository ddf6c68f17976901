/*
 * libFuzzer target for the MQTT codec. Input: [seed][mode][bytes...]. The seed sizes the
 * chunks in which a simulated connection reader receives the bytes; mode picks the starting
 * protocol version (0 = before CONNECT, 3, 4, 5), the direction and a max_size. The reader
 * frames with codec_frame as conn.c does, and each whole packet is decoded in the stream's
 * state and in every other (version, direction), each time on an exactly-sized heap copy.
 *
 * Every packet that decodes must re-encode (codec_size > 0, codec_write == codec_size), the
 * re-encoding must decode to an equivalent packet, and encoding that must give the same bytes
 * again (the encoder's output is canonical). PUBLISH heads must be a prefix of the whole.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/codec.h"
#include "node/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(x)                                                                                 \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool str_eq(struct codec_str a, struct codec_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool user_eq(const struct codec_str *a, const struct codec_str *b)
{
    size_t pa = 0, pb = 0;
    struct codec_str ka, va, kb, vb;

    for (;;) {
        bool ha = codec_user_prop_next(a, &pa, &ka, &va);
        bool hb = codec_user_prop_next(b, &pb, &kb, &vb);
        if (ha != hb)
            return false;
        if (!ha)
            return true;
        if (!str_eq(ka, kb) || !str_eq(va, vb))
            return false;
    }
}

static bool props_eq(const struct codec_props *a, const struct codec_props *b)
{
    if (a->has != b->has)
        return false;
#define NUM(f, id)                                                                                 \
    if (CODEC_HAS(a, CODEC_PROP_##id) && a->f != b->f)                                             \
        return false;
#define STR(f, id)                                                                                 \
    if (CODEC_HAS(a, CODEC_PROP_##id) && !str_eq(a->f, b->f))                                      \
        return false;
    NUM(payload_format, PAYLOAD_FORMAT)
    NUM(message_expiry, MESSAGE_EXPIRY)
    NUM(sub_id, SUBSCRIPTION_ID)
    NUM(session_expiry, SESSION_EXPIRY)
    NUM(server_keepalive, SERVER_KEEPALIVE)
    NUM(request_problem_info, REQUEST_PROBLEM_INFO)
    NUM(will_delay, WILL_DELAY)
    NUM(request_response_info, REQUEST_RESPONSE_INFO)
    NUM(receive_max, RECEIVE_MAX)
    NUM(topic_alias_max, TOPIC_ALIAS_MAX)
    NUM(topic_alias, TOPIC_ALIAS)
    NUM(max_qos, MAX_QOS)
    NUM(retain_available, RETAIN_AVAILABLE)
    NUM(max_packet_size, MAX_PACKET_SIZE)
    NUM(wildcard_sub_available, WILDCARD_SUB_AVAILABLE)
    NUM(sub_id_available, SUB_ID_AVAILABLE)
    NUM(shared_sub_available, SHARED_SUB_AVAILABLE)
    STR(content_type, CONTENT_TYPE)
    STR(response_topic, RESPONSE_TOPIC)
    STR(correlation_data, CORRELATION_DATA)
    STR(assigned_client_id, ASSIGNED_CLIENT_ID)
    STR(auth_method, AUTH_METHOD)
    STR(auth_data, AUTH_DATA)
    STR(response_info, RESPONSE_INFO)
    STR(server_reference, SERVER_REFERENCE)
    STR(reason_string, REASON_STRING)
#undef NUM
#undef STR
    return user_eq(&a->user_props, &b->user_props);
}

static bool connect_eq(const struct codec_connect *a, const struct codec_connect *b)
{
    if (a->version != b->version || a->clean_start != b->clean_start ||
        a->has_will != b->has_will || a->has_username != b->has_username ||
        a->has_password != b->has_password || a->will_retain != b->will_retain ||
        a->will_qos != b->will_qos || a->keepalive != b->keepalive ||
        !str_eq(a->client_id, b->client_id))
        return false;
    if (a->has_will &&
        (!props_eq(&a->will_props, &b->will_props) || !str_eq(a->will_topic, b->will_topic) ||
         !str_eq(a->will_payload, b->will_payload)))
        return false;
    if (a->has_username && !str_eq(a->username, b->username))
        return false;
    return !a->has_password || str_eq(a->password, b->password);
}

static bool sub_eq(const struct codec_subscribe *a, const struct codec_subscribe *b, uint8_t v)
{
    size_t pa = 0, pb = 0, n = 0;
    struct codec_sub_entry ea, eb;

    if (a->packet_id != b->packet_id || a->count != b->count)
        return false;
    while (codec_sub_next(a, v, &pa, &ea)) {
        if (!codec_sub_next(b, v, &pb, &eb) || !str_eq(ea.filter, eb.filter) || ea.qos != eb.qos ||
            ea.no_local != eb.no_local || ea.retain_as_published != eb.retain_as_published ||
            ea.retain_handling != eb.retain_handling)
            return false;
        n++;
    }
    return n == a->count && !codec_sub_next(b, v, &pb, &eb);
}

static bool unsub_eq(const struct codec_unsubscribe *a, const struct codec_unsubscribe *b)
{
    size_t pa = 0, pb = 0, n = 0;
    struct codec_str fa, fb;

    if (a->packet_id != b->packet_id || a->count != b->count)
        return false;
    while (codec_unsub_next(a, &pa, &fa)) {
        if (!codec_unsub_next(b, &pb, &fb) || !str_eq(fa, fb))
            return false;
        n++;
    }
    return n == a->count && !codec_unsub_next(b, &pb, &fb);
}

static bool packet_eq(const struct codec_packet *a, const struct codec_packet *b, uint8_t v)
{
    if (a->type != b->type || !props_eq(&a->props, &b->props))
        return false;
    switch (a->type) {
    case CODEC_CONNECT:
        return connect_eq(&a->u.connect, &b->u.connect);
    case CODEC_CONNACK:
        return a->u.connack.session_present == b->u.connack.session_present &&
               a->u.connack.reason == b->u.connack.reason;
    case CODEC_PUBLISH:
        return a->flags == b->flags && a->u.publish.qos == b->u.publish.qos &&
               a->u.publish.dup == b->u.publish.dup && a->u.publish.retain == b->u.publish.retain &&
               a->u.publish.packet_id == b->u.publish.packet_id &&
               str_eq(a->u.publish.topic, b->u.publish.topic) &&
               str_eq(a->u.publish.payload, b->u.publish.payload);
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        return a->u.ack.packet_id == b->u.ack.packet_id && a->u.ack.reason == b->u.ack.reason;
    case CODEC_SUBSCRIBE:
        return sub_eq(&a->u.subscribe, &b->u.subscribe, v);
    case CODEC_UNSUBSCRIBE:
        return unsub_eq(&a->u.unsubscribe, &b->u.unsubscribe);
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        return a->u.suback.packet_id == b->u.suback.packet_id &&
               a->u.suback.count == b->u.suback.count &&
               (a->u.suback.count == 0 ||
                memcmp(a->u.suback.reasons, b->u.suback.reasons, a->u.suback.count) == 0);
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        return a->u.disconnect.reason == b->u.disconnect.reason;
    default:
        return true;
    }
}

/* Encodes d (decoded with version v in direction srv), decodes that, compares. */
static void roundtrip(const struct codec_packet *d, uint8_t v, bool srv)
{
    uint8_t ev = d->type == CODEC_CONNECT ? d->u.connect.version : v;
    size_t n = codec_size(v, d);
    REQUIRE(n > 0);
    uint8_t *b1 = malloc(n);
    REQUIRE(b1);
    REQUIRE(codec_write(b1, v, d) == n);

    if (d->type == CODEC_PUBLISH) {
        size_t hn = codec_publish_head_size(v, d);
        REQUIRE(hn + d->u.publish.payload.len == n);
        uint8_t *h = malloc(hn);
        REQUIRE(h);
        REQUIRE(codec_publish_head_write(h, v, d) == hn);
        REQUIRE(memcmp(h, b1, hn) == 0);
        free(h);
    }

    struct codec_packet d2;
    size_t total = 0;
    REQUIRE(codec_frame(b1, n, 0, &total) == 1 && total == n);
    REQUIRE(codec_decode(b1, n, v, srv, (uint32_t)n, &d2) == (int)n);
    REQUIRE(packet_eq(d, &d2, ev));

    /* canonical: encoding the re-decoded packet gives the same bytes */
    REQUIRE(codec_size(v, &d2) == n);
    uint8_t *b2 = malloc(n);
    REQUIRE(b2);
    REQUIRE(codec_write(b2, v, &d2) == n);
    REQUIRE(memcmp(b1, b2, n) == 0);
    free(b2);
    free(b1);
}

static int decode_exact(const uint8_t *p, size_t n, uint8_t v, bool srv, uint32_t max,
                        struct codec_packet *out, uint8_t **copy)
{
    uint8_t *c = malloc(n ? n : 1);
    REQUIRE(c);
    if (n)
        memcpy(c, p, n);
    int rc = codec_decode(c, n, v, srv, max, out);
    *copy = c;
    return rc;
}

static const uint8_t versions[4] = {0, CODEC_V31, CODEC_V311, CODEC_V5};

/* One whole packet: decode it in every (version, direction); round-trip what decodes. */
static void whole_packet(const uint8_t *p, size_t n, uint8_t *version, bool srv, uint32_t max)
{
    struct codec_packet d;
    uint8_t *c;
    int rc = decode_exact(p, n, *version, srv, max, &d, &c);

    REQUIRE(rc == (int)n || rc < 0);
    if (rc > 0) {
        roundtrip(&d, *version, srv);
        if (d.type == CODEC_CONNECT)
            *version = d.u.connect.version;
    }
    free(c);

    for (size_t vi = 0; vi < 4; vi++) {
        for (int s = 0; s < 2; s++) {
            rc = decode_exact(p, n, versions[vi], s, 0, &d, &c);
            REQUIRE(rc == (int)n || rc < 0);
            REQUIRE(rc != CODEC_AGAIN);
            if (rc > 0)
                roundtrip(&d, versions[vi], s);
            free(c);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const uint8_t seed = data[0], mode = data[1];
    data += 2;
    size -= 2;

    uint8_t version = versions[mode & 3];
    const bool srv = mode & 4;
    const uint32_t max = (mode & 8) ? 64u + (uint32_t)(mode >> 4) * 32u : 0;
    uint8_t *acc = malloc(size ? size : 1);
    REQUIRE(acc);
    size_t have = 0, off = 0, step = 0;

    while (have < size) {
        /* chunk sizes from the seed: fixed (1..64) or varying per read */
        size_t chunk =
            (seed & 0x80) ? 1 + ((seed * (step + 7) * 31u) >> 3) % 64 : 1u + (seed & 63u);
        if (chunk > size - have)
            chunk = size - have;
        memcpy(acc + have, data + have, chunk);
        have += chunk;
        step++;

        while (off < have) {
            size_t total = 0;
            int rc = codec_frame(acc + off, have - off, max, &total);
            if (rc < 0)
                goto out; /* the connection would be closed */
            if (rc == CODEC_AGAIN || total > have - off) {
                if (have - off < 512) {
                    struct codec_packet d;
                    uint8_t *c;
                    rc = decode_exact(acc + off, have - off, version, srv, max, &d, &c);
                    REQUIRE(rc == CODEC_AGAIN);
                    free(c);
                }
                break;
            }
            whole_packet(acc + off, total, &version, srv, max);
            off += total;
        }
    }
out:
    free(acc);
    return 0;
}
