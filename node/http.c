/*
 * The metrics and health endpoint (http_listener) on the broker's loop. Each connection
 * carries one request, parsed by http-parser as bytes arrive; only the path is kept. The
 * request head is capped by never giving the parser more than HTTP_HEAD_MAX bytes before its
 * headers are complete, bodies are refused past HTTP_BODY_MAX, a request must be complete
 * within HTTP_TIMEOUT_MS (on the broker's timing wheel) and at most HTTP_MAX_CONNS
 * connections are open at once: a scraper or a port scan costs a few kilobytes and never
 * holds the loop.
 *
 * Every response has a Content-Length and Connection: close. After it is written the socket
 * is half-closed and read until the client closes it (briefly, see HTTP_LINGER_MS): closing
 * with unread request bytes would make the kernel send a reset that can destroy the response
 * before the client has read it.
 */
#include "node/http.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cluster/cluster.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "node/keepalive.h"
#include "node/log.h"
#include "node/metrics.h"
#include "store/store.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define HTTP_MAX_CONNS  64
#define HTTP_HEAD_MAX   8192u /* request line and headers */
#define HTTP_BODY_MAX   8192u
#define HTTP_TIMEOUT_MS 10000u /* from accept to the whole response written */
#define HTTP_LINGER_MS  2000u
#define HTTP_PATH_MAX   256u /* longer request targets get 404 */
#define HTTP_READ_SIZE  2048u
#define HTTP_SOCKETS    2 /* 0.0.0.0 and :: when no bind address is given */

struct http {
    struct broker *b;
    uv_tcp_t tcp[HTTP_SOCKETS];
    int n_tcp;
    unsigned open; /* handles not closed yet: listening sockets and connections */
    struct http_conn *conns;
    uint32_t n_conns;
    bool is_stopping;
};

enum http_phase {
    HTTP_READING = 0, /* the request is being parsed */
    HTTP_WRITING,     /* the response is in a uv_write */
    HTTP_LINGERING,   /* response sent, write side shut: reading until the client closes */
    HTTP_CLOSING,     /* uv_close called */
};

struct http_conn {
    uv_tcp_t tcp;
    struct http *h;
    struct http_conn *next;
    struct http_conn *prev;
    http_parser parser;
    struct keepalive_entry timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct buf body; /* a rendered response body (/metrics) */
    char target[HTTP_PATH_MAX + 1];
    uint32_t target_len;
    uint32_t fed;      /* request bytes given to the parser */
    uint32_t body_len; /* request body bytes seen */
    uint8_t phase;     /* enum http_phase */
    bool is_target_long;
    bool is_head_done;
    bool is_too_large;   /* body over HTTP_BODY_MAX */
    bool is_bad_version; /* not HTTP/1.x */
    char head[256];      /* the response's status line and headers */
    char rbuf[HTTP_READ_SIZE];
};

static const char http_busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
                                "charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                                "busy\n";

static void http_release(struct http *h)
{
    if (--h->open == 0 && h->is_stopping)
        free(h);
}

static void on_listener_close(uv_handle_t *t)
{
    http_release(t->data);
}

static void on_conn_close(uv_handle_t *t)
{
    struct http_conn *hc = container_of(t, struct http_conn, tcp);
    struct http *h = hc->h;

    if (hc->prev)
        hc->prev->next = hc->next;
    else
        h->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    h->n_conns--;
    buf_free(&hc->body);
    free(hc);
    http_release(h);
}

static void close_conn(struct http_conn *hc)
{
    if (hc->phase == HTTP_CLOSING)
        return;
    hc->phase = HTTP_CLOSING;
    keepalive_cancel(&hc->timer);
    uv_close((uv_handle_t *)&hc->tcp, on_conn_close);
}

static void on_timer(struct keepalive_entry *e, uint64_t now_ms)
{
    struct http_conn *hc = container_of(e, struct http_conn, timer);
    (void)now_ms;
    if (hc->phase == HTTP_READING)
        log_ratelimited(LOG_LEVEL_INFO, "http", "request not complete in time, closing");
    close_conn(hc);
}

/* ---- readiness ---- */

const char *http_unready_reason(const struct broker *b)
{
    if (b->stopping)
        return "stopping\n";
    if (b->draining)
        return "draining\n";
    /* The MQTT listeners open only once start-up is over (stored sessions loaded). */
    if (!b->listeners)
        return "starting\n";
    if (!store_is_up(b->store))
        return "store unreachable\n";
    if (b->cluster && !b->has_joined)
        return "cluster not joined\n";
    return NULL;
}

/* ---- responses ---- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *hc = container_of(req, struct http_conn, sreq);
    if (hc->phase == HTTP_CLOSING)
        return;
    if (status < 0) {
        close_conn(hc);
        return;
    }
    /* Reading goes on (and discards) until the client closes, within a short bound. */
    keepalive_arm(&hc->h->b->wheel, &hc->timer, clock_now_ms() + HTTP_LINGER_MS, on_timer);
}

static void on_write(uv_write_t *req, int status)
{
    struct http_conn *hc = container_of(req, struct http_conn, wreq);
    if (hc->phase == HTTP_CLOSING)
        return;
    buf_free(&hc->body);
    if (status < 0 || uv_shutdown(&hc->sreq, (uv_stream_t *)&hc->tcp, on_shutdown) < 0) {
        close_conn(hc);
        return;
    }
    hc->phase = HTTP_LINGERING;
}

/* Sends the response: status, content type, body (p, n; not sent for HEAD) and an optional
 * extra header line (with its CRLF). */
static void respond(struct http_conn *hc, int status, const char *reason, const char *type,
                    const char *p, size_t n, const char *extra)
{
    bool is_head = hc->is_head_done && hc->parser.method == HTTP_HEAD;
    int len = snprintf(hc->head, sizeof(hc->head),
                       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                       status, reason, type, n, extra ? extra : "");
    if (NEVER(len < 0 || (size_t)len >= sizeof(hc->head))) {
        close_conn(hc);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(hc->head, (unsigned)len), uv_buf_init((char *)p, (unsigned)n)};
    unsigned nbufs = is_head || n == 0 ? 1 : 2;
    hc->phase = HTTP_WRITING;
    if (uv_write(&hc->wreq, (uv_stream_t *)&hc->tcp, bufs, nbufs, on_write) < 0)
        close_conn(hc);
}

static void respond_text(struct http_conn *hc, int status, const char *reason, const char *text,
                         const char *extra)
{
    respond(hc, status, reason, "text/plain; charset=utf-8", text, strlen(text), extra);
}

/* The path of the request target, without its query; false when there is none. */
static bool target_path(struct http_conn *hc, const char **path, size_t *len)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(hc->target, hc->target_len, 0, &u) != 0 ||
        !(u.field_set & (1u << UF_PATH)))
        return false;
    *path = hc->target + u.field_data[UF_PATH].off;
    *len = u.field_data[UF_PATH].len;
    return true;
}

static bool path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

/* Routes a complete request. */
static void answer(struct http_conn *hc)
{
    struct broker *b = hc->h->b;
    bool is_get = hc->parser.method == HTTP_GET || hc->parser.method == HTTP_HEAD;
    const char *path = "";
    size_t len = 0;

    if (hc->is_target_long || !target_path(hc, &path, &len) ||
        !(path_is(path, len, "/metrics") || path_is(path, len, "/healthz") ||
          path_is(path, len, "/readyz"))) {
        respond_text(hc, 404, "Not Found", "not found\n", NULL);
        return;
    }
    if (!is_get) {
        respond_text(hc, 405, "Method Not Allowed", "method not allowed\n", "Allow: GET, HEAD\r\n");
        return;
    }
    if (path_is(path, len, "/healthz")) {
        respond_text(hc, 200, "OK", "ok\n", NULL);
    } else if (path_is(path, len, "/readyz")) {
        const char *why = http_unready_reason(b);
        if (why)
            respond_text(hc, 503, "Service Unavailable", why, NULL);
        else
            respond_text(hc, 200, "OK", "ready\n", NULL);
    } else {
        metrics_render(b, &hc->body);
        respond(hc, 200, "OK", METRICS_CONTENT_TYPE, (const char *)buf_head(&hc->body),
                buf_used(&hc->body), NULL);
    }
}

/* ---- parsing ---- */

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_conn *hc = p->data;
    if (hc->is_target_long || n > HTTP_PATH_MAX - hc->target_len) {
        hc->is_target_long = true;
        return 0;
    }
    memcpy(hc->target + hc->target_len, at, n);
    hc->target_len += (uint32_t)n;
    hc->target[hc->target_len] = '\0';
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *hc = p->data;
    hc->is_head_done = true;
    if (p->http_major != 1) {
        hc->is_bad_version = true;
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > HTTP_BODY_MAX) {
        hc->is_too_large = true;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_conn *hc = p->data;
    (void)at;
    if (n > HTTP_BODY_MAX - hc->body_len) {
        hc->is_too_large = true;
        return -1;
    }
    hc->body_len += (uint32_t)n;
    return 0;
}

/* One request per connection: whatever follows it is never parsed. */
static int on_message_complete(http_parser *p)
{
    struct http_conn *hc = p->data;
    http_parser_pause(p, 1);
    answer(hc);
    return 0;
}

static const http_parser_settings http_settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void refuse(struct http_conn *hc, enum http_errno e)
{
    if (hc->is_too_large) {
        respond_text(hc, 413, "Content Too Large", "request body too large\n", NULL);
        return;
    }
    if (hc->is_bad_version) {
        respond_text(hc, 505, "HTTP Version Not Supported", "HTTP/1.x only\n", NULL);
        return;
    }
    log_ratelimited(LOG_LEVEL_INFO, "http", "bad request: %s", http_errno_name(e));
    respond_text(hc, 400, "Bad Request", "bad request\n", NULL);
}

static void feed(struct http_conn *hc, const char *p, size_t n)
{
    while (n > 0 && hc->phase == HTTP_READING) {
        size_t take = n;
        if (!hc->is_head_done) {
            if (hc->fed >= HTTP_HEAD_MAX) {
                respond_text(hc, 431, "Request Header Fields Too Large",
                             "request header too large\n", NULL);
                return;
            }
            if (take > HTTP_HEAD_MAX - hc->fed)
                take = HTTP_HEAD_MAX - hc->fed;
        }
        size_t used = http_parser_execute(&hc->parser, &http_settings, p, take);
        hc->fed += (uint32_t)used;
        if (hc->phase != HTTP_READING)
            return; /* answered */
        enum http_errno e = HTTP_PARSER_ERRNO(&hc->parser);
        if (e != HPE_OK || used == 0) {
            refuse(hc, e);
            return;
        }
        p += used;
        n -= used;
    }
}

static void on_alloc(uv_handle_t *t, size_t hint, uv_buf_t *out)
{
    struct http_conn *hc = container_of(t, struct http_conn, tcp);
    (void)hint;
    *out = uv_buf_init(hc->rbuf, sizeof(hc->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *hc = container_of(st, struct http_conn, tcp);

    if (nread < 0) {
        /* The client closed (or failed): while a response is being written, uv_close cancels
         * it, which is all there is left to do. */
        close_conn(hc);
        return;
    }
    if (nread > 0 && hc->phase == HTTP_READING)
        feed(hc, buf->base, (size_t)nread);
}

/* ---- listening ---- */

static void on_connection(uv_stream_t *server, int status)
{
    struct http *h = server->data;
    struct broker *b = h->b;

    if (status < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "http", "accept error rc=%s", err_str(status));
        return;
    }
    struct http_conn *hc = xcalloc(1, sizeof(*hc));
    if (uv_tcp_init(b->loop, &hc->tcp) < 0) {
        free(hc);
        return;
    }
    hc->h = h;
    hc->next = h->conns;
    if (h->conns)
        h->conns->prev = hc;
    h->conns = hc;
    h->n_conns++;
    h->open++;
    if (uv_accept(server, (uv_stream_t *)&hc->tcp) < 0 || h->is_stopping) {
        close_conn(hc);
        return;
    }
    if (h->n_conns > HTTP_MAX_CONNS) {
        log_ratelimited(LOG_LEVEL_WARN, "http", "too many connections max=%d", HTTP_MAX_CONNS);
        uv_buf_t v = uv_buf_init((char *)http_busy, sizeof(http_busy) - 1);
        (void)uv_try_write((uv_stream_t *)&hc->tcp, &v, 1);
        close_conn(hc);
        return;
    }
    http_parser_init(&hc->parser, HTTP_REQUEST);
    hc->parser.data = hc;
    keepalive_arm(&b->wheel, &hc->timer, clock_now_ms() + HTTP_TIMEOUT_MS, on_timer);
    if (uv_read_start((uv_stream_t *)&hc->tcp, on_alloc, on_read) < 0)
        close_conn(hc);
}

static int bind_one(struct http *h, const char *host, bool is_optional)
{
    struct sockaddr_storage ss;
    uint16_t port = h->b->conf->http_port;

    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        log_error("http", "bad bind address bind=%s port=%u", host, port);
        return ERR_INVALID;
    }
    uv_tcp_t *t = &h->tcp[h->n_tcp];
    int rc = uv_tcp_init(h->b->loop, t);
    if (rc < 0)
        return rc;
    t->data = h;
    h->open++;
    rc = uv_tcp_bind(t, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 128, on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)t, on_listener_close);
        if (is_optional)
            return 0;
        log_error("http", "cannot listen bind=%s port=%u rc=%s", host, port, err_str(rc));
        return rc;
    }
    h->n_tcp++;
    log_info("http", "listening bind=%s port=%u", host, port);
    return 0;
}

int http_start(struct broker *b)
{
    const struct conf *c = b->conf;
    int rc;

    if (c->http_port == 0 || b->http)
        return 0;
    struct http *h = xcalloc(1, sizeof(*h));
    h->b = b;
    b->http = h;
    if (c->http_bind) {
        rc = bind_one(h, c->http_bind, false);
    } else {
        rc = bind_one(h, "0.0.0.0", false);
        if (rc == 0)
            rc = bind_one(h, "::", true);
    }
    if (rc < 0)
        http_stop(b);
    return rc;
}

void http_stop(struct broker *b)
{
    struct http *h = b->http;
    if (!h)
        return;
    b->http = NULL;
    h->is_stopping = true;
    for (int i = 0; i < h->n_tcp; i++)
        uv_close((uv_handle_t *)&h->tcp[i], on_listener_close);
    h->n_tcp = 0;
    for (struct http_conn *hc = h->conns; hc; hc = hc->next)
        close_conn(hc);
    if (h->open == 0)
        free(h);
}
