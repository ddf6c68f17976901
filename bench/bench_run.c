/*
 * The shoal-bench engine. Every client lives on one libuv loop; the loop owns nothing but
 * what this file creates. Throughput comes from batching: packets are appended to a
 * per-connection output buffer and a uv_prepare/uv_check pair flushes each dirty connection
 * with one uv_write per loop pass (double-buffered, so encoding goes on while a write is in
 * flight). Received bytes are parsed in place from one loop-wide scratch buffer; only a
 * trailing partial packet is copied into the connection's own buffer. Publishers encode each
 * PUBLISH head with the codec straight into the output buffer and copy the payload from one
 * shared template, so nothing is allocated per message.
 */
#include "bench/bench_run.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "bench/bench_hist.h"
#include "bench/bench_payload.h"
#include "bench/bench_report.h"
#include "bench/bench_seq.h"
#include "bench/tls_client.h"
#include "node/buf.h"
#include "node/codec.h"
#include "node/err.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define OUT_HIGH        (128 * 1024) /* stop encoding past this many unsent bytes */
#define SCRATCH_LEN     (256 * 1024)
#define LAUNCH_PER_TICK 1000
#define GRACE_MS        2000
#define MAX_ERR_LINES   10

enum cstate {
    C_IDLE,        /* not started */
    C_CONNECTING,  /* TCP connect in progress */
    C_CONNACK,     /* CONNECT sent (after TLS), waiting for CONNACK */
    C_SUBSCRIBING, /* SUBSCRIBE sent */
    C_READY,
    C_SETTLING, /* publisher at shutdown: no new publishes, DISCONNECT once all are acked */
    C_DRAINING, /* DISCONNECT queued at shutdown; close once written */
    C_CLOSED,   /* uv_close called */
};

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer; /* paced publishers */
    struct run *r;
    struct client *next_dirty;
    struct client *next_kick;
    struct tls_client *tls;
    char *id;
    char *topic;
    uint32_t topic_len;
    uint32_t index; /* -n START + slot */
    uint32_t slot;
    enum cstate st;
    bool is_dirty;
    bool is_kicked;
    bool is_writing;
    bool has_timer;
    bool is_connected; /* CONNACK accepted */
    bool is_finished;  /* counted in run->finished */
    struct buf in;     /* partial packet carried over, or TLS plaintext */
    struct buf out;    /* plaintext waiting to be sent */
    struct buf tout;   /* TLS ciphertext waiting to be sent */
    struct buf wbuf;   /* being written */
    uint64_t connect_us;
    uint64_t last_tx_ms;
    /* publisher */
    uint64_t sent;
    uint64_t seq;
    uint64_t next_due_ms;
    uint32_t inflight;
    uint16_t next_pid;
    uint64_t *pids; /* bitmap of packet ids awaiting an ack (QoS > 0) */
    /* subscriber */
    struct bench_seq seqs;
};

struct run {
    const struct bench_opts *o;
    uv_loop_t loop;
    uv_timer_t launch_timer;
    uv_timer_t tick_timer;
    uv_timer_t duration_timer;
    uv_timer_t grace_timer;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_idle_t idle;
    uv_signal_t sigint;
    uv_signal_t sigterm;
    bool are_globals_closed;
    bool is_stopping;
    struct sockaddr_storage addrs[BENCH_MAX_HOSTS];
    bool is_numeric_host[BENCH_MAX_HOSTS];
    struct tls_client_ctx *tls;
    struct client *clients;
    uint32_t n;
    uint32_t launched;
    uint32_t live;     /* clients with an open TCP handle */
    uint32_t up;       /* connected now */
    uint32_t finished; /* failed, or publishers that reached -L */
    struct client *dirty;
    struct client *kicked; /* publishers to pump on the next pass */
    uint8_t *scratch;
    uint8_t *payload;
    uint32_t payload_len;
    bool has_hdrs;
    struct codec_packet pub_tmpl;
    uint64_t start_ms;
    uint64_t start_us;
    uint64_t stop_us;
    uint32_t err_lines;
    struct bench_hist latency;
    struct bench_hist conn_latency;
    struct bench_stats st;
    struct bench_sample prev; /* totals at the previous tick */
    struct bench_sample *samples;
    uint32_t n_samples;
    uint32_t cap_samples;
};

static void client_close(struct client *c);
static void pub_pump(struct client *c);
static void run_stop(struct run *r);
static void close_globals(struct run *r);

static void report_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report_error(struct run *r, const char *fmt, ...)
{
    va_list ap;
    if (r->err_lines > MAX_ERR_LINES)
        return;
    if (r->err_lines++ == MAX_ERR_LINES) {
        fputs("shoal-bench: further errors not shown\n", stderr);
        return;
    }
    fputs("shoal-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void mark_dirty(struct client *c)
{
    if (c->is_dirty)
        return;
    c->is_dirty = true;
    c->next_dirty = c->r->dirty;
    c->r->dirty = c;
}

static void mark_finished(struct client *c)
{
    struct run *r = c->r;
    if (c->is_finished)
        return;
    c->is_finished = true;
    if (++r->finished == r->n)
        run_stop(r);
}

/* A connection failed or was lost: count it and close. */
static void client_fail(struct client *c, const char *what, int rc)
{
    struct run *r = c->r;
    if (c->st == C_CLOSED)
        return;
    if (!r->is_stopping) {
        r->st.errors++;
        if (c->is_connected)
            r->st.disconnected++;
        else
            r->st.conn_errors++;
        report_error(r, "client %s: %s%s%s", c->id, what, rc ? ": " : "", rc ? err_str(rc) : "");
    }
    client_close(c);
    mark_finished(c);
}

/* Encodes p into the output buffer. */
static int send_packet(struct client *c, const struct codec_packet *p)
{
    uint8_t v = c->r->o->version;
    size_t n = codec_size(v, p);
    if (NEVER(n == 0))
        return ERR_INVALID;
    uint8_t *dst = buf_reserve(&c->out, n);
    buf_commit(&c->out, codec_write(dst, v, p));
    mark_dirty(c);
    return 0;
}

static int send_simple(struct client *c, enum codec_type type, uint16_t pid)
{
    struct codec_packet p;
    memset(&p, 0, sizeof(p));
    p.type = type;
    p.flags = type == CODEC_PUBREL ? 2 : 0;
    p.u.ack.packet_id = pid;
    return send_packet(c, &p);
}

static int send_connect(struct client *c)
{
    const struct bench_opts *o = c->r->o;
    struct codec_packet p;
    memset(&p, 0, sizeof(p));
    p.type = CODEC_CONNECT;
    p.u.connect.version = o->version;
    p.u.connect.clean_start = o->clean;
    p.u.connect.keepalive = o->keepalive;
    p.u.connect.client_id.p = (const uint8_t *)c->id;
    p.u.connect.client_id.len = (uint32_t)strlen(c->id);
    if (o->username) {
        p.u.connect.has_username = true;
        p.u.connect.username.p = (const uint8_t *)o->username;
        p.u.connect.username.len = (uint32_t)strlen(o->username);
    }
    if (o->password) {
        p.u.connect.has_password = true;
        p.u.connect.password.p = (const uint8_t *)o->password;
        p.u.connect.password.len = (uint32_t)strlen(o->password);
    }
    if (o->version == CODEC_V5 && o->has_session_expiry) {
        p.props.has |= CODEC_BIT(CODEC_PROP_SESSION_EXPIRY);
        p.props.session_expiry = o->session_expiry;
    }
    return send_packet(c, &p);
}

static int send_subscribe(struct client *c)
{
    struct codec_sub_entry e;
    struct codec_packet p;
    memset(&e, 0, sizeof(e));
    memset(&p, 0, sizeof(p));
    e.filter.p = (const uint8_t *)c->topic;
    e.filter.len = (uint32_t)strlen(c->topic);
    e.qos = c->r->o->qos;
    p.type = CODEC_SUBSCRIBE;
    p.flags = 2;
    p.u.subscribe.packet_id = 1;
    p.u.subscribe.count = 1;
    p.u.subscribe.list = &e;
    return send_packet(c, &p);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);
static void on_idle(uv_idle_t *h);
static void after_write(struct client *c);

static bool has_pending(const struct client *c)
{
    return buf_used(&c->out) > 0 || buf_used(&c->tout) > 0;
}

static void client_flush(struct client *c)
{
    struct run *r = c->r;
    struct buf *pend = &c->out;
    if (c->st == C_CLOSED)
        return;
    if (c->tls) {
        if (tls_client_is_ready(c->tls) && buf_used(&c->out) > 0) {
            if (tls_client_encrypt(c->tls, buf_head(&c->out), buf_used(&c->out), &c->tout) < 0) {
                client_fail(c, "TLS write failed", 0);
                return;
            }
            buf_reset(&c->out);
        }
        pend = &c->tout;
    }
    if (c->is_writing || buf_used(pend) == 0)
        return;
    c->last_tx_ms = uv_now(&r->loop);
    /* Most writes complete at once: that path needs no request and no POLLOUT toggling. */
    uv_buf_t b = uv_buf_init((char *)buf_head(pend), (unsigned)buf_used(pend));
    int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc < 0 && rc != UV_EAGAIN) {
        client_fail(c, "write", rc);
        return;
    }
    if (rc > 0) {
        r->st.bytes_sent += (uint64_t)rc;
        buf_consume(pend, (size_t)rc);
    }
    if (buf_used(pend) == 0) {
        after_write(c);
        return;
    }
    struct buf tmp = c->wbuf; /* empty: reset after each write */
    c->wbuf = *pend;
    *pend = tmp;
    b = uv_buf_init((char *)buf_head(&c->wbuf), (unsigned)buf_used(&c->wbuf));
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        client_fail(c, "write", rc);
        return;
    }
    r->st.bytes_sent += b.len;
    c->is_writing = true;
}

static void flush_all(struct run *r)
{
    while (r->dirty) {
        struct client *list = r->dirty;
        r->dirty = NULL;
        while (list) {
            struct client *c = list;
            list = c->next_dirty;
            c->next_dirty = NULL;
            c->is_dirty = false;
            client_flush(c);
        }
    }
}

/* Everything queued so far is written: close a draining client, or let a publisher encode
 * more on the next loop pass (not now: a flush in progress must terminate). */
static void after_write(struct client *c)
{
    struct run *r = c->r;
    if (c->st == C_DRAINING && !has_pending(c)) {
        client_close(c);
        return;
    }
    if (c->st == C_READY && r->o->mode == BENCH_PUB && !c->is_kicked) {
        c->is_kicked = true;
        c->next_kick = r->kicked;
        r->kicked = c;
        uv_idle_start(&r->idle, on_idle);
    }
    if (has_pending(c))
        mark_dirty(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct client *c = container_of(req, struct client, wreq);
    c->is_writing = false;
    buf_reset(&c->wbuf);
    if (status < 0) {
        if (status != UV_ECANCELED)
            client_fail(c, "write", status);
        return;
    }
    after_write(c);
}

static void run_kicks(struct run *r)
{
    struct client *list = r->kicked;
    r->kicked = NULL;
    while (list) {
        struct client *c = list;
        list = c->next_kick;
        c->next_kick = NULL;
        c->is_kicked = false;
        pub_pump(c);
    }
    if (!r->kicked)
        uv_idle_stop(&r->idle);
}

static void on_prepare(uv_prepare_t *h)
{
    struct run *r = container_of(h, struct run, prepare);
    run_kicks(r);
    flush_all(r);
}

/* Only keeps the loop from blocking in poll while publishers wait to be kicked. */
static void on_idle(uv_idle_t *h)
{
    (void)h;
}

static void on_check(uv_check_t *h)
{
    flush_all(container_of(h, struct run, check));
}

/* ---- publishing --------------------------------------------------------------------------- */

static uint16_t pid_take(struct client *c)
{
    for (;;) {
        uint16_t pid = ++c->next_pid;
        if (pid == 0)
            continue;
        uint64_t bit = UINT64_C(1) << (pid % 64);
        if (!(c->pids[pid / 64] & bit)) {
            c->pids[pid / 64] |= bit;
            return pid;
        }
    }
}

static bool pid_release(struct client *c, uint16_t pid)
{
    uint64_t bit = UINT64_C(1) << (pid % 64);
    if (!c->pids || !(c->pids[pid / 64] & bit))
        return false;
    c->pids[pid / 64] &= ~bit;
    return true;
}

static void publish_one(struct client *c, uint64_t now_us)
{
    struct run *r = c->r;
    struct codec_packet p = r->pub_tmpl;
    uint8_t v = r->o->version;

    p.u.publish.topic.p = (const uint8_t *)c->topic;
    p.u.publish.topic.len = c->topic_len;
    if (p.u.publish.qos)
        p.u.publish.packet_id = pid_take(c);
    size_t head = codec_publish_head_size(v, &p);
    uint8_t *dst = buf_reserve(&c->out, head + r->payload_len);
    head = codec_publish_head_write(dst, v, &p);
    memcpy(dst + head, r->payload, r->payload_len);
    c->seq++;
    if (r->has_hdrs) {
        struct bench_payload_hdr h = {.ts_us = now_us, .seq = c->seq, .pub = c->index};
        bench_payload_write(dst + head, &h);
    }
    buf_commit(&c->out, head + r->payload_len);
    c->sent++;
    r->st.sent++;
    if (p.u.publish.qos)
        c->inflight++;
}

/* Publishes whatever is due and allowed (inflight, -L, output backlog). */
static void pub_pump(struct client *c)
{
    struct run *r = c->r;
    const struct bench_opts *o = r->o;
    if (c->st != C_READY || r->is_stopping || c->is_finished)
        return;
    uint64_t now_ms = uv_now(&r->loop);
    uint64_t now_us = bench_payload_now_us();
    bool is_paced = o->pub_interval_ms > 0;
    uint64_t before = c->sent;

    /* A publisher that fell behind by more than a second drops the backlog instead of
     * bursting it: the rate asked for is a steady one. */
    if (is_paced && c->next_due_ms + 1000 < now_ms)
        c->next_due_ms = now_ms;
    while (buf_used(&c->out) < OUT_HIGH) {
        if (o->limit && c->sent >= o->limit)
            break;
        if (o->qos && c->inflight >= o->inflight)
            break;
        if (is_paced && c->next_due_ms > now_ms)
            break;
        publish_one(c, now_us);
        if (is_paced)
            c->next_due_ms += o->pub_interval_ms;
    }
    if (c->sent != before) {
        bench_window_note(&r->st.sent_win, now_us);
        mark_dirty(c);
    }
    if (o->limit && c->sent >= o->limit && c->inflight == 0) {
        if (c->has_timer)
            uv_timer_stop(&c->timer);
        mark_finished(c);
    }
}

static void on_pub_timer(uv_timer_t *t)
{
    pub_pump(container_of(t, struct client, timer));
}

static void pub_begin(struct client *c)
{
    struct run *r = c->r;
    c->next_due_ms = uv_now(&r->loop);
    if (r->o->pub_interval_ms > 0 && !c->has_timer) {
        uv_timer_init(&r->loop, &c->timer);
        c->has_timer = true;
        uv_timer_start(&c->timer, on_pub_timer, r->o->pub_interval_ms, r->o->pub_interval_ms);
    }
    pub_pump(c);
}

/* Queues DISCONNECT; the client closes once it is written. */
static void client_disconnect(struct client *c)
{
    c->st = C_DRAINING;
    (void)send_simple(c, CODEC_DISCONNECT, 0);
    if (c->has_timer)
        uv_timer_stop(&c->timer);
}

static void pub_acked(struct client *c, uint16_t pid, uint8_t reason, uint64_t now_us)
{
    struct run *r = c->r;
    if (!pid_release(c, pid)) {
        r->st.errors++;
        report_error(r, "client %s: ack for unknown packet id %u", c->id, pid);
        return;
    }
    c->inflight--;
    r->st.acked++;
    bench_window_note(&r->st.acked_win, now_us);
    if (reason >= 0x80) {
        r->st.errors++;
        report_error(r, "client %s: publish refused, reason 0x%02x", c->id, reason);
    }
    if (c->st == C_SETTLING && c->inflight == 0)
        client_disconnect(c);
    else
        pub_pump(c);
}

/* ---- receiving ---------------------------------------------------------------------------- */

static void on_message(struct client *c, const struct codec_publish *m, uint64_t now_us)
{
    struct run *r = c->r;
    struct bench_payload_hdr h;

    r->st.recv++;
    bench_window_note(&r->st.recv_win, now_us);
    if (m->qos == 1)
        (void)send_simple(c, CODEC_PUBACK, m->packet_id);
    else if (m->qos == 2)
        (void)send_simple(c, CODEC_PUBREC, m->packet_id);
    if (!r->has_hdrs)
        return;
    /* A send time in the future means the bytes are not our header (a publisher without
     * --payload-hdrs): count them apart instead of inventing a stream. */
    if (!bench_payload_read(m->payload.p, m->payload.len, &h) || h.ts_us > now_us + 1000000 ||
        h.seq == 0) {
        r->st.nohdr++;
        return;
    }
    if (r->o->hdr_ts)
        bench_hist_record(&r->latency, now_us > h.ts_us ? now_us - h.ts_us : 0);
    if (r->o->hdr_seq)
        (void)bench_seq_record(&c->seqs, h.pub, h.seq);
}

static void on_connack(struct client *c, const struct codec_packet *p, uint64_t now_us)
{
    struct run *r = c->r;
    if (p->u.connack.reason != 0) {
        char what[64];
        (void)snprintf(what, sizeof(what), "CONNACK refused, code 0x%02x", p->u.connack.reason);
        client_fail(c, what, 0);
        return;
    }
    c->is_connected = true;
    r->up++;
    r->st.connected++;
    bench_window_note(&r->st.conn_win, now_us);
    bench_hist_record(&r->conn_latency, now_us - c->connect_us);
    if (r->o->mode == BENCH_SUB) {
        c->st = C_SUBSCRIBING;
        (void)send_subscribe(c);
        return;
    }
    c->st = C_READY;
    if (r->o->mode == BENCH_PUB)
        pub_begin(c);
}

static void on_suback(struct client *c, const struct codec_packet *p)
{
    struct run *r = c->r;
    uint8_t reason = p->u.suback.count ? p->u.suback.reasons[0] : 0x80;
    c->st = C_READY;
    if (reason >= 0x80) {
        r->st.errors++;
        report_error(r, "client %s: subscription to %s refused, code 0x%02x", c->id, c->topic,
                     reason);
        return;
    }
    r->st.subscribed++;
}

/* Handles one packet; returns false when the client was closed. */
static bool on_packet(struct client *c, const struct codec_packet *p, uint64_t now_us)
{
    switch (p->type) {
    case CODEC_CONNACK:
        if (c->st != C_CONNACK)
            break;
        on_connack(c, p, now_us);
        return c->st != C_CLOSED;
    case CODEC_SUBACK:
        on_suback(c, p);
        return true;
    case CODEC_PUBLISH:
        on_message(c, &p->u.publish, now_us);
        return true;
    case CODEC_PUBACK:
    case CODEC_PUBCOMP:
        pub_acked(c, p->u.ack.packet_id, p->u.ack.reason, now_us);
        return true;
    case CODEC_PUBREC:
        if (p->u.ack.reason >= 0x80)
            pub_acked(c, p->u.ack.packet_id, p->u.ack.reason, now_us);
        else
            (void)send_simple(c, CODEC_PUBREL, p->u.ack.packet_id);
        return true;
    case CODEC_PUBREL:
        (void)send_simple(c, CODEC_PUBCOMP, p->u.ack.packet_id);
        return true;
    case CODEC_PINGRESP:
    case CODEC_UNSUBACK:
        return true;
    case CODEC_DISCONNECT: {
        char what[64];
        (void)snprintf(what, sizeof(what), "DISCONNECT from broker, reason 0x%02x",
                       p->u.disconnect.reason);
        client_fail(c, what, 0);
        return false;
    }
    default:
        break;
    }
    client_fail(c, "unexpected packet", 0);
    return false;
}

/* Decodes the packets in p[0..len); returns the bytes consumed, or -1 if c was closed. */
static long parse(struct client *c, const uint8_t *p, size_t len, uint64_t now_us)
{
    uint8_t v = c->r->o->version;
    size_t off = 0;
    while (off < len) {
        struct codec_packet pkt;
        int rc = codec_decode(p + off, len - off, v, false, 0, &pkt);
        if (rc == CODEC_AGAIN)
            break;
        if (rc < 0) {
            client_fail(c, "bad packet from broker", rc);
            return -1;
        }
        if (!on_packet(c, &pkt, now_us))
            return -1;
        off += (size_t)rc;
    }
    return (long)off;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct client *c = container_of(h, struct client, tcp);
    (void)suggested;
    if (!c->tls && buf_used(&c->in) > 0) {
        uint8_t *p = buf_reserve(&c->in, 65536);
        *b = uv_buf_init((char *)p, (unsigned)(c->in.cap - c->in.len));
        return;
    }
    *b = uv_buf_init((char *)c->r->scratch, SCRATCH_LEN);
}

static void on_tls_data(struct client *c, const uint8_t *p, size_t n, uint64_t now_us)
{
    bool was_ready = tls_client_is_ready(c->tls);
    if (tls_client_feed(c->tls, p, n, &c->in, &c->tout) < 0) {
        client_fail(c, "TLS handshake or read failed", 0);
        return;
    }
    if (buf_used(&c->tout) > 0 || (!was_ready && tls_client_is_ready(c->tls)))
        mark_dirty(c);
    long used = parse(c, buf_head(&c->in), buf_used(&c->in), now_us);
    if (used > 0)
        buf_consume(&c->in, (size_t)used);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct client *c = container_of(s, struct client, tcp);
    struct run *r = c->r;
    if (nread == 0)
        return;
    if (nread < 0) {
        client_fail(c, nread == UV_EOF ? "connection closed by broker" : "read", (int)nread);
        return;
    }
    uint64_t now_us = bench_payload_now_us();
    size_t n = (size_t)nread;
    r->st.bytes_recv += n;
    if (c->tls) {
        on_tls_data(c, (const uint8_t *)b->base, n, now_us);
        return;
    }
    if ((uint8_t *)b->base == r->scratch) {
        long used = parse(c, r->scratch, n, now_us);
        if (used >= 0 && (size_t)used < n)
            buf_append(&c->in, r->scratch + used, n - (size_t)used);
        return;
    }
    buf_commit(&c->in, n);
    long used = parse(c, buf_head(&c->in), buf_used(&c->in), now_us);
    if (used > 0)
        buf_consume(&c->in, (size_t)used);
}

/* ---- connection lifecycle ----------------------------------------------------------------- */

static void on_close(uv_handle_t *h)
{
    struct client *c = container_of(h, struct client, tcp);
    struct run *r = c->r;
    bench_seq_stats_add(&c->seqs, &r->st.seq);
    bench_seq_free(&c->seqs);
    tls_client_destroy(&c->tls);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->tout);
    buf_free(&c->wbuf);
    free(c->pids);
    c->pids = NULL;
    if (--r->live == 0 && r->is_stopping)
        close_globals(r);
}

static void client_close(struct client *c)
{
    struct run *r = c->r;
    if (c->st == C_CLOSED || c->st == C_IDLE)
        return;
    if (c->is_connected) {
        c->is_connected = false;
        r->up--;
    }
    c->st = C_CLOSED;
    if (c->has_timer) {
        uv_close((uv_handle_t *)&c->timer, NULL);
        c->has_timer = false;
    }
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct client *c = container_of(req, struct client, creq);
    struct run *r = c->r;
    if (status == UV_ECANCELED || c->st == C_CLOSED)
        return;
    if (status < 0) {
        client_fail(c, "connect", status);
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        client_fail(c, "read start", rc);
        return;
    }
    if (r->tls) {
        uint32_t h = c->slot % r->o->n_hosts;
        const char *sni = r->is_numeric_host[h] ? NULL : r->o->hosts[h];
        c->tls = tls_client_create(r->tls, sni, &c->tout);
        if (!c->tls) {
            client_fail(c, "TLS setup failed", 0);
            return;
        }
    }
    c->st = C_CONNACK;
    (void)send_connect(c);
}

static void client_start(struct client *c)
{
    struct run *r = c->r;
    const struct sockaddr *addr = (const struct sockaddr *)&r->addrs[c->slot % r->o->n_hosts];
    int rc = uv_tcp_init(&r->loop, &c->tcp);
    if (rc < 0) {
        r->st.errors++;
        r->st.conn_errors++;
        report_error(r, "client %s: socket: %s", c->id, err_str(rc));
        mark_finished(c);
        return;
    }
    r->live++;
    c->st = C_CONNECTING;
    c->connect_us = bench_payload_now_us();
    (void)uv_tcp_nodelay(&c->tcp, 1);
    rc = uv_tcp_connect(&c->creq, &c->tcp, addr, on_connect);
    if (rc < 0)
        client_fail(c, "connect", rc);
}

static void on_launch(uv_timer_t *t)
{
    struct run *r = container_of(t, struct run, launch_timer);
    const struct bench_opts *o = r->o;
    uint64_t elapsed = uv_now(&r->loop) - r->start_ms;
    uint64_t target = r->n;
    if (o->conn_rate > 0)
        target = (uint64_t)((double)elapsed * o->conn_rate / 1000.0) + 1;
    else if (o->interval_ms > 0)
        target = elapsed / o->interval_ms + 1;
    if (target > r->n)
        target = r->n;
    for (int k = 0; r->launched < target && k < LAUNCH_PER_TICK && !r->is_stopping; k++)
        client_start(&r->clients[r->launched++]);
    if (r->launched == r->n)
        uv_timer_stop(t);
}

/* ---- run lifecycle ------------------------------------------------------------------------ */

static void take_sample(struct run *r)
{
    struct bench_sample s = {0};
    s.t_s = (double)(uv_now(&r->loop) - r->start_ms) / 1000.0;
    s.connected = r->up;
    s.conn = r->st.connected - r->prev.conn;
    s.sent = r->st.sent - r->prev.sent;
    s.acked = r->st.acked - r->prev.acked;
    s.recv = r->st.recv - r->prev.recv;
    s.errors = r->st.errors;
    r->prev.conn = r->st.connected;
    r->prev.sent = r->st.sent;
    r->prev.acked = r->st.acked;
    r->prev.recv = r->st.recv;
    if (r->n_samples == r->cap_samples) {
        r->cap_samples = r->cap_samples ? r->cap_samples * 2 : 64;
        r->samples = xrealloc(r->samples, r->cap_samples * sizeof(*r->samples));
    }
    r->samples[r->n_samples++] = s;
    if (!r->o->quiet)
        bench_report_progress(stderr, &s);
}

static void keepalive_sweep(struct run *r)
{
    uint64_t now = uv_now(&r->loop);
    uint64_t idle = (uint64_t)r->o->keepalive * 750; /* ping at 3/4 of the keep alive */
    if (r->o->keepalive == 0)
        return;
    for (uint32_t i = 0; i < r->launched; i++) {
        struct client *c = &r->clients[i];
        if (c->is_connected && c->st != C_DRAINING && now - c->last_tx_ms >= idle) {
            c->last_tx_ms = now;
            (void)send_simple(c, CODEC_PINGREQ, 0);
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    struct run *r = container_of(t, struct run, tick_timer);
    take_sample(r);
    keepalive_sweep(r);
    /* A subscriber that has drained what the broker buffered can stop without a fixed tail. */
    if (r->o->idle_exit_s > 0 && r->st.recv > 0 &&
        bench_payload_now_us() - r->st.recv_win.last_us >= (uint64_t)(r->o->idle_exit_s * 1e6))
        run_stop(r);
}

static void on_duration(uv_timer_t *t)
{
    run_stop(container_of(t, struct run, duration_timer));
}

static void force_close_all(struct run *r)
{
    for (uint32_t i = 0; i < r->launched; i++)
        client_close(&r->clients[i]);
    if (r->live == 0)
        close_globals(r);
}

static void on_grace(uv_timer_t *t)
{
    force_close_all(container_of(t, struct run, grace_timer));
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct run *r = s->data;
    (void)signum;
    if (r->is_stopping)
        force_close_all(r);
    else
        run_stop(r);
}

static void close_globals(struct run *r)
{
    if (r->are_globals_closed)
        return;
    r->are_globals_closed = true;
    uv_close((uv_handle_t *)&r->launch_timer, NULL);
    uv_close((uv_handle_t *)&r->tick_timer, NULL);
    uv_close((uv_handle_t *)&r->duration_timer, NULL);
    uv_close((uv_handle_t *)&r->grace_timer, NULL);
    uv_close((uv_handle_t *)&r->prepare, NULL);
    uv_close((uv_handle_t *)&r->check, NULL);
    uv_close((uv_handle_t *)&r->idle, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
}

/* Ends the run: DISCONNECT the connected clients, close the rest, then the loop's handles.
 * A publisher with QoS > 0 messages in flight first waits for their acknowledgements (up to
 * the grace period), so that what it counts as sent is what the broker took responsibility
 * for, and a subscriber's share is measured against that.
 * Safe to call repeatedly; later calls only finish the job once every client is closed. */
static void run_stop(struct run *r)
{
    if (!r->is_stopping) {
        r->is_stopping = true;
        r->stop_us = bench_payload_now_us();
        uv_timer_stop(&r->launch_timer);
        uv_timer_stop(&r->tick_timer);
        uv_timer_stop(&r->duration_timer);
        uv_timer_start(&r->grace_timer, on_grace, GRACE_MS, 0);
        for (uint32_t i = 0; i < r->launched; i++) {
            struct client *c = &r->clients[i];
            if (c->is_connected && c->st == C_READY && c->inflight > 0) {
                c->st = C_SETTLING;
                if (c->has_timer)
                    uv_timer_stop(&c->timer);
            } else if (c->is_connected && c->st != C_CLOSED) {
                client_disconnect(c);
            } else {
                client_close(c);
            }
        }
    }
    if (r->live == 0)
        close_globals(r);
}

/* ---- setup -------------------------------------------------------------------------------- */

static int resolve(struct run *r)
{
    const struct bench_opts *o = r->o;
    char port[8];
    (void)snprintf(port, sizeof(port), "%u", (unsigned)o->port);
    for (uint32_t i = 0; i < o->n_hosts; i++) {
        struct addrinfo hints, *res = NULL;
        uint8_t tmp[16];
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(o->hosts[i], port, &hints, &res);
        if (rc != 0 || !res) {
            fprintf(stderr, "shoal-bench: cannot resolve %s: %s\n", o->hosts[i], gai_strerror(rc));
            return ERR_NOT_FOUND;
        }
        memcpy(&r->addrs[i], res->ai_addr, res->ai_addrlen);
        freeaddrinfo(res);
        r->is_numeric_host[i] =
            inet_pton(AF_INET, o->hosts[i], tmp) == 1 || inet_pton(AF_INET6, o->hosts[i], tmp) == 1;
    }
    return 0;
}

static void setup_payload(struct run *r)
{
    const struct bench_opts *o = r->o;
    r->has_hdrs = o->hdr_ts || o->hdr_seq;
    r->payload_len = o->size;
    if (r->has_hdrs && r->payload_len < BENCH_PAYLOAD_HDR_LEN) {
        if (o->mode == BENCH_PUB)
            fprintf(stderr, "shoal-bench: payload raised to %d bytes to hold its headers\n",
                    BENCH_PAYLOAD_HDR_LEN);
        r->payload_len = BENCH_PAYLOAD_HDR_LEN;
    }
    r->payload = xmalloc(r->payload_len ? r->payload_len : 1);
    for (uint32_t i = 0; i < r->payload_len; i++)
        r->payload[i] = (uint8_t)('a' + i % 26);
    memset(&r->pub_tmpl, 0, sizeof(r->pub_tmpl));
    r->pub_tmpl.type = CODEC_PUBLISH;
    r->pub_tmpl.flags = (uint8_t)(o->qos << 1 | (o->retain ? 1 : 0));
    r->pub_tmpl.u.publish.qos = o->qos;
    r->pub_tmpl.u.publish.retain = o->retain;
    r->pub_tmpl.u.publish.payload.p = r->payload;
    r->pub_tmpl.u.publish.payload.len = r->payload_len;
}

static int setup_clients(struct run *r)
{
    const struct bench_opts *o = r->o;
    char prefix[64], id[512], topic[1024];
    if (o->prefix)
        (void)snprintf(prefix, sizeof(prefix), "%s", o->prefix);
    else
        (void)snprintf(prefix, sizeof(prefix), "bench%ld", (long)getpid());
    r->n = o->count;
    r->clients = xcalloc(r->n, sizeof(*r->clients));
    for (uint32_t i = 0; i < r->n; i++) {
        struct client *c = &r->clients[i];
        c->r = r;
        c->slot = i;
        c->index = o->start + i;
        (void)snprintf(id, sizeof(id), "%s_%s_%u", prefix, bench_opts_mode_name(o->mode),
                       (unsigned)c->index);
        c->id = xstrdup(id);
        if (o->topic) {
            if (bench_opts_expand(o->topic, c->index, c->id, topic, sizeof(topic)) < 0) {
                fprintf(stderr, "shoal-bench: topic too long after expansion\n");
                return ERR_INVALID;
            }
            c->topic = xstrdup(topic);
            c->topic_len = (uint32_t)strlen(topic);
        }
        if (o->mode == BENCH_PUB && o->qos > 0)
            c->pids = xcalloc(65536 / 64, sizeof(uint64_t));
        bench_seq_init(&c->seqs);
    }
    return 0;
}

static void setup_loop(struct run *r)
{
    const struct bench_opts *o = r->o;
    uv_loop_init(&r->loop);
    uv_timer_init(&r->loop, &r->launch_timer);
    uv_timer_init(&r->loop, &r->tick_timer);
    uv_timer_init(&r->loop, &r->duration_timer);
    uv_timer_init(&r->loop, &r->grace_timer);
    uv_prepare_init(&r->loop, &r->prepare);
    uv_check_init(&r->loop, &r->check);
    uv_idle_init(&r->loop, &r->idle);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->sigint.data = r;
    r->sigterm.data = r;
    uv_prepare_start(&r->prepare, on_prepare);
    uv_check_start(&r->check, on_check);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    /* Timers keep the loop alive; prepare/check/signals must not on their own. */
    uv_unref((uv_handle_t *)&r->prepare);
    uv_unref((uv_handle_t *)&r->check);
    uv_unref((uv_handle_t *)&r->sigint);
    uv_unref((uv_handle_t *)&r->sigterm);
    r->start_ms = uv_now(&r->loop);
    r->start_us = bench_payload_now_us();
    uint64_t every = o->conn_rate > 0 || o->interval_ms == 0 ? 1 : o->interval_ms;
    uv_timer_start(&r->launch_timer, on_launch, 0, every);
    uv_timer_start(&r->tick_timer, on_tick, 1000, 1000);
    if (o->duration_s > 0)
        uv_timer_start(&r->duration_timer, on_duration, (uint64_t)(o->duration_s * 1000), 0);
}

static void fill_stats(struct run *r)
{
    const struct bench_opts *o = r->o;
    struct bench_stats *st = &r->st;
    st->mode = bench_opts_mode_name(o->mode);
    st->clients = r->n;
    st->elapsed_s = (double)(r->stop_us - r->start_us) / 1e6;
    st->latency = o->mode == BENCH_SUB && o->hdr_ts ? &r->latency : NULL;
    st->conn_latency = &r->conn_latency;
    st->has_seq = o->mode == BENCH_SUB && o->hdr_seq;
    st->samples = r->samples;
    st->n_samples = r->n_samples;
}

static void teardown(struct run *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        struct client *c = &r->clients[i];
        free(c->id);
        free(c->topic);
        free(c->pids);
        bench_seq_free(&c->seqs);
    }
    free(r->clients);
    free(r->scratch);
    free(r->payload);
    free(r->samples);
    tls_client_ctx_destroy(&r->tls);
}

int bench_run(const struct bench_opts *o)
{
    struct run *r = xcalloc(1, sizeof(*r));
    int code = BENCH_EXIT_OK;
    char err[512];

    r->o = o;
    bench_hist_init(&r->latency);
    bench_hist_init(&r->conn_latency);
    if (resolve(r) < 0) {
        code = BENCH_EXIT_NOCONNECT;
        goto out;
    }
    if (o->tls) {
        r->tls = tls_client_ctx_create(o->cacertfile, o->certfile, o->keyfile, err, sizeof(err));
        if (!r->tls) {
            fprintf(stderr, "shoal-bench: %s\n", err);
            code = BENCH_EXIT_USAGE;
            goto out;
        }
    }
    setup_payload(r);
    if (setup_clients(r) < 0) {
        code = BENCH_EXIT_USAGE;
        goto out;
    }
    r->scratch = xmalloc(SCRATCH_LEN);
    setup_loop(r);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop) != 0)
        fprintf(stderr, "shoal-bench: loop closed with handles open\n");
    if (r->stop_us == 0)
        r->stop_us = bench_payload_now_us();

    fill_stats(r);
    if (o->json) {
        bench_report_json(stdout, &r->st);
        if (!o->quiet)
            bench_report_text(stderr, &r->st);
    } else {
        bench_report_text(stdout, &r->st);
    }
    if (r->st.connected == 0) {
        fprintf(stderr, "shoal-bench: no client could connect\n");
        code = BENCH_EXIT_NOCONNECT;
    }
out:
    teardown(r);
    free(r);
    return code;
}
