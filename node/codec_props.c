/*
 * MQTT 5 properties, table-driven. One row per identifier gives the value type, the lowest
 * legal value and the field of struct codec_props that holds it; one mask per packet type says
 * which identifiers that packet may carry. Decoding, sizing and writing are each a single loop
 * over those tables, so a new property is one row and one mask bit, never a new branch.
 *
 * User properties are not copied: decoding records the span from the first to the end of the
 * last entry, and the encoder and iterator walk that span, skipping any other property a peer
 * interleaved between user properties.
 */
#include <stddef.h>
#include <string.h>

#include "node/codec.h"
#include "node/err.h"

enum prop_type { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VARINT, PT_UTF8, PT_BIN, PT_PAIR };

struct prop_def {
    uint8_t type;
    uint8_t min; /* lowest legal value; every byte property is 0 or 1 */
    uint16_t off;
};

#define PROP_MAX CODEC_PROP_SHARED_SUB_AVAILABLE
#define F(field) ((uint16_t)offsetof(struct codec_props, field))

static const struct prop_def defs[PROP_MAX + 1] = {
    [CODEC_PROP_PAYLOAD_FORMAT] = {PT_BYTE, 0, F(payload_format)},
    [CODEC_PROP_MESSAGE_EXPIRY] = {PT_U32, 0, F(message_expiry)},
    [CODEC_PROP_CONTENT_TYPE] = {PT_UTF8, 0, F(content_type)},
    [CODEC_PROP_RESPONSE_TOPIC] = {PT_UTF8, 0, F(response_topic)},
    [CODEC_PROP_CORRELATION_DATA] = {PT_BIN, 0, F(correlation_data)},
    [CODEC_PROP_SUBSCRIPTION_ID] = {PT_VARINT, 1, F(sub_id)},
    [CODEC_PROP_SESSION_EXPIRY] = {PT_U32, 0, F(session_expiry)},
    [CODEC_PROP_ASSIGNED_CLIENT_ID] = {PT_UTF8, 0, F(assigned_client_id)},
    [CODEC_PROP_SERVER_KEEPALIVE] = {PT_U16, 0, F(server_keepalive)},
    [CODEC_PROP_AUTH_METHOD] = {PT_UTF8, 0, F(auth_method)},
    [CODEC_PROP_AUTH_DATA] = {PT_BIN, 0, F(auth_data)},
    [CODEC_PROP_REQUEST_PROBLEM_INFO] = {PT_BYTE, 0, F(request_problem_info)},
    [CODEC_PROP_WILL_DELAY] = {PT_U32, 0, F(will_delay)},
    [CODEC_PROP_REQUEST_RESPONSE_INFO] = {PT_BYTE, 0, F(request_response_info)},
    [CODEC_PROP_RESPONSE_INFO] = {PT_UTF8, 0, F(response_info)},
    [CODEC_PROP_SERVER_REFERENCE] = {PT_UTF8, 0, F(server_reference)},
    [CODEC_PROP_REASON_STRING] = {PT_UTF8, 0, F(reason_string)},
    [CODEC_PROP_RECEIVE_MAX] = {PT_U16, 1, F(receive_max)},
    [CODEC_PROP_TOPIC_ALIAS_MAX] = {PT_U16, 0, F(topic_alias_max)},
    [CODEC_PROP_TOPIC_ALIAS] = {PT_U16, 1, F(topic_alias)},
    [CODEC_PROP_MAX_QOS] = {PT_BYTE, 0, F(max_qos)},
    [CODEC_PROP_RETAIN_AVAILABLE] = {PT_BYTE, 0, F(retain_available)},
    [CODEC_PROP_USER_PROPERTY] = {PT_PAIR, 0, F(user_props)},
    [CODEC_PROP_MAX_PACKET_SIZE] = {PT_U32, 1, F(max_packet_size)},
    [CODEC_PROP_WILDCARD_SUB_AVAILABLE] = {PT_BYTE, 0, F(wildcard_sub_available)},
    [CODEC_PROP_SUB_ID_AVAILABLE] = {PT_BYTE, 0, F(sub_id_available)},
    [CODEC_PROP_SHARED_SUB_AVAILABLE] = {PT_BYTE, 0, F(shared_sub_available)},
};

#define B(name)   CODEC_BIT(CODEC_PROP_##name)
#define ACK_PROPS (B(REASON_STRING) | B(USER_PROPERTY))

/* MQTT 5.0 section 2.2.2.2, by packet. Index 0 is CONNECT's will properties. */
static const uint64_t kind_props[16] = {
    [CODEC__KIND_WILL] = B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(CONTENT_TYPE) |
                         B(RESPONSE_TOPIC) | B(CORRELATION_DATA) | B(WILL_DELAY) | B(USER_PROPERTY),
    [CODEC_CONNECT] = B(SESSION_EXPIRY) | B(RECEIVE_MAX) | B(MAX_PACKET_SIZE) | B(TOPIC_ALIAS_MAX) |
                      B(REQUEST_RESPONSE_INFO) | B(REQUEST_PROBLEM_INFO) | B(USER_PROPERTY) |
                      B(AUTH_METHOD) | B(AUTH_DATA),
    [CODEC_CONNACK] = B(SESSION_EXPIRY) | B(RECEIVE_MAX) | B(MAX_QOS) | B(RETAIN_AVAILABLE) |
                      B(MAX_PACKET_SIZE) | B(ASSIGNED_CLIENT_ID) | B(TOPIC_ALIAS_MAX) |
                      B(REASON_STRING) | B(USER_PROPERTY) | B(WILDCARD_SUB_AVAILABLE) |
                      B(SUB_ID_AVAILABLE) | B(SHARED_SUB_AVAILABLE) | B(SERVER_KEEPALIVE) |
                      B(RESPONSE_INFO) | B(SERVER_REFERENCE) | B(AUTH_METHOD) | B(AUTH_DATA),
    [CODEC_PUBLISH] = B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(TOPIC_ALIAS) | B(RESPONSE_TOPIC) |
                      B(CORRELATION_DATA) | B(USER_PROPERTY) | B(SUBSCRIPTION_ID) | B(CONTENT_TYPE),
    [CODEC_PUBACK] = ACK_PROPS,
    [CODEC_PUBREC] = ACK_PROPS,
    [CODEC_PUBREL] = ACK_PROPS,
    [CODEC_PUBCOMP] = ACK_PROPS,
    [CODEC_SUBSCRIBE] = B(SUBSCRIPTION_ID) | B(USER_PROPERTY),
    [CODEC_SUBACK] = ACK_PROPS,
    [CODEC_UNSUBSCRIBE] = B(USER_PROPERTY),
    [CODEC_UNSUBACK] = ACK_PROPS,
    [CODEC_DISCONNECT] =
        B(SESSION_EXPIRY) | B(REASON_STRING) | B(USER_PROPERTY) | B(SERVER_REFERENCE),
    [CODEC_AUTH] = B(AUTH_METHOD) | B(AUTH_DATA) | B(REASON_STRING) | B(USER_PROPERTY),
};

/* Every defined identifier; other bits of `has` are ignored by the encoder. */
#define ALL_PROPS                                                                                  \
    (kind_props[CODEC__KIND_WILL] | kind_props[CODEC_CONNECT] | kind_props[CODEC_CONNACK] |        \
     kind_props[CODEC_PUBLISH] | kind_props[CODEC_SUBSCRIBE])

uint64_t codec__props_mask(unsigned kind)
{
    return kind_props[kind & 15];
}

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* A minimal-length variable byte integer of at most 4 bytes. */
static int varint_read(const uint8_t **pp, const uint8_t *end, uint32_t *v)
{
    const uint8_t *p = *pp;
    uint32_t x = 0;

    for (unsigned i = 0; i < 4; i++) {
        if (p >= end)
            return ERR_MALFORMED;
        uint8_t b = *p++;
        x |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return ERR_MALFORMED;
            *v = x;
            *pp = p;
            return 0;
        }
    }
    return ERR_MALFORMED;
}

static inline bool str_read(const uint8_t **pp, const uint8_t *end, struct codec_str *s)
{
    const uint8_t *p = *pp;

    if (end - p < 2)
        return false;
    uint16_t n = get16(p);
    if ((size_t)(end - p - 2) < n)
        return false;
    s->p = p + 2;
    s->len = n;
    *pp = p + 2 + n;
    return true;
}

static inline int utf8_read(const uint8_t **pp, const uint8_t *end, struct codec_str *s)
{
    if (!str_read(pp, end, s) || !codec_utf8_valid(s->p, s->len))
        return ERR_MALFORMED;
    return 0;
}

static int prop_value(const uint8_t **pp, const uint8_t *e, unsigned id, struct codec_props *out)
{
    const struct prop_def *d = &defs[id];
    uint8_t *f = (uint8_t *)out + d->off;
    const uint8_t *p = *pp;
    struct codec_str s, v;
    uint32_t x;
    int rc;

    switch (d->type) {
    case PT_BYTE:
        if (p >= e)
            return ERR_MALFORMED;
        if (*p > 1)
            return ERR_PROTOCOL;
        *f = *p++;
        break;
    case PT_U16: {
        if (e - p < 2)
            return ERR_MALFORMED;
        uint16_t u = get16(p);
        if (u < d->min)
            return ERR_PROTOCOL;
        memcpy(f, &u, sizeof(u));
        p += 2;
        break;
    }
    case PT_U32:
        if (e - p < 4)
            return ERR_MALFORMED;
        x = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (x < d->min)
            return ERR_PROTOCOL;
        memcpy(f, &x, sizeof(x));
        p += 4;
        break;
    case PT_VARINT:
        rc = varint_read(&p, e, &x);
        if (rc)
            return rc;
        if (x < d->min)
            return ERR_PROTOCOL;
        if (!CODEC_HAS(out, id)) /* several only in PUBLISH to a client: keep the first */
            memcpy(f, &x, sizeof(x));
        break;
    case PT_UTF8:
        rc = utf8_read(&p, e, &s);
        if (rc)
            return rc;
        /* A response topic is a topic name: non-empty, no wildcards [MQTT-3.3.2-14]. */
        if (id == CODEC_PROP_RESPONSE_TOPIC &&
            (s.len == 0 || memchr(s.p, '+', s.len) || memchr(s.p, '#', s.len)))
            return ERR_PROTOCOL;
        memcpy(f, &s, sizeof(s));
        break;
    case PT_BIN:
        if (!str_read(&p, e, &s))
            return ERR_MALFORMED;
        memcpy(f, &s, sizeof(s));
        break;
    case PT_PAIR:
        rc = utf8_read(&p, e, &s);
        if (rc == 0)
            rc = utf8_read(&p, e, &v);
        if (rc)
            return rc;
        break;
    default:
        return ERR_MALFORMED;
    }
    *pp = p;
    return 0;
}

int codec__props_read(const uint8_t **pp, const uint8_t *end, unsigned kind, uint64_t deny,
                      struct codec_props *out)
{
    const uint8_t *p = *pp;
    const uint8_t *user = NULL, *user_end = NULL;
    uint32_t n;
    int rc;

    rc = varint_read(&p, end, &n);
    if (rc)
        return rc;
    if ((size_t)(end - p) < n)
        return ERR_MALFORMED;

    const uint8_t *e = p + n;
    const uint64_t allowed = kind_props[kind & 15] & ~deny;
    /* Subscription ids repeat only in a server's PUBLISH; a client's is in deny. */
    const uint64_t multi = B(USER_PROPERTY) | (kind == CODEC_PUBLISH ? B(SUBSCRIPTION_ID) : 0);

    while (p < e) {
        const uint8_t *start = p;
        unsigned id = *p++;
        if (id > PROP_MAX || defs[id].type == PT_NONE)
            return ERR_MALFORMED;
        uint64_t bit = CODEC_BIT(id);
        if (!(allowed & bit) || (out->has & bit & ~multi))
            return ERR_PROTOCOL;
        rc = prop_value(&p, e, id, out);
        if (rc)
            return rc;
        out->has |= bit;
        if (id == CODEC_PROP_USER_PROPERTY) {
            if (!user)
                user = start;
            user_end = p;
        }
    }
    if (user) {
        out->user_props.p = user;
        out->user_props.len = (uint32_t)(user_end - user);
    }
    *pp = e;
    return 0;
}

/* Skips one property entry of a run; false if it is truncated or unknown. */
static bool prop_skip(const uint8_t **pp, const uint8_t *end, unsigned *id)
{
    const uint8_t *p = *pp;
    struct codec_str s;
    uint32_t x;

    if (p >= end)
        return false;
    *id = *p++;
    if (*id > PROP_MAX)
        return false;
    switch (defs[*id].type) {
    case PT_BYTE:
    case PT_U16:
    case PT_U32: {
        static const uint8_t width[] = {[PT_BYTE] = 1, [PT_U16] = 2, [PT_U32] = 4};
        size_t w = width[defs[*id].type];
        if ((size_t)(end - p) < w)
            return false;
        p += w;
        break;
    }
    case PT_VARINT:
        if (varint_read(&p, end, &x))
            return false;
        break;
    case PT_UTF8:
    case PT_BIN:
        if (!str_read(&p, end, &s))
            return false;
        break;
    case PT_PAIR:
        if (!str_read(&p, end, &s) || !str_read(&p, end, &s))
            return false;
        break;
    default:
        return false;
    }
    *pp = p;
    return true;
}

bool codec_user_prop_next(const struct codec_str *run, size_t *pos, struct codec_str *key,
                          struct codec_str *val)
{
    if (!run->p)
        return false;
    const uint8_t *end = run->p + run->len;
    const uint8_t *p = run->p + *pos;
    unsigned id;

    while (p < end) {
        const uint8_t *start = p;
        if (!prop_skip(&p, end, &id))
            return false;
        if (id != CODEC_PROP_USER_PROPERTY)
            continue;
        start += 1;
        (void)str_read(&start, p, key);
        (void)str_read(&start, p, val);
        *pos = (size_t)(p - run->p);
        return true;
    }
    return false;
}

/* Bytes of the user-property entries in a run (all of it unless a peer interleaved others). */
static size_t user_run_size(const struct codec_str *run)
{
    const uint8_t *p = run->p;
    const uint8_t *end = p + run->len;
    size_t n = 0;
    unsigned id;

    if (!p)
        return 0;
    while (p < end) {
        const uint8_t *start = p;
        if (!prop_skip(&p, end, &id))
            break;
        if (id == CODEC_PROP_USER_PROPERTY)
            n += (size_t)(p - start);
    }
    return n;
}

static uint8_t *user_run_write(uint8_t *out, const struct codec_str *run)
{
    const uint8_t *p = run->p;
    const uint8_t *end = p + run->len;
    const uint8_t *span = p; /* start of the pending stretch of user properties */
    unsigned id;

    if (!p)
        return out;
    while (p < end) {
        const uint8_t *start = p;
        if (!prop_skip(&p, end, &id)) {
            p = start;
            break;
        }
        if (id != CODEC_PROP_USER_PROPERTY) {
            memcpy(out, span, (size_t)(start - span));
            out += start - span;
            span = p;
        }
    }
    memcpy(out, span, (size_t)(p - span));
    return out + (p - span);
}

size_t codec__props_len(const struct codec_props *p, uint64_t mask, bool *is_bad)
{
    uint64_t m = p->has & mask & ALL_PROPS;
    size_t n = 0;

    while (m) {
        unsigned id = (unsigned)__builtin_ctzll(m);
        m &= m - 1;
        const struct prop_def *d = &defs[id];
        const uint8_t *f = (const uint8_t *)p + d->off;
        struct codec_str s;

        switch (d->type) {
        case PT_BYTE:
            n += 2;
            break;
        case PT_U16:
            n += 3;
            break;
        case PT_U32:
            n += 5;
            break;
        case PT_VARINT:
            if (p->n_sub_ids == 0 || !p->sub_ids) {
                *is_bad |= p->sub_id == 0 || p->sub_id > CODEC_MAX_REMAINING;
                n += 1 + codec_varint_size(p->sub_id);
                break;
            }
            for (uint32_t i = 0; i < p->n_sub_ids; i++) {
                uint32_t v = p->sub_ids[i];
                *is_bad |= v == 0 || v > CODEC_MAX_REMAINING;
                n += 1 + codec_varint_size(v);
            }
            break;
        case PT_UTF8:
        case PT_BIN:
            memcpy(&s, f, sizeof(s));
            *is_bad |= s.len > 0xffff;
            n += 3 + (size_t)s.len;
            break;
        case PT_PAIR:
            n += user_run_size(&p->user_props);
            break;
        default:
            break;
        }
    }
    return n;
}

size_t codec_props_size(const struct codec_props *p, uint64_t mask)
{
    bool is_bad = false;

    return codec__props_len(p, mask, &is_bad);
}

static inline uint8_t *put16(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)v;
    return o + 2;
}

uint8_t *codec_props_write(uint8_t *out, const struct codec_props *p, uint64_t mask)
{
    uint64_t m = p->has & mask & ALL_PROPS;

    while (m) {
        unsigned id = (unsigned)__builtin_ctzll(m);
        m &= m - 1;
        const struct prop_def *d = &defs[id];
        const uint8_t *f = (const uint8_t *)p + d->off;
        struct codec_str s;
        uint16_t u;
        uint32_t x;

        if (d->type == PT_PAIR) {
            out = user_run_write(out, &p->user_props);
            continue;
        }
        if (d->type == PT_VARINT) {
            const uint32_t *ids = p->n_sub_ids && p->sub_ids ? p->sub_ids : &p->sub_id;
            uint32_t k = p->n_sub_ids && p->sub_ids ? p->n_sub_ids : 1;
            for (uint32_t i = 0; i < k; i++) {
                *out++ = (uint8_t)id;
                out = codec_varint_write(out, ids[i]);
            }
            continue;
        }
        *out++ = (uint8_t)id;
        switch (d->type) {
        case PT_BYTE:
            *out++ = *f;
            break;
        case PT_U16:
            memcpy(&u, f, sizeof(u));
            out = put16(out, u);
            break;
        case PT_U32:
            memcpy(&x, f, sizeof(x));
            out = put16(out, x >> 16);
            out = put16(out, x);
            break;
        case PT_UTF8:
        case PT_BIN:
            memcpy(&s, f, sizeof(s));
            out = put16(out, s.len);
            if (s.len)
                memcpy(out, s.p, s.len);
            out += s.len;
            break;
        default:
            break;
        }
    }
    return out;
}
