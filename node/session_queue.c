/*
 * The delivery path of a session: QoS 0 goes straight to the socket (dropped when the client is
 * too far behind); QoS 1/2 go through an inflight window bounded by the client's Receive
 * Maximum and max_inflight_messages, with a bounded queue behind it that also holds messages
 * for offline persistent sessions. PUBLISH heads are encoded per subscriber directly into the
 * connection's output and the payload is spliced in by reference.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/session.h"

/* A QoS 0 message is dropped for a client with more than this many bytes unsent. */
#define SESSION_QOS0_BACKLOG (4u * 1024u * 1024u)
/* Flow control: a client this far behind (unsent bytes, or queue fill) pauses the publishers
 * feeding it until it is back under the low marks. This keeps delivery lossless under load
 * while memory stays bounded by the hard limits above and in the configuration. */
#define SESSION_BACKLOG_HIGH (512u * 1024u)
#define SESSION_BACKLOG_LOW  (128u * 1024u)

void session__queue_free(struct session *s);
void session__resend_inflight(struct session *s);

static uint8_t *put16(uint8_t *w, uint16_t v)
{
    w[0] = (uint8_t)(v >> 8);
    w[1] = (uint8_t)v;
    return w + 2;
}

static uint8_t *put32(uint8_t *w, uint32_t v)
{
    w[0] = (uint8_t)(v >> 24);
    w[1] = (uint8_t)(v >> 16);
    w[2] = (uint8_t)(v >> 8);
    w[3] = (uint8_t)v;
    return w + 4;
}

static uint32_t hash_topic(const char *t, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)t[i]) * 16777619u;
    return h;
}

/* Picks an outgoing topic alias: returns the alias and sets *send_topic when the client does
 * not know the mapping yet. 0 = no alias. */
static uint16_t alias_for(struct conn *c, const struct msg *m, bool *send_topic)
{
    *send_topic = true;
    if (c->alias_max_out == 0)
        return 0;
    uint32_t slot = hash_topic(m->topic, m->topic_len) % c->alias_max_out;
    char **out = conn_aliases(c) + c->alias_max_in;
    char *cur = out[slot];
    if (cur && strlen(cur) == m->topic_len && memcmp(cur, m->topic, m->topic_len) == 0) {
        *send_topic = false;
    } else {
        free(cur);
        out[slot] = xstrndup(m->topic, m->topic_len);
    }
    return (uint16_t)(slot + 1);
}

/* Encodes and queues one PUBLISH. Returns 0 or ERR_PACKET_TOO_LARGE (nothing queued). */
static int send_publish(struct session *s, const struct session_dlv *d, uint16_t pid, bool dup)
{
    struct conn *c = s->conn;
    const struct msg *m = d->m;
    bool v5 = c->version == CODEC_V5;
    bool send_topic = true;
    uint16_t alias = 0;
    size_t props = 0;

    uint32_t expiry = msg_expiry_left_s(m, clock_now_ms());
    if (v5) {
        props = m->props_len;
        if (expiry)
            props += 5;
        for (uint8_t i = 0; i < d->n_sub_ids; i++)
            props += 1 + codec_varint_size(d->sub_ids[i]);
    }
    size_t tlen = m->topic_len;
    size_t rl = 2 + tlen + (d->qos ? 2 : 0) + m->payload_len;
    if (v5)
        rl += codec_varint_size((uint32_t)props) + props;
    if (v5 && c->alias_max_out) {
        /* Decide the alias only once the packet is known to fit, so the table stays in sync. */
        size_t with_alias =
            rl + 3 + codec_varint_size((uint32_t)props + 3) - codec_varint_size((uint32_t)props);
        if (!c->max_packet_out ||
            1 + codec_varint_size((uint32_t)with_alias) + with_alias <= c->max_packet_out) {
            alias = alias_for(c, m, &send_topic);
            props += 3;
            rl = with_alias - (send_topic ? 0 : tlen);
            if (!send_topic)
                tlen = 0;
        }
    }
    if (rl > CODEC_MAX_REMAINING)
        return ERR_PACKET_TOO_LARGE;
    size_t total = 1 + codec_varint_size((uint32_t)rl) + rl;
    if (c->max_packet_out && total > c->max_packet_out)
        return ERR_PACKET_TOO_LARGE;

    size_t head = total - m->payload_len;
    uint8_t *w0 = conn_out_reserve(c, head);
    uint8_t *w = w0;
    *w++ = (uint8_t)(0x30 | (dup ? 0x08 : 0) | (d->qos << 1) | (d->retain ? 1 : 0));
    w = codec_varint_write(w, (uint32_t)rl);
    w = put16(w, (uint16_t)tlen);
    memcpy(w, m->topic, tlen);
    w += tlen;
    if (d->qos)
        w = put16(w, pid);
    if (v5) {
        w = codec_varint_write(w, (uint32_t)props);
        if (expiry) {
            *w++ = CODEC_PROP_MESSAGE_EXPIRY;
            w = put32(w, expiry);
        }
        if (alias) {
            *w++ = CODEC_PROP_TOPIC_ALIAS;
            w = put16(w, alias);
        }
        for (uint8_t i = 0; i < d->n_sub_ids; i++) {
            *w++ = CODEC_PROP_SUBSCRIPTION_ID;
            w = codec_varint_write(w, d->sub_ids[i]);
        }
        if (m->props_len) {
            memcpy(w, m->props, m->props_len);
            w += m->props_len;
        }
    }
    conn_out_commit(c, (size_t)(w - w0));
    conn_out_payload(c, d->m);
    s->b->stats.pub_sent++;
    s->b->stats.pub_out[d->qos]++;
    s->b->stats.msgs_sent++;
    return 0;
}

static void send_pubrel(struct session *s, uint16_t pid)
{
    struct codec_packet p = {0};
    p.type = CODEC_PUBREL;
    p.u.ack.packet_id = pid;
    (void)conn_send(s->conn, &p);
}

static uint32_t window_of(const struct session *s)
{
    uint32_t w = s->conn ? s->conn->receive_max : 65535;
    uint32_t cfg = s->b->conf->max_inflight_messages;
    if (cfg && cfg < w)
        w = cfg;
    return w ? w : 1;
}

static bool pid_in_use(const struct session *s, uint16_t pid)
{
    for (uint32_t i = 0; i < s->q->n_inflight; i++)
        if (s->q->inflight[i].pid == pid)
            return true;
    return false;
}

static uint16_t next_pid(struct session *s)
{
    for (;;) {
        uint16_t pid = s->next_pid++;
        if (s->next_pid == 0)
            s->next_pid = 1;
        if (pid != 0 && !pid_in_use(s, pid))
            return pid;
    }
}

static bool queue_has_room(const struct session *s, const struct session_dlv *d)
{
    const struct conf *cf = s->b->conf;
    return !(cf->max_queued_messages && s->q->q_len >= cf->max_queued_messages) &&
           !(cf->max_queued_bytes && s->q->q_bytes + d->m->payload_len > cf->max_queued_bytes);
}

static bool enqueue(struct session *s, const struct session_dlv *d)
{
    if (!queue_has_room(s, d)) {
        s->b->stats.pub_dropped++;
        s->b->stats.drops[STATS_DROP_QUEUE_FULL]++;
        return false;
    }
    if (s->q->q_len == s->q->q_cap) {
        uint32_t ncap = s->q->q_cap ? s->q->q_cap * 2 : 8;
        struct session_dlv *nq = xmalloc(ncap * sizeof(*nq));
        for (uint32_t i = 0; i < s->q->q_len; i++)
            nq[i] = s->q->queue[(s->q->q_head + i) % s->q->q_cap];
        free(s->q->queue);
        s->q->queue = nq;
        s->q->q_cap = ncap;
        s->q->q_head = 0;
    }
    struct session_dlv *slot = &s->q->queue[(s->q->q_head + s->q->q_len) % s->q->q_cap];
    *slot = *d;
    slot->m = msg_ref(d->m);
    s->q->q_len++;
    s->q->q_bytes += d->m->payload_len;
    return true;
}

void session_queue_push_front(struct session *s, const struct session_dlv *d)
{
    struct session_q *q = session_q_get(s);
    if (q->q_len == q->q_cap) {
        uint32_t ncap = q->q_cap ? q->q_cap * 2 : 8;
        struct session_dlv *nq = xmalloc(ncap * sizeof(*nq));
        for (uint32_t i = 0; i < q->q_len; i++)
            nq[i] = q->queue[(q->q_head + i) % q->q_cap];
        free(q->queue);
        q->queue = nq;
        q->q_cap = ncap;
        q->q_head = 0;
    }
    q->q_head = (q->q_head + q->q_cap - 1) % q->q_cap;
    q->queue[q->q_head] = *d;
    q->queue[q->q_head].m = msg_ref(d->m);
    q->q_len++;
    q->q_bytes += d->m->payload_len;
}

static bool dequeue(struct session *s, struct session_dlv *out)
{
    if (s->q->q_len == 0)
        return false;
    *out = s->q->queue[s->q->q_head];
    s->q->q_head = (s->q->q_head + 1) % s->q->q_cap;
    s->q->q_len--;
    s->q->q_bytes -= out->m->payload_len;
    return true;
}

bool session_queue_pop(struct session *s, struct session_dlv *out)
{
    return s->q && dequeue(s, out);
}

void session_queue_clear_inflight(struct session *s)
{
    for (uint32_t i = 0; s->q && i < s->q->n_inflight; i++)
        msg_unref(&s->q->inflight[i].d.m);
    if (s->q)
        s->q->n_inflight = 0;
}

/* Sends d (reference owned by the caller, transferred on success) as a new inflight entry.
 * Returns true if d's reference was consumed. */
static bool send_new(struct session *s, struct session_dlv *d)
{
    uint64_t now = clock_now_ms();
    if (msg_is_expired(d->m, now)) {
        s->b->stats.drops[STATS_DROP_EXPIRED]++;
        persist_dlv_done(s, d);
        msg_unref(&d->m);
        return true;
    }
    if (d->qos == 0) {
        (void)send_publish(s, d, 0, false);
        msg_unref(&d->m);
        return true;
    }
    uint16_t pid = next_pid(s);
    if (send_publish(s, d, pid, false) < 0) {
        s->b->stats.pub_dropped++;
        s->b->stats.drops[STATS_DROP_PACKET_TOO_LARGE]++;
        persist_dlv_done(s, d);
        msg_unref(&d->m);
        return true;
    }
    if (s->q->n_inflight == s->q->cap_inflight) {
        s->q->cap_inflight = s->q->cap_inflight ? s->q->cap_inflight * 2 : 4;
        s->q->inflight = xrealloc(s->q->inflight, s->q->cap_inflight * sizeof(*s->q->inflight));
    }
    struct session_inflight *f = &s->q->inflight[s->q->n_inflight++];
    f->d = *d;
    f->pid = pid;
    f->state = d->qos == 1 ? SESSION_WAIT_PUBACK : SESSION_WAIT_PUBREC;
    return true;
}

static uint32_t queue_high(const struct session *s)
{
    uint32_t lim = s->b->conf->max_queued_messages;
    return lim ? (lim + 1) / 2 : 1000;
}

static void congest(struct session *s)
{
    struct broker *b = s->b;
    if (s->is_flow_exempt)
        return;
    if (!s->is_congested) {
        struct session_q *q = session_q_get(s);
        s->is_congested = true;
        q->progress_ms = clock_now_ms();
        q->cong_prev = NULL;
        q->cong_next = b->congested;
        if (b->congested)
            b->congested->cong_prev = q;
        b->congested = q;
        b->n_congested++;
    }
    if (b->publisher && b->publisher != s->conn)
        conn_pause(b->publisher);
    else if (b->fwd_peer_uid)
        mesh_hold(b, b->fwd_peer_uid); /* a member's forward: stop reading its link */
}

void session_uncongest(struct session *s)
{
    struct broker *b = s->b;
    if (!s->is_congested)
        return;
    struct session_q *q = s->q;
    s->is_congested = false;
    if (q->cong_prev)
        q->cong_prev->cong_next = q->cong_next;
    else
        b->congested = q->cong_next;
    if (q->cong_next)
        q->cong_next->cong_prev = q->cong_prev;
    q->cong_next = q->cong_prev = NULL;
    /* Resumed in the prepare hook, once per pass, after all acks of this pass were seen. */
    b->n_congested--;
}

void session_flow_check(struct session *s)
{
    if (!s->is_congested && !s->is_flow_exempt)
        return;
    session_q_get(s)->progress_ms = clock_now_ms();
    if (session_queued(s) <= queue_high(s) / 2 &&
        (!s->conn || conn_backlog(s->conn) <= SESSION_BACKLOG_LOW)) {
        session_uncongest(s);
        s->is_flow_exempt = false; /* caught up: it may hold publishers back again */
    }
}

void session_pump(struct session *s)
{
    if (!s->conn)
        return;
    if (s->q) {
        uint32_t win = window_of(s);
        struct session_dlv d;
        while (s->q->n_inflight < win && dequeue(s, &d))
            (void)send_new(s, &d);
    }
    session_flow_check(s);
}

void session_deliver(struct session *s, const struct session_dlv *d)
{
    struct conn *c = s->conn;
    if (s->is_stored && !c) {
        persist_deliver_offline(s, d);
        return;
    }
    if (d->qos == 0) {
        if (!c || c->state != CONN_ACTIVE || conn_backlog(c) > SESSION_QOS0_BACKLOG) {
            if (c) {
                s->b->stats.pub_dropped++;
                s->b->stats.drops[STATS_DROP_SLOW_CONSUMER]++;
            }
            return;
        }
        if (msg_is_expired(d->m, clock_now_ms())) {
            s->b->stats.drops[STATS_DROP_EXPIRED]++;
            return;
        }
        if (send_publish(s, d, 0, false) < 0) {
            s->b->stats.pub_dropped++;
            s->b->stats.drops[STATS_DROP_PACKET_TOO_LARGE]++;
        } else if (conn_backlog(c) > SESSION_BACKLOG_HIGH)
            congest(s);
        return;
    }
    if (!c && s->expiry_s == 0)
        return;
    (void)session_q_get(s);
    bool is_now =
        c && c->state == CONN_ACTIVE && s->q->q_len == 0 && s->q->n_inflight < window_of(s);
    struct session_dlv own = *d;
    /* A persistent session's messages are in the store until acknowledged, so a node that
     * dies with them unacknowledged loses nothing. A message the queue would drop is not
     * stored either, which keeps the stored queue in the local one's order. */
    if (s->expiry_s != 0 && persist_is_on(s->b) && (is_now || queue_has_room(s, d))) {
        own.store_key = persist_deliver_online(s, d);
        own.from_store = own.store_key != 0;
    }
    if (is_now) {
        own.m = msg_ref(d->m);
        (void)send_new(s, &own);
        return;
    }
    (void)enqueue(s, &own);
    if (c && c->state == CONN_ACTIVE && s->q->q_len >= queue_high(s))
        congest(s);
}

static void remove_inflight(struct session *s, uint32_t i)
{
    persist_dlv_done(s, &s->q->inflight[i].d);
    msg_unref(&s->q->inflight[i].d.m);
    memmove(&s->q->inflight[i], &s->q->inflight[i + 1],
            (s->q->n_inflight - i - 1) * sizeof(*s->q->inflight));
    s->q->n_inflight--;
}

int session_ack(struct session *s, uint16_t pid, uint8_t type)
{
    if (!s->q)
        return ERR_PACKET_ID_NOT_FOUND;
    for (uint32_t i = 0; i < s->q->n_inflight; i++) {
        struct session_inflight *f = &s->q->inflight[i];
        if (f->pid != pid)
            continue;
        s->is_flow_exempt = false;
        if (type == 0 || (type == CODEC_PUBACK && f->state == SESSION_WAIT_PUBACK) ||
            (type == CODEC_PUBCOMP && f->state == SESSION_WAIT_PUBCOMP)) {
            remove_inflight(s, i);
            session_pump(s);
            return 0;
        }
        if (type == CODEC_PUBREC &&
            (f->state == SESSION_WAIT_PUBREC || f->state == SESSION_WAIT_PUBCOMP)) {
            f->state = SESSION_WAIT_PUBCOMP;
            msg_unref(&f->d.m);
            if (s->conn)
                send_pubrel(s, pid);
            return 0;
        }
        return ERR_PROTOCOL;
    }
    return ERR_PACKET_ID_NOT_FOUND;
}

void session__resend_inflight(struct session *s)
{
    uint64_t now = clock_now_ms();
    for (uint32_t i = 0; s->q && i < s->q->n_inflight;) {
        struct session_inflight *f = &s->q->inflight[i];
        if (f->state == SESSION_WAIT_PUBCOMP) {
            send_pubrel(s, f->pid);
        } else if (msg_is_expired(f->d.m, now) || send_publish(s, &f->d, f->pid, true) < 0) {
            remove_inflight(s, i);
            continue;
        }
        i++;
    }
}

void session__queue_free(struct session *s)
{
    if (!s->q)
        return;
    persist_session_gone(s);
    for (uint32_t i = 0; i < s->q->n_inflight; i++)
        msg_unref(&s->q->inflight[i].d.m);
    free(s->q->inflight);
    s->q->inflight = NULL;
    s->q->n_inflight = 0;
    struct session_dlv d;
    while (dequeue(s, &d))
        msg_unref(&d.m);
    free(s->q->queue);
    s->q->queue = NULL;
    free(s->q->rx_qos2);
    free(s->q);
    s->q = NULL;
}
