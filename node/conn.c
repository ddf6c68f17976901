/*
 * Client sockets. Reads go into the broker's shared scratch buffer unless this connection
 * holds a partial packet, in which case they go into its own `in` buffer, which is freed as
 * soon as it empties: an idle connection owns no read buffer. Writes are batched: handlers
 * append to `out` during a loop pass and the prepare hook sends everything with one
 * uv_try_write, falling back to uv_write for the remainder. Close is deferred until queued
 * output (a final CONNACK or DISCONNECT) has been written or a short timeout expires.
 */
#include "node/conn.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/listener.h"
#include "node/log.h"
#include "node/msg.h"
#include "node/session.h"
#include "node/tls.h"
#include "node/ws.h"
#include "node/xport.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define CONN_CONNECT_TIMEOUT_MS 10000u
#define CONN_CLOSE_TIMEOUT_MS   2000u
#define CONN_STACK_IOV          64

struct conn_wreq {
    uv_write_t req;
    struct conn *c;
    struct buf out;
    struct conn_seg *segs;
    uint32_t n_segs;
    size_t bytes;
};

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_close(uv_handle_t *h);
static void on_timer(struct keepalive_entry *e, uint64_t now_ms);

static uint32_t max_in_packet(const struct conn *c)
{
    return c->b->conf->max_packet_size;
}

void conn_ref(struct conn *c)
{
    c->refs++;
}

static void conn_free(struct conn *c)
{
    if (c->xp) {
        xport_destroy(&c->xp->ws);
        xport_destroy(&c->xp->tls);
        buf_free(&c->xp->raw_out);
        free(c->xp);
        c->xp = NULL;
    }
    buf_free(&c->in);
    buf_free(&c->out);
    for (uint32_t i = 0; i < c->n_segs; i++)
        msg_unref(&c->segs[i].m);
    free(c->segs);
    c->segs = NULL;
    for (uint32_t i = 0; c->aliases && i < (uint32_t)c->alias_max_in + c->alias_max_out; i++)
        free(c->aliases[i]);
    free(c->aliases);
    c->aliases = NULL;
    free(c);
}

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct conn) <= 488, "struct conn outgrew its 496-byte malloc chunk");
#endif

char **conn_aliases(struct conn *c)
{
    if (!c->aliases)
        c->aliases = xcalloc((size_t)c->alias_max_in + c->alias_max_out, sizeof(char *));
    return c->aliases;
}

void conn_unref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

void conn_accept(struct broker *b, struct listener *l, uv_stream_t *server)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->b = b;
    c->refs = 1;
    int rc = uv_tcp_init(b->loop, &c->tcp);
    if (rc < 0) {
        free(c);
        log_ratelimited(LOG_LEVEL_WARN, "conn", "tcp init failed rc=%s", err_str(rc));
        return;
    }
    c->tcp.data = l;
    /* From here on the handle must be closed, even on error. */
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    l->n_conns++;
    c->last_rx_ms = clock_now_ms();

    rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "conn", "accept failed rc=%s", err_str(rc));
        goto out_close;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            memcpy(c->peer_ip, &a->sin_addr, 4);
            c->peer_port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            memcpy(c->peer_ip, &a->sin6_addr, 16);
            c->peer_port = ntohs(a->sin6_port);
            c->peer_is_v6 = true;
        }
    }
    int32_t max = l->cl->max_connections;
    if (max >= 0 && l->n_conns > (uint32_t)max) {
        b->stats.connections_refused++;
        log_ratelimited(LOG_LEVEL_WARN, "conn", "max_connections reached port=%u peer=%s",
                        l->cl->port, conn_log_peer(c));
        goto out_close;
    }
    if (b->stopping)
        goto out_close;
    if (b->conf->set_tcp_nodelay)
        (void)uv_tcp_nodelay(&c->tcp, 1);
    if (l->tls || l->cl->protocol == CONF_PROTO_WEBSOCKETS) {
        const char *peer = conn_log_peer(c);
        c->xp = xcalloc(1, sizeof(*c->xp));
        if (l->tls)
            c->xp->tls = tls_create(l->tls, peer);
        if (l->cl->protocol == CONF_PROTO_WEBSOCKETS)
            c->xp->ws = ws_create(peer);
    }
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0)
        goto out_close;
    c->is_reading = true;
    keepalive_arm(&b->wheel, &c->ka, clock_now_ms() + CONN_CONNECT_TIMEOUT_MS, on_timer);
    return;

out_close:
    c->state = CONN_CLOSING;
    c->has_closed = true;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static char *log_slot(void)
{
    static char bufs[4][80];
    static unsigned next;
    return bufs[next++ % 4];
}

const char *conn_log_id(const struct conn *c)
{
    char *out = log_slot();
    if (!c->s)
        return "-";
    return log_escape(out, 80, c->s->client_id, c->s->client_id_len);
}

const char *conn_log_peer(const struct conn *c)
{
    char *out = log_slot();
    char ip[48] = "?";
    (void)uv_inet_ntop(c->peer_is_v6 ? AF_INET6 : AF_INET, c->peer_ip, ip, sizeof(ip));
    (void)snprintf(out, 80, c->peer_is_v6 ? "[%s]:%u" : "%s:%u", ip, c->peer_port);
    return out;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct conn *c = container_of(h, struct conn, tcp);
    struct broker *b = c->b;
    (void)hint;

    /* A transport turns raw reads into plaintext elsewhere, so raw bytes never go into `in`. */
    if (c->xp) {
        bool is_free = !b->scratch_busy;
        b->scratch_busy = true;
        *out = uv_buf_init(is_free ? (char *)b->scratch : xmalloc(BROKER_SCRATCH_SIZE),
                           BROKER_SCRATCH_SIZE);
        return;
    }
    if (buf_used(&c->in) == 0 && !b->scratch_busy) {
        b->scratch_busy = true;
        *out = uv_buf_init((char *)b->scratch, BROKER_SCRATCH_SIZE);
        return;
    }
    size_t want = BROKER_SCRATCH_SIZE;
    size_t total = 0;
    if (codec_frame(buf_head(&c->in), buf_used(&c->in), 0, &total) == 1 &&
        total > buf_used(&c->in) && total - buf_used(&c->in) > want)
        want = total - buf_used(&c->in);
    uint8_t *p = buf_reserve(&c->in, want);
    *out = uv_buf_init((char *)p, (unsigned)(c->in.cap - c->in.len));
}

/* Decodes and handles whole packets in p[0..n). Returns the bytes consumed. */
static size_t process(struct conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    uint32_t limit = max_in_packet(c);

    /* Reject a non-MQTT peer at its first byte instead of waiting for a whole "packet". */
    if (c->state == CONN_NEW && n > 0 && p[0] != 0x10) {
        handle_fail(c, ERR_PROTOCOL);
        return n;
    }
    /* A paused publisher keeps its unprocessed bytes buffered until it is resumed, and so does
     * a client whose CONNECT waits for its password check. */
    while (off < n && c->state != CONN_CLOSING && c->state != CONN_CONNECTING && !c->is_paused) {
        struct codec_packet pkt;
        int rc = codec_decode(p + off, n - off, c->version, true, limit, &pkt);
        if (rc == CODEC_AGAIN)
            break;
        if (rc < 0) {
            handle_fail(c, rc);
            return n;
        }
        c->b->cur_raw = p + off;
        c->b->cur_raw_len = (size_t)rc;
        off += (size_t)rc;
        c->b->stats.msgs_received++;
        if (handle_packet(c, &pkt) < 0)
            return n;
    }
    return off;
}

/* Runs raw bytes up through the transport layers, into up. Bytes a layer must send back
 * (handshake records, pongs, refusals) go to raw_out, through the layers below it. */
static int xp_input(struct conn *c, const uint8_t *p, size_t n, struct buf *up)
{
    struct conn_xp *xp = c->xp;
    int rc;

    if (!xp->tls || !xp->ws) {
        struct xport *x = xp->tls ? xp->tls : xp->ws;
        return x->ops->input(x, p, n, up, &xp->raw_out);
    }
    struct buf *mid = &c->b->xbuf[0];
    struct buf *back = &c->b->xbuf[1];
    buf_reset(mid);
    buf_reset(back);
    rc = xp->tls->ops->input(xp->tls, p, n, mid, &xp->raw_out);
    if (rc == 0 && buf_used(mid) > 0)
        rc = xp->ws->ops->input(xp->ws, buf_head(mid), buf_used(mid), up, back);
    if (buf_used(back) > 0) {
        uv_buf_t v = uv_buf_init((char *)buf_head(back), (unsigned)buf_used(back));
        int wrc = xp->tls->ops->output(xp->tls, &v, 1, &xp->raw_out);
        if (rc == 0)
            rc = wrc;
    }
    return rc;
}

/* Processes plaintext that arrived through transport layers. */
static void process_plain(struct conn *c, const uint8_t *p, size_t n)
{
    if (buf_used(&c->in) == 0) {
        size_t used = process(c, p, n);
        if (used < n && c->state != CONN_CLOSING)
            buf_append(&c->in, p + used, n - used);
        return;
    }
    buf_append(&c->in, p, n);
    size_t used = process(c, buf_head(&c->in), buf_used(&c->in));
    buf_consume(&c->in, used);
}

static void on_read_xp(struct conn *c, ssize_t nread, const uv_buf_t *buf)
{
    struct broker *b = c->b;
    int rc = 0;

    if (nread > 0 && c->state != CONN_CLOSING) {
        struct buf *up = &b->xbuf[2];
        buf_reset(up);
        rc = xp_input(c, (const uint8_t *)buf->base, (size_t)nread, up);
        if (buf_used(&c->xp->raw_out) > 0)
            broker_flush_later(b, c);
        if (rc == 0 && buf_used(up) > 0)
            process_plain(c, buf_head(up), buf_used(up));
    }
    if (buf->base == (char *)b->scratch)
        b->scratch_busy = false;
    else
        free(buf->base);
    if (buf_used(&c->in) == 0 || c->state == CONN_CLOSING)
        buf_free(&c->in);
    if (rc < 0) {
        c->xp->is_failed = true;
        conn_close(c, rc);
    } else if (nread < 0) {
        conn_close(c, nread == UV_EOF ? ERR_CLOSED : (int)nread);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = container_of(st, struct conn, tcp);
    struct broker *b = c->b;
    bool from_scratch = buf->base == (char *)b->scratch;

    if (nread > 0) {
        b->stats.bytes_received += (uint64_t)nread;
        c->last_rx_ms = clock_now_ms();
    }
    if (c->xp) {
        on_read_xp(c, nread, buf);
        return;
    }
    if (from_scratch) {
        size_t used = nread > 0 ? process(c, b->scratch, (size_t)nread) : 0;
        if (nread > 0 && used < (size_t)nread && c->state != CONN_CLOSING)
            buf_append(&c->in, b->scratch + used, (size_t)nread - used);
        b->scratch_busy = false;
    } else if (nread > 0) {
        buf_commit(&c->in, (size_t)nread);
        size_t used = process(c, buf_head(&c->in), buf_used(&c->in));
        buf_consume(&c->in, used);
    }
    if (buf_used(&c->in) == 0 || c->state == CONN_CLOSING)
        buf_free(&c->in);
    if (nread < 0)
        conn_close(c, nread == UV_EOF ? ERR_CLOSED : (int)nread);
}

uint8_t *conn_out_reserve(struct conn *c, size_t n)
{
    return buf_reserve(&c->out, n);
}

void conn_out_commit(struct conn *c, size_t n)
{
    buf_commit(&c->out, n);
    c->out_bytes += n;
    broker_flush_later(c->b, c);
}

void conn_out_payload(struct conn *c, struct msg *m)
{
    if (m->payload_len == 0)
        return;
    if (c->n_segs == c->cap_segs) {
        c->cap_segs = c->cap_segs ? c->cap_segs * 2 : 8;
        c->segs = xrealloc(c->segs, c->cap_segs * sizeof(*c->segs));
    }
    c->segs[c->n_segs].off = c->out.len;
    c->segs[c->n_segs].m = msg_ref(m);
    c->n_segs++;
    c->out_bytes += m->payload_len;
    broker_flush_later(c->b, c);
}

int conn_send(struct conn *c, const struct codec_packet *p)
{
    size_t n = codec_size(c->version ? c->version : CODEC_V311, p);
    if (n == 0 || (c->max_packet_out && n > c->max_packet_out))
        return ERR_PACKET_TOO_LARGE;
    uint8_t *w = conn_out_reserve(c, n);
    size_t k = codec_write(w, c->version ? c->version : CODEC_V311, p);
    conn_out_commit(c, k);
    c->b->stats.msgs_sent++;
    return 0;
}

static void do_close(struct conn *c)
{
    if (c->has_closed)
        return;
    c->has_closed = true;
    keepalive_cancel(&c->ka);
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void release_segs(struct conn_seg *segs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        msg_unref(&segs[i].m);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn_wreq *w = container_of(req, struct conn_wreq, req);
    struct conn *c = w->c;

    c->inflight_bytes -= w->bytes;
    c->writes_pending--;
    release_segs(w->segs, w->n_segs);
    free(w->segs);
    buf_free(&w->out);
    free(w);
    if (c->s && (c->s->is_congested || c->s->is_flow_exempt))
        session_flow_check(c->s);
    if (status < 0 && !c->has_closed)
        conn_close(c, status);
    /* A failed write ends a closing connection too; otherwise close once the last write went. */
    if (!c->has_closed && c->state == CONN_CLOSING &&
        (status < 0 || (c->close_after_flush && c->writes_pending == 0 && c->out_bytes == 0)))
        do_close(c);
    conn_unref(c);
}

/* Builds the iovec list for out + segs. Returns the count (<= cap) or 0 if cap is short. */
static unsigned build_iov(struct conn *c, uv_buf_t *iov, unsigned cap)
{
    unsigned n = 0;
    size_t prev = 0;
    for (uint32_t i = 0; i < c->n_segs; i++) {
        if (n + 2 > cap)
            return 0;
        size_t off = c->segs[i].off;
        if (off > prev)
            iov[n++] = uv_buf_init((char *)c->out.data + prev, (unsigned)(off - prev));
        struct msg *m = c->segs[i].m;
        iov[n++] = uv_buf_init((char *)m->payload, m->payload_len);
        prev = off;
    }
    if (c->out.len > prev) {
        if (n + 1 > cap)
            return 0;
        iov[n++] = uv_buf_init((char *)c->out.data + prev, (unsigned)(c->out.len - prev));
    }
    return n;
}

uint64_t conn_bytes_written(const struct conn *c)
{
    size_t pending = uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    return c->bytes_handed - (pending < c->bytes_handed ? pending : c->bytes_handed);
}

void conn_pause(struct conn *c)
{
    if (c->is_paused || c->state != CONN_ACTIVE)
        return;
    if (c->is_reading)
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
    c->is_reading = false;
    c->is_paused = true;
    conn_ref(c);
    c->paused_next = c->b->paused;
    c->b->paused = c;
}

void conn_hold(struct conn *c)
{
    if (c->is_reading)
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
    c->is_reading = false;
}

void conn_resume(struct conn *c)
{
    c->is_paused = false;
    if (c->state != CONN_ACTIVE || c->has_closed)
        return;
    c->last_rx_ms = clock_now_ms(); /* time spent paused is not the client's silence */
    if (buf_used(&c->in) > 0) {
        size_t used = process(c, buf_head(&c->in), buf_used(&c->in));
        buf_consume(&c->in, used);
        if (buf_used(&c->in) == 0 || c->state == CONN_CLOSING)
            buf_free(&c->in);
    }
    if (c->state == CONN_ACTIVE && !c->is_paused && !c->is_reading &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->is_reading = true;
}

/* Encodes iov[0..n) down through the transport layers into raw_out. */
static int xp_output(struct conn *c, const uv_buf_t *iov, unsigned n)
{
    struct conn_xp *xp = c->xp;

    if (!xp->tls || !xp->ws) {
        struct xport *x = xp->tls ? xp->tls : xp->ws;
        return x->ops->output(x, iov, n, &xp->raw_out);
    }
    struct buf *mid = &c->b->xbuf[0];
    buf_reset(mid);
    int rc = xp->ws->ops->output(xp->ws, iov, n, mid);
    if (rc == 0) {
        uv_buf_t v = uv_buf_init((char *)buf_head(mid), (unsigned)buf_used(mid));
        rc = xp->tls->ops->output(xp->tls, &v, 1, &xp->raw_out);
    }
    return rc;
}

/* Appends the layers' graceful close (WebSocket close frame, then TLS close_notify). */
static void xp_shutdown(struct conn *c)
{
    struct conn_xp *xp = c->xp;

    if (xp->ws && xp->tls) {
        struct buf *mid = &c->b->xbuf[0];
        buf_reset(mid);
        xp->ws->ops->shutdown(xp->ws, mid);
        uv_buf_t v = uv_buf_init((char *)buf_head(mid), (unsigned)buf_used(mid));
        if (v.len > 0)
            (void)xp->tls->ops->output(xp->tls, &v, 1, &xp->raw_out);
    } else if (xp->ws) {
        xp->ws->ops->shutdown(xp->ws, &xp->raw_out);
    }
    if (xp->tls)
        xp->tls->ops->shutdown(xp->tls, &xp->raw_out);
}

/* Starts w (its buffers and segments) with uv_write and accounts for it; on failure frees w
 * and closes the connection. */
static void start_write(struct conn *c, struct conn_wreq *w, const uv_buf_t *iov, unsigned n)
{
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, n, on_write);
    if (rc < 0) {
        release_segs(w->segs, w->n_segs);
        free(w->segs);
        buf_free(&w->out);
        free(w);
        conn_close(c, rc);
        return;
    }
    c->inflight_bytes += w->bytes;
    c->bytes_handed += w->bytes;
    c->writes_pending++;
    conn_ref(c);
}

/* Hands raw_out to the socket: what the kernel takes now, the rest through uv_write. */
static void write_raw(struct conn *c)
{
    struct buf *r = &c->xp->raw_out;
    size_t total = buf_used(r);
    size_t done = 0;

    if (c->writes_pending == 0) {
        uv_buf_t v = uv_buf_init((char *)buf_head(r), (unsigned)total);
        int rc = uv_try_write((uv_stream_t *)&c->tcp, &v, 1);
        if (rc > 0) {
            done = (size_t)rc;
            c->bytes_handed += done;
        } else if (rc < 0 && rc != UV_EAGAIN) {
            buf_free(r);
            conn_close(c, rc);
            return;
        }
    }
    if (done == total) {
        buf_free(r);
        return;
    }
    buf_consume(r, done);
    struct conn_wreq *w = xcalloc(1, sizeof(*w));
    w->c = c;
    w->out = *r;
    w->bytes = total - done;
    memset(r, 0, sizeof(*r));
    uv_buf_t v = uv_buf_init((char *)buf_head(&w->out), (unsigned)w->bytes);
    start_write(c, w, &v, 1);
}

/* Flush of a transport connection: the payload is encoded (copied) into raw_out, so the
 * message references are released at once. */
static void flush_xp(struct conn *c)
{
    if (c->out_bytes > 0) {
        uv_buf_t stack[CONN_STACK_IOV];
        uv_buf_t *iov = stack;
        unsigned n = build_iov(c, iov, CONN_STACK_IOV);
        if (n == 0) {
            iov = xmalloc((c->n_segs * 2 + 1) * sizeof(*iov));
            n = build_iov(c, iov, c->n_segs * 2 + 1);
        }
        int rc = xp_output(c, iov, n);
        if (iov != stack)
            free(iov);
        c->b->stats.bytes_sent += c->out_bytes;
        release_segs(c->segs, c->n_segs);
        free(c->segs);
        c->segs = NULL;
        c->n_segs = c->cap_segs = 0;
        buf_free(&c->out);
        c->out_bytes = 0;
        if (rc < 0) {
            c->xp->is_failed = true;
            conn_close(c, rc);
            return;
        }
    }
    if (buf_used(&c->xp->raw_out) > 0)
        write_raw(c);
}

static void flush_plain(struct conn *c)
{
    if (c->out_bytes == 0)
        return;
    uv_buf_t stack[CONN_STACK_IOV];
    uv_buf_t *iov = stack;
    unsigned cap = CONN_STACK_IOV;
    unsigned n = build_iov(c, iov, cap);
    if (n == 0) {
        cap = c->n_segs * 2 + 1;
        iov = xmalloc(cap * sizeof(*iov));
        n = build_iov(c, iov, cap);
    }
    size_t total = c->out_bytes;
    size_t done = 0;
    if (c->writes_pending == 0) {
        int rc = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
        if (rc > 0) {
            done = (size_t)rc;
            c->bytes_handed += done;
        } else if (rc < 0 && rc != UV_EAGAIN) {
            if (iov != stack)
                free(iov);
            release_segs(c->segs, c->n_segs);
            c->n_segs = 0;
            buf_reset(&c->out);
            c->out_bytes = 0;
            conn_close(c, rc);
            return;
        }
    }
    c->b->stats.bytes_sent += total;
    if (done == total) {
        /* An idle connection keeps no output storage either. */
        release_segs(c->segs, c->n_segs);
        free(c->segs);
        c->segs = NULL;
        c->n_segs = c->cap_segs = 0;
        buf_free(&c->out);
        c->out_bytes = 0;
        if (iov != stack)
            free(iov);
        return;
    }
    /* Skip what the kernel took, then hand the rest (and ownership of the buffers) to libuv. */
    unsigned first = 0;
    size_t skip = done;
    while (skip >= iov[first].len) {
        skip -= iov[first].len;
        first++;
    }
    iov[first].base += skip;
    iov[first].len -= (unsigned)skip;

    struct conn_wreq *w = xmalloc(sizeof(*w));
    w->c = c;
    w->out = c->out;
    w->segs = c->segs;
    w->n_segs = c->n_segs;
    w->bytes = total - done;
    memset(&c->out, 0, sizeof(c->out));
    c->segs = NULL;
    c->n_segs = c->cap_segs = 0;
    c->out_bytes = 0;
    start_write(c, w, iov + first, n - first);
    if (iov != stack)
        free(iov);
}

void conn_flush(struct conn *c)
{
    if (c->has_closed || c->corked)
        return;
    uint64_t written = conn_bytes_written(c);
    if (c->xp)
        flush_xp(c);
    else
        flush_plain(c);
    /* What the kernel took is progress for flow control. A consumer that keeps up has all its
     * output taken at once, and with no write request left to complete, nothing else would
     * tell its session that it caught up. */
    if (c->s && (c->s->is_congested || c->s->is_flow_exempt) && conn_bytes_written(c) != written)
        session_flow_check(c->s);
}

void conn_close(struct conn *c, int err)
{
    if (c->state == CONN_CLOSING)
        return;
    struct broker *b = c->b;
    bool was_active = c->state == CONN_ACTIVE;
    c->state = CONN_CLOSING;
    if (c->is_reading) {
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
        c->is_reading = false;
    }
    if (c->s) {
        struct session *s = c->s;
        if (b->conf->connection_messages)
            log_info("conn", "client disconnected client_id=%s peer=%s rc=%s", conn_log_id(c),
                     conn_log_peer(c), err == 0 ? "disconnect" : err_str(err));
        session_detach(s, err);
    }
    if (was_active && ALWAYS(b->stats.clients_connected > 0))
        b->stats.clients_connected--;
    conn_flush(c);
    if (c->xp && !c->xp->is_failed && !c->has_closed) {
        xp_shutdown(c);
        conn_flush(c);
    }
    /* At shutdown the timing wheel no longer runs: what the kernel did not take is dropped. */
    if (c->writes_pending == 0 || b->stopping)
        do_close(c);
    else {
        c->close_after_flush = true;
        keepalive_arm(&b->wheel, &c->ka, clock_now_ms() + CONN_CLOSE_TIMEOUT_MS, on_timer);
    }
}

void conn_close_now(struct conn *c)
{
    if (c->state != CONN_CLOSING)
        conn_close(c, ERR_SHUTTING_DOWN);
    do_close(c);
}

void conn_cork(struct conn *c)
{
    c->corked++;
    conn_ref(c);
}

static void drop_output(struct conn *c)
{
    release_segs(c->segs, c->n_segs);
    free(c->segs);
    c->segs = NULL;
    c->n_segs = c->cap_segs = 0;
    buf_free(&c->out);
    c->out_bytes = 0;
}

void conn_uncork(struct conn *c, bool is_ok)
{
    if (ALWAYS(c->corked > 0))
        c->corked--;
    if (!is_ok && !c->has_closed) {
        drop_output(c);
        if (c->xp)
            c->xp->is_failed = true; /* no close alert or frame either */
        conn_close(c, ERR_SERVER_UNAVAILABLE);
    }
    if (c->corked == 0 && !c->has_closed && c->out_bytes > 0)
        broker_flush_later(c->b, c);
    conn_unref(c);
}

static void on_timer(struct keepalive_entry *e, uint64_t now_ms)
{
    struct conn *c = container_of(e, struct conn, ka);

    switch (c->state) {
    case CONN_NEW:
    case CONN_CONNECTING:
        log_ratelimited(LOG_LEVEL_INFO, "conn", "no CONNECT in time peer=%s", conn_log_peer(c));
        conn_close(c, ERR_TIMEOUT);
        break;
    case CONN_ACTIVE: {
        uint64_t limit = (uint64_t)c->keepalive_s * 1500u;
        if (c->keepalive_s == 0)
            break;
        if (now_ms - c->last_rx_ms >= limit) {
            log_ratelimited(LOG_LEVEL_INFO, "conn", "keepalive timeout client_id=%s peer=%s",
                            conn_log_id(c), conn_log_peer(c));
            handle_fail(c, ERR_KEEPALIVE);
        } else {
            keepalive_arm(&c->b->wheel, &c->ka, c->last_rx_ms + limit, on_timer);
        }
        break;
    }
    case CONN_CLOSING:
        do_close(c);
        break;
    }
}

void conn_keepalive_start(struct conn *c)
{
    if (c->keepalive_s == 0) {
        keepalive_cancel(&c->ka);
        return;
    }
    keepalive_arm(&c->b->wheel, &c->ka, c->last_rx_ms + (uint64_t)c->keepalive_s * 1500u, on_timer);
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = container_of(h, struct conn, tcp);
    struct broker *b = c->b;

    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    conn_listener(c)->n_conns--;
    conn_unref(c);
}
