/*
 * The node-to-node wire format: length-prefixed protobuf-c Frames in and out, and plain C
 * views of them for the rest of cluster/. This is the only file that sees protobuf-c types.
 *
 * Encoding builds the protobuf-c structs in one scratch block (on the stack when the frame is
 * small), sizes the frame once and packs it straight into the output buffer after its prefix.
 * protobuf-c wants NUL-terminated strings, so the scratch block also holds terminated copies of
 * the caller's strings; bytes fields point at the caller's memory.
 *
 * Decoding first walks the raw body for string fields at every depth (valid UTF-8, no NUL):
 * once protobuf-c has turned them into C strings an embedded NUL can no longer be seen, and its
 * own UTF-8 check is partial. Then protobuf-c unpacks the body, and the views (arrays of
 * wire_str, wire_fwd, ...) are carved from one allocation that also keeps the unpacked
 * message, so a frame costs protobuf-c's allocations plus one.
 */
#include "cluster/wire.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "cluster.pb-c.h"
#include "node/err.h"
#include "node/log.h"

/* The generated oneof cases carry the whole package name; this keeps switches readable. */
#define PB_BODY(NAME) SHOAL__CLUSTER__V1__FRAME__BODY_##NAME

/* Nesting of the schema is Frame > list > element: 3. Deeper input is malformed; the margin
 * leaves room for the schema to grow a level without touching the scanner. */
#define SCAN_DEPTH 8

/* Scratch on the stack covers the usual control frame and a modest Forward batch. */
#define SCRATCH_STACK 4096

static const uint8_t empty_bytes[1];

/* ---- encoding ---- */

struct scratch {
    unsigned char *p;
    size_t used;
    size_t cap;
    union {
        max_align_t align;
        unsigned char b[SCRATCH_STACK];
    } stack;
};

/* Every piece taken from the scratch is rounded up so that the next one stays aligned. */
static size_t span(size_t n)
{
    const size_t a = _Alignof(max_align_t);
    return (n + a - 1) & ~(a - 1);
}

static size_t str_need(struct wire_str s)
{
    return span(s.len + 1);
}

static void scratch_open(struct scratch *s, size_t need)
{
    s->used = 0;
    if (need <= sizeof(s->stack.b)) {
        s->p = s->stack.b;
        s->cap = sizeof(s->stack.b);
    } else {
        s->p = xmalloc(need);
        s->cap = need;
    }
}

static void scratch_close(struct scratch *s)
{
    if (s->p != s->stack.b)
        free(s->p);
    s->p = NULL;
}

/* The callers sized the scratch for everything they take, so running out is a bug here. */
static void *scratch_take(struct scratch *s, size_t n)
{
    void *p = s->p + s->used;
    assert(span(n) <= s->cap - s->used);
    s->used += span(n);
    return p;
}

/* A NUL-terminated copy of v. A NUL inside v would end the string early: callers only pass
 * strings that were validated (topics, client ids, node names), which never hold one. */
static char *scratch_str(struct scratch *s, struct wire_str v)
{
    char *c = scratch_take(s, v.len + 1);
    if (v.len)
        memcpy(c, v.p, v.len);
    c[v.len] = '\0';
    return c;
}

static char **scratch_strs(struct scratch *s, const struct wire_str *v, size_t n)
{
    char **a = scratch_take(s, n * sizeof(*a));
    for (size_t i = 0; i < n; i++)
        a[i] = scratch_str(s, v[i]);
    return a;
}

static size_t strs_need(const struct wire_str *v, size_t n)
{
    size_t need = span(n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        need += str_need(v[i]);
    return need;
}

static ProtobufCBinaryData bin_of(struct wire_bytes b)
{
    return (ProtobufCBinaryData){.len = b.len, .data = b.len ? (uint8_t *)b.p : NULL};
}

/*
 * Appends fr with its big-endian length prefix. A body over WIRE_MAX_FRAME would be refused
 * by every peer, so it is dropped here with an error: callers cut batches well below it, and
 * reaching it means a caller let one grow without bound.
 */
static void put_frame(struct buf *out, const Shoal__Cluster__V1__Frame *fr)
{
    size_t n = protobuf_c_message_get_packed_size(&fr->base);
    if (NEVER(n > (size_t)WIRE_MAX_FRAME)) {
        log_error("wire", "frame dropped: body over the limit type=%d size=%zu max=%u",
                  (int)fr->body_case, n, WIRE_MAX_FRAME);
        return;
    }
    uint8_t *p = buf_reserve(out, WIRE_LEN_PREFIX + n);
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    size_t w = protobuf_c_message_pack(&fr->base, p + WIRE_LEN_PREFIX);
    assert(w == n);
    (void)w;
    buf_commit(out, WIRE_LEN_PREFIX + n);
}

void wire_put_hello(struct buf *out, const struct wire_hello *h)
{
    struct scratch s;
    Shoal__Cluster__V1__Hello m = SHOAL__CLUSTER__V1__HELLO__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    scratch_open(&s, str_need(h->cluster_name) + str_need(h->node_id) + str_need(h->advertise));
    m.cluster_name = scratch_str(&s, h->cluster_name);
    m.node_id = scratch_str(&s, h->node_id);
    m.incarnation = h->incarnation;
    m.protocol_version = h->protocol_version;
    m.nonce = bin_of(h->nonce);
    m.advertise = scratch_str(&s, h->advertise);
    fr.body_case = PB_BODY(HELLO);
    fr.hello = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_proof(struct buf *out, struct wire_bytes hmac)
{
    Shoal__Cluster__V1__Proof m = SHOAL__CLUSTER__V1__PROOF__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.hmac = bin_of(hmac);
    fr.body_case = PB_BODY(PROOF);
    fr.proof = &m;
    put_frame(out, &fr);
}

void wire_put_ping(struct buf *out, uint64_t seq)
{
    Shoal__Cluster__V1__Ping m = SHOAL__CLUSTER__V1__PING__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.seq = seq;
    fr.body_case = PB_BODY(PING);
    fr.ping = &m;
    put_frame(out, &fr);
}

void wire_put_ack(struct buf *out, uint64_t seq)
{
    Shoal__Cluster__V1__Ack m = SHOAL__CLUSTER__V1__ACK__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.seq = seq;
    fr.body_case = PB_BODY(ACK);
    fr.ack = &m;
    put_frame(out, &fr);
}

void wire_put_members(struct buf *out, const struct wire_member *v, size_t n)
{
    struct scratch s;
    Shoal__Cluster__V1__MemberList m = SHOAL__CLUSTER__V1__MEMBER_LIST__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;
    size_t need = span(n * sizeof(Shoal__Cluster__V1__Member)) +
                  span(n * sizeof(Shoal__Cluster__V1__Member *));

    for (size_t i = 0; i < n; i++)
        need += str_need(v[i].node_id) + str_need(v[i].advertise);
    scratch_open(&s, need);
    Shoal__Cluster__V1__Member *e = scratch_take(&s, n * sizeof(*e));
    m.members = scratch_take(&s, n * sizeof(Shoal__Cluster__V1__Member *));
    m.n_members = n;
    for (size_t i = 0; i < n; i++) {
        Shoal__Cluster__V1__Member init = SHOAL__CLUSTER__V1__MEMBER__INIT;
        e[i] = init;
        e[i].node_id = scratch_str(&s, v[i].node_id);
        e[i].advertise = scratch_str(&s, v[i].advertise);
        e[i].incarnation = v[i].incarnation;
        m.members[i] = &e[i];
    }
    fr.body_case = PB_BODY(MEMBERS);
    fr.members = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_route_delta(struct buf *out, uint64_t seq, const struct wire_str *added,
                          size_t n_added, const struct wire_str *removed, size_t n_removed)
{
    struct scratch s;
    Shoal__Cluster__V1__RouteDelta m = SHOAL__CLUSTER__V1__ROUTE_DELTA__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    scratch_open(&s, strs_need(added, n_added) + strs_need(removed, n_removed));
    m.seq = seq;
    m.added = scratch_strs(&s, added, n_added);
    m.n_added = n_added;
    m.removed = scratch_strs(&s, removed, n_removed);
    m.n_removed = n_removed;
    fr.body_case = PB_BODY(ROUTE_DELTA);
    fr.route_delta = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_route_snapshot(struct buf *out, uint64_t seq, const struct wire_str *filters,
                             size_t n)
{
    struct scratch s;
    Shoal__Cluster__V1__RouteSnapshot m = SHOAL__CLUSTER__V1__ROUTE_SNAPSHOT__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    scratch_open(&s, strs_need(filters, n));
    m.seq = seq;
    m.filters = scratch_strs(&s, filters, n);
    m.n_filters = n;
    fr.body_case = PB_BODY(ROUTE_SNAPSHOT);
    fr.route_snapshot = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_route_digest(struct buf *out, uint64_t seq, uint64_t digest, uint32_t count)
{
    Shoal__Cluster__V1__RouteDigest m = SHOAL__CLUSTER__V1__ROUTE_DIGEST__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.seq = seq;
    m.digest = digest;
    m.count = count;
    fr.body_case = PB_BODY(ROUTE_DIGEST);
    fr.route_digest = &m;
    put_frame(out, &fr);
}

void wire_put_route_snapshot_request(struct buf *out, uint64_t have_seq)
{
    Shoal__Cluster__V1__RouteSnapshotRequest m = SHOAL__CLUSTER__V1__ROUTE_SNAPSHOT_REQUEST__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.have_seq = have_seq;
    fr.body_case = PB_BODY(ROUTE_SNAPSHOT_REQUEST);
    fr.route_snapshot_request = &m;
    put_frame(out, &fr);
}

void wire_put_forward(struct buf *out, const struct wire_fwd *v, size_t n)
{
    struct scratch s;
    Shoal__Cluster__V1__Forward m = SHOAL__CLUSTER__V1__FORWARD__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;
    size_t need = span(n * sizeof(Shoal__Cluster__V1__ForwardMsg)) +
                  span(n * sizeof(Shoal__Cluster__V1__ForwardMsg *));

    for (size_t i = 0; i < n; i++)
        need += strs_need(v[i].shared, v[i].n_shared) + str_need(v[i].replay_of) +
                str_need(v[i].pub_node);
    scratch_open(&s, need);
    Shoal__Cluster__V1__ForwardMsg *e = scratch_take(&s, n * sizeof(*e));
    m.msgs = scratch_take(&s, n * sizeof(Shoal__Cluster__V1__ForwardMsg *));
    m.n_msgs = n;
    for (size_t i = 0; i < n; i++) {
        Shoal__Cluster__V1__ForwardMsg init = SHOAL__CLUSTER__V1__FORWARD_MSG__INIT;
        e[i] = init;
        e[i].id = v[i].id;
        e[i].msg = bin_of(v[i].msg);
        e[i].plain = v[i].plain;
        e[i].shared = scratch_strs(&s, v[i].shared, v[i].n_shared);
        e[i].n_shared = v[i].n_shared;
        e[i].pub_seq = v[i].pub_seq;
        if (v[i].replay_of.len) {
            e[i].replay_of = scratch_str(&s, v[i].replay_of);
            e[i].pub_node = scratch_str(&s, v[i].pub_node);
        }
        m.msgs[i] = &e[i];
    }
    fr.body_case = PB_BODY(FORWARD);
    fr.forward = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_forward_ack(struct buf *out, const uint64_t *ids, size_t n, const uint64_t *failed,
                          size_t n_failed)
{
    Shoal__Cluster__V1__ForwardAck m = SHOAL__CLUSTER__V1__FORWARD_ACK__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    /* packing only reads the ids */
    m.ids = (uint64_t *)ids;
    m.n_ids = n;
    m.failed = (uint64_t *)failed;
    m.n_failed = n_failed;
    fr.body_case = PB_BODY(FORWARD_ACK);
    fr.forward_ack = &m;
    put_frame(out, &fr);
}

void wire_put_takeover(struct buf *out, uint64_t req, struct wire_str client_id, uint64_t epoch)
{
    struct scratch s;
    Shoal__Cluster__V1__Takeover m = SHOAL__CLUSTER__V1__TAKEOVER__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    scratch_open(&s, str_need(client_id));
    m.req = req;
    m.client_id = scratch_str(&s, client_id);
    m.epoch = epoch;
    fr.body_case = PB_BODY(TAKEOVER);
    fr.takeover = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

void wire_put_takeover_ack(struct buf *out, uint64_t req, int32_t result)
{
    Shoal__Cluster__V1__TakeoverAck m = SHOAL__CLUSTER__V1__TAKEOVER_ACK__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;

    m.req = req;
    m.result = result;
    fr.body_case = PB_BODY(TAKEOVER_ACK);
    fr.takeover_ack = &m;
    put_frame(out, &fr);
}

void wire_put_retain_notice(struct buf *out, const struct wire_retain *v, size_t n)
{
    struct scratch s;
    Shoal__Cluster__V1__RetainNotice m = SHOAL__CLUSTER__V1__RETAIN_NOTICE__INIT;
    Shoal__Cluster__V1__Frame fr = SHOAL__CLUSTER__V1__FRAME__INIT;
    size_t need = span(n * sizeof(Shoal__Cluster__V1__RetainChange)) +
                  span(n * sizeof(Shoal__Cluster__V1__RetainChange *));

    for (size_t i = 0; i < n; i++)
        need += str_need(v[i].topic);
    scratch_open(&s, need);
    Shoal__Cluster__V1__RetainChange *e = scratch_take(&s, n * sizeof(*e));
    m.changes = scratch_take(&s, n * sizeof(Shoal__Cluster__V1__RetainChange *));
    m.n_changes = n;
    for (size_t i = 0; i < n; i++) {
        Shoal__Cluster__V1__RetainChange init = SHOAL__CLUSTER__V1__RETAIN_CHANGE__INIT;
        e[i] = init;
        e[i].topic = scratch_str(&s, v[i].topic);
        e[i].msg = bin_of(v[i].msg);
        m.changes[i] = &e[i];
    }
    fr.body_case = PB_BODY(RETAIN_NOTICE);
    fr.retain_notice = &m;
    put_frame(out, &fr);
    scratch_close(&s);
}

/* ---- decoding: raw string check ---- */

/* Valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF) without U+0000. */
static bool utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07u;
        } else {
            return false; /* continuation byte, C0/C1 or F5..FF as a lead */
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* Reads a base-128 varint of at most 10 bytes from [*p, end). */
static bool varint_read(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/*
 * Checks every string field of the Frame body [p, p + n) at any depth, guided by the
 * generated descriptors. Sub-messages are entered through an explicit stack: the schema is
 * not recursive, and peer bytes never drive recursion here. Fields this build does not know
 * are skipped by wire type, so newer peers' additions pass. Returns 0 or ERR_MALFORMED.
 */
static int scan_strings(const uint8_t *p, size_t n)
{
    struct {
        const ProtobufCMessageDescriptor *d;
        const uint8_t *end;
    } st[SCAN_DEPTH];
    int top = 0;
    uint64_t key, len;

    st[0].d = &shoal__cluster__v1__frame__descriptor;
    st[0].end = p + n;
    while (top >= 0) {
        const uint8_t *end = st[top].end;
        if (p == end) {
            top--;
            continue;
        }
        if (!varint_read(&p, end, &key) || key >> 3 > UINT32_MAX)
            return ERR_MALFORMED;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(st[top].d, (unsigned)(key >> 3));
        bool is_str = fd && fd->type == PROTOBUF_C_TYPE_STRING;
        bool is_msg = fd && fd->type == PROTOBUF_C_TYPE_MESSAGE;
        if ((is_str || is_msg) && (key & 7) != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            return ERR_MALFORMED;
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!varint_read(&p, end, &len))
                return ERR_MALFORMED;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            len = (key & 7) == PROTOBUF_C_WIRE_TYPE_64BIT ? 8 : 4;
            if ((size_t)(end - p) < len)
                return ERR_MALFORMED;
            p += len;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
            if (!varint_read(&p, end, &len) || len > (size_t)(end - p))
                return ERR_MALFORMED;
            if (is_msg) {
                if (top + 1 == SCAN_DEPTH)
                    return ERR_MALFORMED;
                top++;
                st[top].d = fd->descriptor;
                st[top].end = p + len;
                break;
            }
            if (is_str && !utf8_ok(p, (size_t)len))
                return ERR_MALFORMED;
            p += len;
            break;
        default:
            return ERR_MALFORMED; /* groups: proto3 has none */
        }
    }
    return 0;
}

/* ---- decoding: views ---- */

/* What f->priv points to: the unpacked message, then the view arrays. */
struct wire_store {
    Shoal__Cluster__V1__Frame *msg;
};

static size_t store_head(void)
{
    return span(sizeof(struct wire_store));
}

static struct wire_str str_view(const char *s)
{
    /* The raw scan ruled out embedded NULs, so strlen is the wire length. */
    if (!s)
        return (struct wire_str){"", 0};
    return (struct wire_str){s, strlen(s)};
}

static struct wire_bytes bytes_view(ProtobufCBinaryData b)
{
    /* a stable non-NULL pointer, so that callers may memcpy an empty field */
    return (struct wire_bytes){b.len ? b.data : empty_bytes, b.len};
}

static const struct wire_str *strs_view(struct wire_str *dst, char *const *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = str_view(src[i]);
    return dst;
}

/* Bytes of view arrays that m needs beyond the store's head. */
static size_t views_need(const Shoal__Cluster__V1__Frame *m)
{
    size_t n = 0;

    switch (m->body_case) {
    case PB_BODY(MEMBERS):
        return span(m->members->n_members * sizeof(struct wire_member));
    case PB_BODY(ROUTE_DELTA):
        return span(m->route_delta->n_added * sizeof(struct wire_str)) +
               span(m->route_delta->n_removed * sizeof(struct wire_str));
    case PB_BODY(ROUTE_SNAPSHOT):
        return span(m->route_snapshot->n_filters * sizeof(struct wire_str));
    case PB_BODY(FORWARD):
        for (size_t i = 0; i < m->forward->n_msgs; i++)
            n += span(m->forward->msgs[i]->n_shared * sizeof(struct wire_str));
        return span(m->forward->n_msgs * sizeof(struct wire_fwd)) + n;
    case PB_BODY(RETAIN_NOTICE):
        return span(m->retain_notice->n_changes * sizeof(struct wire_retain));
    default:
        return 0;
    }
}

/* Hands out the view arrays from the store's tail, in the order views_need counted them. */
static void *carve(unsigned char **next, size_t n)
{
    void *p = *next;
    *next += span(n);
    return p;
}

static void fill_hello(struct wire_hello *h, const Shoal__Cluster__V1__Hello *m)
{
    h->cluster_name = str_view(m->cluster_name);
    h->node_id = str_view(m->node_id);
    h->incarnation = m->incarnation;
    h->protocol_version = m->protocol_version;
    h->nonce = bytes_view(m->nonce);
    h->advertise = str_view(m->advertise);
}

static void fill_members(struct wire_frame *f, const Shoal__Cluster__V1__MemberList *m,
                         unsigned char **next)
{
    struct wire_member *v = carve(next, m->n_members * sizeof(*v));

    for (size_t i = 0; i < m->n_members; i++) {
        v[i].node_id = str_view(m->members[i]->node_id);
        v[i].advertise = str_view(m->members[i]->advertise);
        v[i].incarnation = m->members[i]->incarnation;
    }
    f->u.members.v = v;
    f->u.members.n = m->n_members;
}

static void fill_forward(struct wire_frame *f, const Shoal__Cluster__V1__Forward *m,
                         unsigned char **next)
{
    struct wire_fwd *v = carve(next, m->n_msgs * sizeof(*v));

    for (size_t i = 0; i < m->n_msgs; i++) {
        const Shoal__Cluster__V1__ForwardMsg *e = m->msgs[i];
        v[i].id = e->id;
        v[i].msg = bytes_view(e->msg);
        v[i].plain = e->plain;
        v[i].shared =
            strs_view(carve(next, e->n_shared * sizeof(struct wire_str)), e->shared, e->n_shared);
        v[i].n_shared = e->n_shared;
        v[i].pub_seq = e->pub_seq;
        v[i].replay_of = str_view(e->replay_of);
        v[i].pub_node = str_view(e->pub_node);
    }
    f->u.forward.v = v;
    f->u.forward.n = m->n_msgs;
}

static void fill_retain(struct wire_frame *f, const Shoal__Cluster__V1__RetainNotice *m,
                        unsigned char **next)
{
    struct wire_retain *v = carve(next, m->n_changes * sizeof(*v));

    for (size_t i = 0; i < m->n_changes; i++) {
        v[i].topic = str_view(m->changes[i]->topic);
        v[i].msg = bytes_view(m->changes[i]->msg);
    }
    f->u.retain.v = v;
    f->u.retain.n = m->n_changes;
}

static void fill_routes(struct wire_frame *f, const Shoal__Cluster__V1__Frame *m,
                        unsigned char **next)
{
    if (m->body_case == PB_BODY(ROUTE_DELTA)) {
        const Shoal__Cluster__V1__RouteDelta *d = m->route_delta;
        f->type = WIRE_ROUTE_DELTA;
        f->u.route_delta.seq = d->seq;
        f->u.route_delta.added =
            strs_view(carve(next, d->n_added * sizeof(struct wire_str)), d->added, d->n_added);
        f->u.route_delta.n_added = d->n_added;
        f->u.route_delta.removed = strs_view(carve(next, d->n_removed * sizeof(struct wire_str)),
                                             d->removed, d->n_removed);
        f->u.route_delta.n_removed = d->n_removed;
    } else {
        const Shoal__Cluster__V1__RouteSnapshot *s = m->route_snapshot;
        f->type = WIRE_ROUTE_SNAPSHOT;
        f->u.route_snapshot.seq = s->seq;
        f->u.route_snapshot.filters = strs_view(carve(next, s->n_filters * sizeof(struct wire_str)),
                                                s->filters, s->n_filters);
        f->u.route_snapshot.n = s->n_filters;
    }
}

/* The frames whose views are plain numbers or single fields. */
static void fill_simple(struct wire_frame *f, const Shoal__Cluster__V1__Frame *m)
{
    switch (m->body_case) {
    case PB_BODY(PROOF):
        f->type = WIRE_PROOF;
        f->u.proof = bytes_view(m->proof->hmac);
        break;
    case PB_BODY(PING):
        f->type = WIRE_PING;
        f->u.ping_seq = m->ping->seq;
        break;
    case PB_BODY(ACK):
        f->type = WIRE_ACK;
        f->u.ack_seq = m->ack->seq;
        break;
    case PB_BODY(ROUTE_DIGEST):
        f->type = WIRE_ROUTE_DIGEST;
        f->u.route_digest.seq = m->route_digest->seq;
        f->u.route_digest.digest = m->route_digest->digest;
        f->u.route_digest.count = m->route_digest->count;
        break;
    case PB_BODY(ROUTE_SNAPSHOT_REQUEST):
        f->type = WIRE_ROUTE_SNAPSHOT_REQUEST;
        f->u.snapshot_have_seq = m->route_snapshot_request->have_seq;
        break;
    case PB_BODY(FORWARD_ACK):
        f->type = WIRE_FORWARD_ACK;
        f->u.forward_ack.ids = m->forward_ack->ids;
        f->u.forward_ack.n = m->forward_ack->n_ids;
        f->u.forward_ack.failed = m->forward_ack->failed;
        f->u.forward_ack.n_failed = m->forward_ack->n_failed;
        break;
    case PB_BODY(TAKEOVER):
        f->type = WIRE_TAKEOVER;
        f->u.takeover.req = m->takeover->req;
        f->u.takeover.client_id = str_view(m->takeover->client_id);
        f->u.takeover.epoch = m->takeover->epoch;
        break;
    case PB_BODY(TAKEOVER_ACK):
        f->type = WIRE_TAKEOVER_ACK;
        f->u.takeover_ack.req = m->takeover_ack->req;
        f->u.takeover_ack.result = m->takeover_ack->result;
        break;
    default:
        assert(!"fill_simple: body case checked by the caller");
    }
}

/* Whether m holds a body this build knows. protobuf-c unpacks every sub-message it reads,
 * so a known case with a NULL body is not expected; it is refused all the same. */
static bool body_known(const Shoal__Cluster__V1__Frame *m)
{
    if (m->body_case < PB_BODY(HELLO) || m->body_case > PB_BODY(RETAIN_NOTICE))
        return false;
    return !NEVER(m->hello == NULL); /* every member of the oneof is a pointer */
}

/* Builds f's views over m; on success f owns m. */
static int frame_fill(struct wire_frame *f, Shoal__Cluster__V1__Frame *m)
{
    if (!body_known(m))
        return ERR_MALFORMED;

    struct wire_store *st = malloc(store_head() + views_need(m));
    if (!st)
        return ERR_NOMEM;
    st->msg = m;
    unsigned char *next = (unsigned char *)st + store_head();

    memset(f, 0, sizeof(*f));
    switch (m->body_case) {
    case PB_BODY(HELLO):
        f->type = WIRE_HELLO;
        fill_hello(&f->u.hello, m->hello);
        break;
    case PB_BODY(MEMBERS):
        f->type = WIRE_MEMBERS;
        fill_members(f, m->members, &next);
        break;
    case PB_BODY(ROUTE_DELTA):
    case PB_BODY(ROUTE_SNAPSHOT):
        fill_routes(f, m, &next);
        break;
    case PB_BODY(FORWARD):
        f->type = WIRE_FORWARD;
        fill_forward(f, m->forward, &next);
        break;
    case PB_BODY(RETAIN_NOTICE):
        f->type = WIRE_RETAIN_NOTICE;
        fill_retain(f, m->retain_notice, &next);
        break;
    default:
        fill_simple(f, m);
        break;
    }
    f->priv = st;
    return 0;
}

int wire_frame_parse(const uint8_t *p, size_t n, struct wire_frame *f)
{
    Shoal__Cluster__V1__Frame *m;
    int rc;

    if (n < WIRE_LEN_PREFIX)
        return 0;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    /* refused before the body arrives, so that a bad prefix never makes the link buffer it */
    if (len > WIRE_MAX_FRAME)
        return ERR_PACKET_TOO_LARGE;
    if (n - WIRE_LEN_PREFIX < len)
        return 0;

    const uint8_t *body = p + WIRE_LEN_PREFIX;
    rc = scan_strings(body, len);
    if (rc < 0)
        goto out_err;
    m = shoal__cluster__v1__frame__unpack(NULL, len, body);
    if (!m) {
        rc = ERR_MALFORMED;
        goto out_err;
    }
    rc = frame_fill(f, m);
    if (rc < 0)
        goto out_free_msg;
    return (int)(WIRE_LEN_PREFIX + len);

out_free_msg:
    shoal__cluster__v1__frame__free_unpacked(m, NULL);
out_err:
    memset(f, 0, sizeof(*f));
    return rc;
}

void wire_frame_free(struct wire_frame *f)
{
    struct wire_store *st = f->priv;

    if (st) {
        shoal__cluster__v1__frame__free_unpacked(st->msg, NULL);
        st->msg = NULL;
        free(st);
    }
    memset(f, 0, sizeof(*f));
}

/* ---- route digest ---- */

uint64_t wire_route_hash(const char *filter, size_t len)
{
    /* FNV-1a spreads the bytes; the finaliser (splitmix64's) mixes the high bits down, which
     * FNV alone leaves weak, so sums of hashes do not cancel in patterned filter sets. */
    uint64_t h = 0xcbf29ce484222325u;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)filter[i];
        h *= 0x100000001b3u;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebu;
    h ^= h >> 31;
    return h;
}
