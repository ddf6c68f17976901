/*
 * MQTT 3.1, 3.1.1 and 5.0 packets: framing, decoding and encoding. Pure: no I/O, no
 * allocation, no recursion.
 *
 * Decoding is one forward pass over the packet that validates as it reads and leaves views
 * into the caller's buffer, so a packet is never walked twice nor copied. Bounds are checked
 * against the packet's end on every read; a short field inside a complete packet is malformed.
 * Encoding plans every length once (struct plan), then writes front to back; PUBLISH can stop
 * before the payload so that the shared message's payload goes out by reference.
 */
#include "node/codec.h"

#include <string.h>

#include "node/err.h"

/* Packets each direction may carry; v5-only ones are filtered separately. */
#define T(x) (1u << CODEC_##x)
#define ACKS (T(PUBACK) | T(PUBREC) | T(PUBREL) | T(PUBCOMP))
#define FROM_CLIENT                                                                                \
    (T(CONNECT) | T(PUBLISH) | ACKS | T(SUBSCRIBE) | T(UNSUBSCRIBE) | T(PINGREQ) | T(DISCONNECT) | \
     T(AUTH))
#define FROM_SERVER                                                                                \
    (T(CONNACK) | T(PUBLISH) | ACKS | T(SUBACK) | T(UNSUBACK) | T(PINGRESP) | T(DISCONNECT) |      \
     T(AUTH))

/* Valid v5 reason codes by packet (MQTT 5.0 section 2.4 and the packets' reason tables). */
enum {
    R_PUBACK = 1 << 0, /* and PUBREC */
    R_PUBREL = 1 << 1, /* and PUBCOMP */
    R_SUBACK = 1 << 2,
    R_UNSUBACK = 1 << 3,
    R_DISCONNECT = 1 << 4,
    R_AUTH = 1 << 5,
    R_CONNACK = 1 << 6,
};

static const uint8_t reasons_v5[256] = {
    [0x00] = R_PUBACK | R_PUBREL | R_SUBACK | R_UNSUBACK | R_DISCONNECT | R_AUTH | R_CONNACK,
    [0x01] = R_SUBACK,
    [0x02] = R_SUBACK,
    [0x04] = R_DISCONNECT,
    [0x10] = R_PUBACK,
    [0x11] = R_UNSUBACK,
    [0x18] = R_AUTH,
    [0x19] = R_AUTH,
    [0x80] = R_PUBACK | R_SUBACK | R_UNSUBACK | R_DISCONNECT | R_CONNACK,
    [0x81] = R_DISCONNECT | R_CONNACK,
    [0x82] = R_DISCONNECT | R_CONNACK,
    [0x83] = R_PUBACK | R_SUBACK | R_UNSUBACK | R_DISCONNECT | R_CONNACK,
    [0x84] = R_CONNACK,
    [0x85] = R_CONNACK,
    [0x86] = R_CONNACK,
    [0x87] = R_PUBACK | R_SUBACK | R_UNSUBACK | R_DISCONNECT | R_CONNACK,
    [0x88] = R_CONNACK,
    [0x89] = R_DISCONNECT | R_CONNACK,
    [0x8A] = R_CONNACK,
    [0x8B] = R_DISCONNECT,
    [0x8C] = R_CONNACK,
    [0x8D] = R_DISCONNECT,
    [0x8E] = R_DISCONNECT,
    [0x8F] = R_SUBACK | R_UNSUBACK | R_DISCONNECT,
    [0x90] = R_PUBACK | R_DISCONNECT | R_CONNACK,
    [0x91] = R_PUBACK | R_SUBACK | R_UNSUBACK,
    [0x92] = R_PUBREL,
    [0x93] = R_DISCONNECT,
    [0x94] = R_DISCONNECT,
    [0x95] = R_DISCONNECT | R_CONNACK,
    [0x96] = R_DISCONNECT,
    [0x97] = R_PUBACK | R_SUBACK | R_DISCONNECT | R_CONNACK,
    [0x98] = R_DISCONNECT,
    [0x99] = R_PUBACK | R_DISCONNECT | R_CONNACK,
    [0x9A] = R_DISCONNECT | R_CONNACK,
    [0x9B] = R_DISCONNECT | R_CONNACK,
    [0x9C] = R_DISCONNECT | R_CONNACK,
    [0x9D] = R_DISCONNECT | R_CONNACK,
    [0x9E] = R_SUBACK | R_DISCONNECT,
    [0x9F] = R_DISCONNECT | R_CONNACK,
    [0xA0] = R_DISCONNECT,
    [0xA1] = R_SUBACK | R_DISCONNECT,
    [0xA2] = R_SUBACK | R_DISCONNECT,
};

static const uint8_t reason_class[16] = {
    [CODEC_CONNACK] = R_CONNACK,   [CODEC_PUBACK] = R_PUBACK,         [CODEC_PUBREC] = R_PUBACK,
    [CODEC_PUBREL] = R_PUBREL,     [CODEC_PUBCOMP] = R_PUBREL,        [CODEC_SUBACK] = R_SUBACK,
    [CODEC_UNSUBACK] = R_UNSUBACK, [CODEC_DISCONNECT] = R_DISCONNECT, [CODEC_AUTH] = R_AUTH,
};

/* ---- primitives ---- */

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

struct rd {
    const uint8_t *p;
    const uint8_t *end;
};

static inline size_t rd_left(const struct rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline bool rd_u8(struct rd *r, uint8_t *v)
{
    if (r->p >= r->end)
        return false;
    *v = *r->p++;
    return true;
}

static inline bool rd_u16(struct rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return false;
    *v = get16(r->p);
    r->p += 2;
    return true;
}

static inline bool rd_bin(struct rd *r, struct codec_str *s)
{
    uint16_t n;

    if (!rd_u16(r, &n) || rd_left(r) < n)
        return false;
    s->p = r->p;
    s->len = n;
    r->p += n;
    return true;
}

static inline int rd_utf8(struct rd *r, struct codec_str *s)
{
    if (!rd_bin(r, s) || !codec_utf8_valid(s->p, s->len))
        return ERR_MALFORMED;
    return 0;
}

/* A non-zero packet identifier [MQTT-2.3.1-1]. */
static inline int rd_packet_id(struct rd *r, uint16_t *id)
{
    if (!rd_u16(r, id))
        return ERR_MALFORMED;
    return *id ? 0 : ERR_PROTOCOL;
}

static inline int rd_props(struct rd *r, uint8_t version, unsigned kind, uint64_t deny,
                           struct codec_props *props)
{
    if (version != CODEC_V5)
        return 0;
    return codec__props_read(&r->p, r->end, kind, deny, props);
}

bool codec_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            /* Eight bytes in 0x01..0x7F: no high bit, and no zero byte to borrow from. */
            if (((w | (w - ONES)) & HIGHS) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        if (c < 0xC2) /* stray continuation, or an overlong 2-byte form */
            return false;
        if (c < 0xE0) {
            if (len - i < 2 || (s[i + 1] & 0xC0) != 0x80)
                return false;
            i += 2;
            continue;
        }
        if (c < 0xF0) {
            if (len - i < 3)
                return false;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return false;
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) /* overlong, surrogate */
                return false;
            i += 3;
            continue;
        }
        if (c < 0xF5) {
            if (len - i < 4)
                return false;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return false;
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90)) /* overlong, > U+10FFFF */
                return false;
            i += 4;
            continue;
        }
        return false;
    }
    return true;
}

/* Whether eight bytes are all in 0x01..0x7F and none is '+' or '#'. */
static inline bool word_plain(const uint8_t *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    uint64_t plus = w ^ (ONES * '+');
    uint64_t hash = w ^ (ONES * '#');
    return ((w | (w - ONES) | (plus - ONES) | (hash - ONES)) & HIGHS) == 0;
}

/* A PUBLISH topic: valid UTF-8 without wildcards. Plain ASCII goes eight bytes at a time (the
 * tail as an overlapping last word); the exact checks run only from the first word that holds
 * a non-ASCII, NUL, '+' or '#' byte. */
static int topic_name_check(const uint8_t *s, size_t len)
{
    size_t i = 0;

    for (; len - i >= 8; i += 8) {
        if (!word_plain(s + i))
            goto exact;
    }
    if (i == len || (len >= 8 && word_plain(s + len - 8)))
        return 0;
    for (; i < len; i++) {
        uint8_t c = s[i];
        if (c == 0 || c >= 0x80 || c == '+' || c == '#')
            goto exact;
    }
    return 0;
exact:
    if (!codec_utf8_valid(s + i, len - i))
        return ERR_MALFORMED;
    if (memchr(s + i, '+', len - i) || memchr(s + i, '#', len - i))
        return ERR_TOPIC_NAME;
    return 0;
}

size_t codec_varint_size(uint32_t v)
{
    return v < 128u ? 1 : v < 16384u ? 2 : v < 2097152u ? 3 : 4;
}

uint8_t *codec_varint_write(uint8_t *out, uint32_t v)
{
    size_t n = codec_varint_size(v);

    for (size_t i = 0; i + 1 < n; i++) {
        *out++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *out++ = (uint8_t)(v & 0x7f);
    return out;
}

/* ---- framing ---- */

int codec_frame(const uint8_t *buf, size_t len, uint32_t max_size, size_t *total)
{
    uint32_t v = 0;

    for (size_t i = 1; i <= 4; i++) {
        if (i >= len) {
            /* Reject early when even the smallest completion would be too large. */
            if (max_size && i > 1 && (uint64_t)v + (1ull << (7 * (i - 1))) + i + 1 > max_size)
                return ERR_PACKET_TOO_LARGE;
            return CODEC_AGAIN;
        }
        uint8_t b = buf[i];
        v |= (uint32_t)(b & 0x7f) << (7 * (i - 1));
        if (!(b & 0x80)) {
            if (b == 0 && i > 1) /* not the shortest form [MQTT-1.5.5-1] */
                return ERR_MALFORMED;
            size_t t = 1 + i + v;
            if (max_size && t > max_size)
                return ERR_PACKET_TOO_LARGE;
            *total = t;
            return 1;
        }
    }
    return ERR_MALFORMED;
}

/* ---- decoding, one function per packet ---- */

static int dec_connect(struct rd *r, struct codec_packet *out)
{
    struct codec_connect *c = &out->u.connect;
    struct codec_str name;
    uint8_t level, f;
    int rc;

    if (!rd_bin(r, &name) || !rd_u8(r, &level))
        return ERR_MALFORMED;
    if (name.len == 4 && memcmp(name.p, "MQTT", 4) == 0) {
        if (level != CODEC_V311 && level != CODEC_V5)
            return ERR_UNSUPPORTED_VERSION;
    } else if (name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0) {
        if (level != CODEC_V31)
            return ERR_UNSUPPORTED_VERSION;
    } else {
        return ERR_UNSUPPORTED_VERSION;
    }
    if (!rd_u8(r, &f) || !rd_u16(r, &c->keepalive))
        return ERR_MALFORMED;
    c->version = level;
    c->clean_start = f & 0x02;
    c->has_will = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40;
    c->has_username = f & 0x80;
    memset(&c->will_props, 0, sizeof(c->will_props));
    c->will_topic = c->will_payload = c->username = c->password = (struct codec_str){0};

    if ((f & 0x01) || c->will_qos == 3 || (!c->has_will && (f & 0x38)))
        return ERR_MALFORMED; /* [MQTT-3.1.2-3], [MQTT-3.1.2-11..14] */
    if (c->has_password && !c->has_username && level != CODEC_V5)
        return ERR_PROTOCOL; /* [MQTT-3.1.2-22] in 3.1.1; 5.0 allows it */

    rc = rd_props(r, level, CODEC_CONNECT, 0, &out->props);
    if (rc == 0)
        rc = rd_utf8(r, &c->client_id);
    if (rc)
        return rc;
    if (c->has_will) {
        rc = rd_props(r, level, CODEC__KIND_WILL, 0, &c->will_props);
        if (rc)
            return rc;
        if (!rd_bin(r, &c->will_topic) || !rd_bin(r, &c->will_payload))
            return ERR_MALFORMED;
        if (c->will_topic.len == 0)
            return ERR_TOPIC_NAME;
        rc = topic_name_check(c->will_topic.p, c->will_topic.len);
        if (rc)
            return rc;
    }
    if (c->has_username) {
        rc = rd_utf8(r, &c->username);
        if (rc)
            return rc;
    }
    if (c->has_password && !rd_bin(r, &c->password))
        return ERR_MALFORMED;
    return 0;
}

static int dec_connack(struct rd *r, uint8_t version, struct codec_packet *out)
{
    struct codec_connack *c = &out->u.connack;
    uint8_t f;

    if (!rd_u8(r, &f) || !rd_u8(r, &c->reason))
        return ERR_MALFORMED;
    if (f & 0xfe) /* [MQTT-3.2.2-1] */
        return ERR_MALFORMED;
    c->session_present = f & 1;
    if (version == CODEC_V5 ? !(reasons_v5[c->reason] & R_CONNACK) : c->reason > 5)
        return ERR_PROTOCOL;
    if (c->session_present && c->reason) /* [MQTT-3.2.2-4], [MQTT-3.2.2-6] */
        return ERR_PROTOCOL;
    return rd_props(r, version, CODEC_CONNACK, 0, &out->props);
}

static int dec_publish(struct rd *r, uint8_t version, bool is_server, struct codec_packet *out)
{
    struct codec_publish *m = &out->u.publish;
    int rc;

    m->qos = (out->flags >> 1) & 3;
    m->dup = out->flags & 0x08;
    m->retain = out->flags & 0x01;
    m->packet_id = 0;
    if (m->qos == 3)
        return ERR_MALFORMED;  /* [MQTT-3.3.1-4] */
    if (m->qos == 0 && m->dup) /* [MQTT-3.3.1-2]; 5.0 calls bad fixed-header flags malformed */
        return version == CODEC_V5 ? ERR_MALFORMED : ERR_PROTOCOL;
    if (!rd_bin(r, &m->topic))
        return ERR_MALFORMED;
    if (m->topic.len) {
        rc = topic_name_check(m->topic.p, m->topic.len);
        if (rc)
            return rc;
    } else if (version != CODEC_V5) {
        return ERR_TOPIC_NAME;
    }
    if (m->qos) {
        rc = rd_packet_id(r, &m->packet_id);
        if (rc)
            return rc;
    }
    /* A client never sends subscription identifiers [MQTT-3.3.4-6]. */
    rc = rd_props(r, version, CODEC_PUBLISH, is_server ? CODEC_BIT(CODEC_PROP_SUBSCRIPTION_ID) : 0,
                  &out->props);
    if (rc)
        return rc;
    if (m->topic.len == 0 && !CODEC_HAS(&out->props, CODEC_PROP_TOPIC_ALIAS))
        return ERR_PROTOCOL; /* an empty topic needs an alias [MQTT-3.3.2-8] */
    m->payload.p = r->p;
    m->payload.len = (uint32_t)rd_left(r);
    r->p = r->end;
    return 0;
}

static int dec_ack(struct rd *r, uint8_t version, struct codec_packet *out)
{
    struct codec_ack *a = &out->u.ack;
    int rc = rd_packet_id(r, &a->packet_id);

    a->reason = 0;
    if (rc || version != CODEC_V5 || rd_left(r) == 0)
        return rc;
    a->reason = *r->p++;
    if (!(reasons_v5[a->reason] & reason_class[out->type]))
        return ERR_PROTOCOL;
    if (rd_left(r) == 0)
        return 0;
    return rd_props(r, version, out->type, 0, &out->props);
}

static int dec_subscribe(struct rd *r, uint8_t version, struct codec_packet *out)
{
    struct codec_subscribe *s = &out->u.subscribe;
    const uint8_t reserved = version == CODEC_V5 ? 0xc0 : 0xfc;
    int rc = rd_packet_id(r, &s->packet_id);

    if (rc == 0)
        rc = rd_props(r, version, CODEC_SUBSCRIBE, 0, &out->props);
    if (rc)
        return rc;
    s->raw.p = r->p;
    s->raw.len = (uint32_t)rd_left(r);
    s->list = NULL;
    s->count = 0;
    if (r->p == r->end) /* [MQTT-3.8.3-2] */
        return ERR_PROTOCOL;
    while (r->p < r->end) {
        struct codec_str f;
        uint8_t o;
        rc = rd_utf8(r, &f);
        if (rc)
            return rc;
        if (!rd_u8(r, &o) || (o & reserved) || (o & 3) == 3)
            return ERR_MALFORMED; /* [MQTT-3.8.3-4], [MQTT-3.8.3-5] */
        if (((o >> 4) & 3) == 3)
            return ERR_PROTOCOL;
        s->count++;
    }
    return 0;
}

static int dec_unsubscribe(struct rd *r, uint8_t version, struct codec_packet *out)
{
    struct codec_unsubscribe *u = &out->u.unsubscribe;
    int rc = rd_packet_id(r, &u->packet_id);

    if (rc == 0)
        rc = rd_props(r, version, CODEC_UNSUBSCRIBE, 0, &out->props);
    if (rc)
        return rc;
    u->raw.p = r->p;
    u->raw.len = (uint32_t)rd_left(r);
    u->list = NULL;
    u->count = 0;
    if (r->p == r->end) /* [MQTT-3.10.3-2] */
        return ERR_PROTOCOL;
    while (r->p < r->end) {
        struct codec_str f;
        rc = rd_utf8(r, &f);
        if (rc)
            return rc;
        u->count++;
    }
    return 0;
}

static int dec_suback(struct rd *r, uint8_t version, struct codec_packet *out)
{
    struct codec_suback *s = &out->u.suback;
    int rc = rd_packet_id(r, &s->packet_id);

    s->count = 0;
    s->reasons = NULL;
    if (rc == 0)
        rc = rd_props(r, version, out->type, 0, &out->props);
    if (rc)
        return rc;
    if (out->type == CODEC_UNSUBACK && version != CODEC_V5)
        return 0; /* trailing bytes are caught by the caller */
    if (r->p == r->end)
        return ERR_PROTOCOL;
    s->reasons = r->p;
    s->count = (uint32_t)rd_left(r);
    for (; r->p < r->end; r->p++) {
        uint8_t c = *r->p;
        bool is_ok = version == CODEC_V5 ? (reasons_v5[c] & reason_class[out->type]) != 0
                                         : (c <= 2 || c == 0x80);
        if (!is_ok)
            return ERR_PROTOCOL;
    }
    return 0;
}

/* DISCONNECT and AUTH: reason and properties may each be left out. */
static int dec_disconnect(struct rd *r, uint8_t version, bool is_server, struct codec_packet *out)
{
    struct codec_disconnect *d = &out->u.disconnect;

    d->reason = 0;
    if (version != CODEC_V5 || rd_left(r) == 0)
        return 0;
    d->reason = *r->p++;
    if (!(reasons_v5[d->reason] & reason_class[out->type]))
        return ERR_PROTOCOL;
    if (rd_left(r) == 0)
        return 0;
    /* A server never sends a session expiry interval on DISCONNECT [MQTT-3.14.2-2]. */
    uint64_t deny =
        out->type == CODEC_DISCONNECT && !is_server ? CODEC_BIT(CODEC_PROP_SESSION_EXPIRY) : 0;
    return rd_props(r, version, out->type, deny, &out->props);
}

/* Fixed-header checks: direction, version and reserved flags. */
static int check_header(unsigned type, unsigned flags, uint8_t version, bool is_server)
{
    if (type == 0)
        return ERR_MALFORMED;
    if (version == 0) {
        if (type != CODEC_CONNECT || !is_server)
            return ERR_PROTOCOL;
    } else {
        if (version < CODEC_V31 || version > CODEC_V5)
            return ERR_INVALID;
        if (!((is_server ? FROM_CLIENT : FROM_SERVER) & (1u << type)) || type == CODEC_CONNECT)
            return ERR_PROTOCOL; /* a second CONNECT too [MQTT-3.1.0-2] */
        if (version != CODEC_V5 && (type == CODEC_AUTH || (type == CODEC_DISCONNECT && !is_server)))
            return ERR_PROTOCOL;
    }
    switch (type) {
    case CODEC_PUBLISH:
        return 0;
    case CODEC_PUBREL:
    case CODEC_SUBSCRIBE:
    case CODEC_UNSUBSCRIBE:
        /* 3.1 set DUP on retransmissions of these. */
        if (version == CODEC_V31)
            flags &= ~0x08u;
        return flags == 0x02 ? 0 : ERR_MALFORMED;
    default:
        return flags == 0 ? 0 : ERR_MALFORMED;
    }
}

int codec_decode(const uint8_t *buf, size_t len, uint8_t version, bool is_server, uint32_t max_size,
                 struct codec_packet *out)
{
    size_t total;
    int rc = codec_frame(buf, len, max_size, &total);

    if (rc <= 0)
        return rc;
    if (total > len)
        return CODEC_AGAIN;

    unsigned type = buf[0] >> 4;
    rc = check_header(type, buf[0] & 0x0f, version, is_server);
    if (rc)
        return rc;

    /* The body starts after the type byte and the remaining length's 1..4 bytes. */
    size_t head = 2;
    while (buf[head - 1] & 0x80)
        head++;
    struct rd r = {buf + head, buf + total};
    out->type = (enum codec_type)type;
    out->flags = buf[0] & 0x0f;
    memset(&out->props, 0, sizeof(out->props));

    switch (type) {
    case CODEC_CONNECT:
        rc = dec_connect(&r, out);
        break;
    case CODEC_CONNACK:
        rc = dec_connack(&r, version, out);
        break;
    case CODEC_PUBLISH:
        rc = dec_publish(&r, version, is_server, out);
        break;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        rc = dec_ack(&r, version, out);
        break;
    case CODEC_SUBSCRIBE:
        rc = dec_subscribe(&r, version, out);
        break;
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        rc = dec_suback(&r, version, out);
        break;
    case CODEC_UNSUBSCRIBE:
        rc = dec_unsubscribe(&r, version, out);
        break;
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        rc = dec_disconnect(&r, version, is_server, out);
        break;
    default: /* PINGREQ, PINGRESP: no body */
        break;
    }
    if (rc)
        return rc;
    if (r.p != r.end) /* trailing bytes */
        return ERR_MALFORMED;
    return (int)total;
}

bool codec_sub_next(const struct codec_subscribe *s, uint8_t version, size_t *pos,
                    struct codec_sub_entry *e)
{
    if (!s->raw.p) { /* a packet built for encoding: walk its list */
        if (!s->list || *pos >= s->count)
            return false;
        *e = s->list[(*pos)++];
        return true;
    }
    size_t i = *pos;
    if (i >= s->raw.len || s->raw.len - i < 3)
        return false;
    size_t n = get16(s->raw.p + i);
    if (s->raw.len - i - 3 < n)
        return false;
    uint8_t o = s->raw.p[i + 2 + n];
    e->filter.p = s->raw.p + i + 2;
    e->filter.len = (uint32_t)n;
    e->qos = o & 3;
    e->no_local = version == CODEC_V5 && (o & 0x04);
    e->retain_as_published = version == CODEC_V5 && (o & 0x08);
    e->retain_handling = version == CODEC_V5 ? (o >> 4) & 3 : 0;
    *pos = i + 3 + n;
    return true;
}

bool codec_unsub_next(const struct codec_unsubscribe *u, size_t *pos, struct codec_str *filter)
{
    if (!u->raw.p) {
        if (!u->list || *pos >= u->count)
            return false;
        *filter = u->list[(*pos)++];
        return true;
    }
    size_t i = *pos;
    if (i >= u->raw.len || u->raw.len - i < 2)
        return false;
    size_t n = get16(u->raw.p + i);
    if (u->raw.len - i - 2 < n)
        return false;
    filter->p = u->raw.p + i + 2;
    filter->len = (uint32_t)n;
    *pos = i + 2 + n;
    return true;
}

/* ---- encoding ---- */

struct plan {
    uint8_t version;
    uint32_t plen;  /* v5 property block, without its length */
    uint32_t wplen; /* CONNECT's will properties */
    uint32_t rl;    /* remaining length, payload included */
    bool is_bad;    /* some field does not fit its wire form */
};

static inline uint64_t str_size(const struct codec_str *s, bool *is_bad)
{
    *is_bad |= s->len > 0xffff;
    return 2 + (uint64_t)s->len;
}

static inline uint64_t props_size(const struct plan *pl, const struct codec_props *p, unsigned kind,
                                  uint32_t *plen, bool *is_bad)
{
    if (pl->version != CODEC_V5)
        return 0;
    size_t n = codec__props_len(p, codec__props_mask(kind), is_bad);
    *is_bad |= n > CODEC_MAX_REMAINING;
    *plen = (uint32_t)n;
    return codec_varint_size(*plen) + (uint64_t)n;
}

/* v5 acks, DISCONNECT and AUTH leave out what the receiver would assume [MQTT-3.4.2.1]. */
static inline uint64_t tail_size(const struct plan *pl, uint8_t reason)
{
    if (pl->version != CODEC_V5)
        return 0;
    if (pl->plen)
        return 1 + codec_varint_size(pl->plen) + (uint64_t)pl->plen;
    return reason ? 1 : 0;
}

static uint64_t connect_size(struct plan *pl, const struct codec_packet *p)
{
    const struct codec_connect *c = &p->u.connect;
    uint64_t n = (pl->version == CODEC_V31 ? 8 : 6) + 4;

    n += props_size(pl, &p->props, CODEC_CONNECT, &pl->plen, &pl->is_bad);
    n += str_size(&c->client_id, &pl->is_bad);
    if (c->has_will) {
        n += props_size(pl, &c->will_props, CODEC__KIND_WILL, &pl->wplen, &pl->is_bad);
        n += str_size(&c->will_topic, &pl->is_bad) + str_size(&c->will_payload, &pl->is_bad);
    }
    if (c->has_username)
        n += str_size(&c->username, &pl->is_bad);
    if (c->has_password)
        n += str_size(&c->password, &pl->is_bad);
    return n;
}

static uint64_t list_size(struct plan *pl, const struct codec_packet *p)
{
    uint64_t n = 0;

    if (p->type == CODEC_SUBSCRIBE) {
        const struct codec_subscribe *s = &p->u.subscribe;
        if (!s->list)
            return s->raw.len;
        for (uint32_t i = 0; i < s->count; i++)
            n += str_size(&s->list[i].filter, &pl->is_bad) + 1;
        return n;
    }
    const struct codec_unsubscribe *u = &p->u.unsubscribe;
    if (!u->list)
        return u->raw.len;
    for (uint32_t i = 0; i < u->count; i++)
        n += str_size(&u->list[i], &pl->is_bad);
    return n;
}

static bool plan_make(struct plan *pl, uint8_t version, const struct codec_packet *p)
{
    uint64_t n = 0;

    *pl = (struct plan){.version = version};
    if (p->type == CODEC_CONNECT && version == 0)
        pl->version = p->u.connect.version;
    if (pl->version < CODEC_V31 || pl->version > CODEC_V5)
        return false;

    switch (p->type) {
    case CODEC_CONNECT:
        n = connect_size(pl, p);
        break;
    case CODEC_CONNACK:
        n = 2 + props_size(pl, &p->props, CODEC_CONNACK, &pl->plen, &pl->is_bad);
        break;
    case CODEC_PUBLISH:
        n = str_size(&p->u.publish.topic, &pl->is_bad) + (p->u.publish.qos ? 2 : 0);
        n += props_size(pl, &p->props, CODEC_PUBLISH, &pl->plen, &pl->is_bad);
        n += p->u.publish.payload.len;
        break;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        (void)props_size(pl, &p->props, p->type, &pl->plen, &pl->is_bad);
        n = 2 + tail_size(pl, p->u.ack.reason);
        break;
    case CODEC_SUBSCRIBE:
    case CODEC_UNSUBSCRIBE:
        n = 2 + props_size(pl, &p->props, p->type, &pl->plen, &pl->is_bad);
        n += list_size(pl, p);
        break;
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        n = 2 + props_size(pl, &p->props, p->type, &pl->plen, &pl->is_bad);
        if (p->type == CODEC_SUBACK || pl->version == CODEC_V5)
            n += p->u.suback.count;
        break;
    case CODEC_PINGREQ:
    case CODEC_PINGRESP:
        break;
    case CODEC_AUTH:
        if (pl->version != CODEC_V5)
            return false;
        /* fall through */
    case CODEC_DISCONNECT:
        (void)props_size(pl, &p->props, p->type, &pl->plen, &pl->is_bad);
        n = tail_size(pl, p->u.disconnect.reason);
        break;
    default:
        return false;
    }
    if (pl->is_bad || n > CODEC_MAX_REMAINING)
        return false;
    pl->rl = (uint32_t)n;
    return true;
}

size_t codec_size(uint8_t version, const struct codec_packet *p)
{
    struct plan pl;

    if (!plan_make(&pl, version, p))
        return 0;
    return 1 + codec_varint_size(pl.rl) + pl.rl;
}

static inline uint8_t *put16(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)v;
    return o + 2;
}

static inline uint8_t *put_str(uint8_t *o, const struct codec_str *s)
{
    o = put16(o, s->len);
    if (s->len)
        memcpy(o, s->p, s->len);
    return o + s->len;
}

static inline uint8_t *put_props(uint8_t *o, const struct plan *pl, const struct codec_props *p,
                                 unsigned kind, uint32_t plen)
{
    if (pl->version != CODEC_V5)
        return o;
    o = codec_varint_write(o, plen);
    return codec_props_write(o, p, codec__props_mask(kind));
}

static uint8_t *put_connect(uint8_t *o, const struct plan *pl, const struct codec_packet *p)
{
    const struct codec_connect *c = &p->u.connect;
    static const struct codec_str mqtt = {(const uint8_t *)"MQTT", 4};
    static const struct codec_str mqisdp = {(const uint8_t *)"MQIsdp", 6};
    uint8_t f = 0;

    o = put_str(o, pl->version == CODEC_V31 ? &mqisdp : &mqtt);
    *o++ = pl->version;
    f |= c->clean_start ? 0x02 : 0;
    if (c->has_will)
        f |= (uint8_t)(0x04 | (c->will_qos & 3) << 3 | (c->will_retain ? 0x20 : 0));
    f |= c->has_password ? 0x40 : 0;
    f |= c->has_username ? 0x80 : 0;
    *o++ = f;
    o = put16(o, c->keepalive);
    o = put_props(o, pl, &p->props, CODEC_CONNECT, pl->plen);
    o = put_str(o, &c->client_id);
    if (c->has_will) {
        o = put_props(o, pl, &c->will_props, CODEC__KIND_WILL, pl->wplen);
        o = put_str(o, &c->will_topic);
        o = put_str(o, &c->will_payload);
    }
    if (c->has_username)
        o = put_str(o, &c->username);
    if (c->has_password)
        o = put_str(o, &c->password);
    return o;
}

static uint8_t *put_list(uint8_t *o, uint8_t version, const struct codec_packet *p)
{
    if (p->type == CODEC_SUBSCRIBE) {
        const struct codec_subscribe *s = &p->u.subscribe;
        if (!s->list) {
            memcpy(o, s->raw.p, s->raw.len);
            return o + s->raw.len;
        }
        for (uint32_t i = 0; i < s->count; i++) {
            const struct codec_sub_entry *e = &s->list[i];
            o = put_str(o, &e->filter);
            uint8_t opt = e->qos & 3;
            if (version == CODEC_V5)
                opt |= (uint8_t)((e->no_local ? 0x04 : 0) | (e->retain_as_published ? 0x08 : 0) |
                                 (e->retain_handling & 3) << 4);
            *o++ = opt;
        }
        return o;
    }
    const struct codec_unsubscribe *u = &p->u.unsubscribe;
    if (!u->list) {
        memcpy(o, u->raw.p, u->raw.len);
        return o + u->raw.len;
    }
    for (uint32_t i = 0; i < u->count; i++)
        o = put_str(o, &u->list[i]);
    return o;
}

/* Reason code and properties of v5 acks, DISCONNECT and AUTH, as planned by tail_size. */
static uint8_t *put_tail(uint8_t *o, const struct plan *pl, const struct codec_packet *p,
                         uint8_t reason)
{
    if (pl->version != CODEC_V5 || (!pl->plen && !reason))
        return o;
    *o++ = reason;
    if (!pl->plen)
        return o;
    return put_props(o, pl, &p->props, p->type, pl->plen);
}

static uint8_t *put_packet(uint8_t *o, const struct plan *pl, const struct codec_packet *p,
                           bool is_head_only)
{
    static const uint8_t first[16] = {
        [CODEC_CONNECT] = 0x10,     [CODEC_CONNACK] = 0x20,    [CODEC_PUBLISH] = 0x30,
        [CODEC_PUBACK] = 0x40,      [CODEC_PUBREC] = 0x50,     [CODEC_PUBREL] = 0x62,
        [CODEC_PUBCOMP] = 0x70,     [CODEC_SUBSCRIBE] = 0x82,  [CODEC_SUBACK] = 0x90,
        [CODEC_UNSUBSCRIBE] = 0xa2, [CODEC_UNSUBACK] = 0xb0,   [CODEC_PINGREQ] = 0xc0,
        [CODEC_PINGRESP] = 0xd0,    [CODEC_DISCONNECT] = 0xe0, [CODEC_AUTH] = 0xf0,
    };
    const struct codec_publish *m = &p->u.publish;

    *o = first[p->type & 15];
    if (p->type == CODEC_PUBLISH)
        *o |= (uint8_t)((m->dup ? 0x08 : 0) | (m->qos & 3) << 1 | (m->retain ? 1 : 0));
    o = codec_varint_write(o + 1, pl->rl);

    switch (p->type) {
    case CODEC_CONNECT:
        return put_connect(o, pl, p);
    case CODEC_CONNACK:
        *o++ = p->u.connack.session_present ? 1 : 0;
        *o++ = p->u.connack.reason;
        return put_props(o, pl, &p->props, CODEC_CONNACK, pl->plen);
    case CODEC_PUBLISH:
        o = put_str(o, &m->topic);
        if (m->qos)
            o = put16(o, m->packet_id);
        o = put_props(o, pl, &p->props, CODEC_PUBLISH, pl->plen);
        if (is_head_only || !m->payload.len)
            return o;
        memcpy(o, m->payload.p, m->payload.len);
        return o + m->payload.len;
    case CODEC_PUBACK:
    case CODEC_PUBREC:
    case CODEC_PUBREL:
    case CODEC_PUBCOMP:
        o = put16(o, p->u.ack.packet_id);
        return put_tail(o, pl, p, p->u.ack.reason);
    case CODEC_SUBSCRIBE:
    case CODEC_UNSUBSCRIBE:
        o = put16(o, p->u.subscribe.packet_id);
        o = put_props(o, pl, &p->props, p->type, pl->plen);
        return put_list(o, pl->version, p);
    case CODEC_SUBACK:
    case CODEC_UNSUBACK:
        o = put16(o, p->u.suback.packet_id);
        o = put_props(o, pl, &p->props, p->type, pl->plen);
        if ((p->type == CODEC_SUBACK || pl->version == CODEC_V5) && p->u.suback.count) {
            memcpy(o, p->u.suback.reasons, p->u.suback.count);
            o += p->u.suback.count;
        }
        return o;
    case CODEC_DISCONNECT:
    case CODEC_AUTH:
        return put_tail(o, pl, p, p->u.disconnect.reason);
    default:
        return o;
    }
}

size_t codec_write(uint8_t *out, uint8_t version, const struct codec_packet *p)
{
    struct plan pl;

    if (!plan_make(&pl, version, p))
        return 0;
    return (size_t)(put_packet(out, &pl, p, false) - out);
}

size_t codec_publish_head_size(uint8_t version, const struct codec_packet *p)
{
    struct plan pl;

    if (p->type != CODEC_PUBLISH || !plan_make(&pl, version, p))
        return 0;
    return 1 + codec_varint_size(pl.rl) + pl.rl - p->u.publish.payload.len;
}

size_t codec_publish_head_write(uint8_t *out, uint8_t version, const struct codec_packet *p)
{
    struct plan pl;

    if (p->type != CODEC_PUBLISH || !plan_make(&pl, version, p))
        return 0;
    return (size_t)(put_packet(out, &pl, p, true) - out);
}
