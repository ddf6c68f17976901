/*
 * Server side of RFC 6455 as a struct xport layer. Until the upgrade completes, request bytes go
 * to http-parser and only the five header values we check are kept; once the 101 reply is out
 * that state is freed and a wslay event context takes over. An idle connection then holds this
 * small struct and wslay's context, about 8.7 KB, nearly all of it wslay's fixed 4 KiB input and
 * output buffers.
 *
 * wslay runs without message buffering: each chunk of binary payload is appended to *up as soon
 * as it is unmasked, whatever the frame and message boundaries, because an MQTT packet may span
 * frames and one frame may hold several packets; a large message is never held twice. Control
 * frames stay with wslay, which answers pings and closes. Everything wslay queues is drained
 * into *down before each call returns, so no reply waits inside wslay between calls.
 */
#include "node/ws.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "node/digest.h"
#include "node/err.h"
#include "node/log.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* The upgrade request, headers included, must fit in this many bytes. */
#define WS_REQUEST_MAX 8192
/* Longer than any header name we look for; longer names are skipped without being stored. */
#define WS_NAME_MAX 24
/* Largest frame payload: one MQTT packet of the largest encodable size (fixed header byte, four
 * length bytes, 2^28 - 1 bytes). Payloads are streamed, so this bounds no allocation. */
#define WS_FRAME_MAX ((1ull << 28) + 4)
/* Sec-WebSocket-Key is the base64 form of 16 bytes. */
#define WS_KEY_LEN 24
#define WS_GUID    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum ws_hdr {
    WS_HDR_UPGRADE,
    WS_HDR_CONNECTION,
    WS_HDR_KEY,
    WS_HDR_VERSION,
    WS_HDR_PROTOCOL,
    WS_HDR_COUNT /* also "a header we ignore" */
};

static const char *const ws_hdr_names[WS_HDR_COUNT] = {
    [WS_HDR_UPGRADE] = "Upgrade",
    [WS_HDR_CONNECTION] = "Connection",
    [WS_HDR_KEY] = "Sec-WebSocket-Key",
    [WS_HDR_VERSION] = "Sec-WebSocket-Version",
    [WS_HDR_PROTOCOL] = "Sec-WebSocket-Protocol",
};

/* Subprotocols we speak, in no order: the client's list decides which one is chosen. */
static const char *const ws_protocols[] = {"mqtt", "mqttv3.1"};

/* Handshake state, freed once the request has been answered. */
struct ws_http {
    http_parser parser;
    uint32_t seen;    /* request bytes given to the parser */
    uint8_t name_len; /* WS_NAME_MAX + 1 once the name is too long to be one of ours */
    uint8_t hdr;      /* enum ws_hdr the value pieces belong to */
    bool is_value;    /* the last piece was a value, so the next name piece starts a header */
    bool is_complete;
    char name[WS_NAME_MAX];
    struct buf val[WS_HDR_COUNT]; /* repeated headers are joined with commas */
};

enum ws_state { WS_STATE_HTTP, WS_STATE_OPEN, WS_STATE_CLOSED };

struct ws {
    struct xport base;
    struct ws_http *http;        /* until the request is answered */
    wslay_event_context_ptr ctx; /* after the upgrade */
    /* Set only for the duration of a call, for the wslay callbacks. */
    const uint8_t *in;
    size_t in_len;
    struct buf *up;
    struct buf *down;
    uint8_t state;   /* enum ws_state */
    bool is_payload; /* the frame being received carries MQTT bytes */
    bool is_text;    /* a text frame ended the connection */
    char peer[];
};

/* ---- wslay callbacks ---- */

static ssize_t ws_on_recv(wslay_event_context_ptr ctx, uint8_t *out, size_t len, int flags,
                          void *data)
{
    struct ws *ws = data;
    (void)flags;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t k = len < ws->in_len ? len : ws->in_len;
    memcpy(out, ws->in, k);
    ws->in += k;
    ws->in_len -= k;
    return (ssize_t)k;
}

/* *down grows as needed, so everything is always taken. */
static ssize_t ws_on_send(wslay_event_context_ptr ctx, const uint8_t *p, size_t len, int flags,
                          void *data)
{
    struct ws *ws = data;
    (void)ctx;
    (void)flags;
    buf_append(ws->down, p, len);
    return (ssize_t)len;
}

static void ws_on_frame_start(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *a, void *data)
{
    struct ws *ws = data;
    /* wslay has already refused a continuation that continues nothing, and the first frame of
     * a message is never text here, so a continuation always carries MQTT bytes. */
    ws->is_payload = a->opcode == WSLAY_BINARY_FRAME || a->opcode == WSLAY_CONTINUATION_FRAME;
    if (a->opcode == WSLAY_TEXT_FRAME) {
        /* [MQTT-6.0.0-1]: the server closes the connection on a text frame. */
        ws->is_text = true;
        (void)wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, NULL, 0);
        wslay_event_shutdown_read(ctx);
    }
}

static void ws_on_frame_chunk(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_chunk_arg *a, void *data)
{
    struct ws *ws = data;
    (void)ctx;
    if (ws->is_payload && a->data_length > 0)
        buf_append(ws->up, a->data, a->data_length);
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_on_recv,
    .send_callback = ws_on_send,
    .on_frame_recv_start_callback = ws_on_frame_start,
    .on_frame_recv_chunk_callback = ws_on_frame_chunk,
};

static int ws_context_init(struct ws *ws)
{
    if (wslay_event_context_server_init(&ws->ctx, &ws_callbacks, ws) != 0) {
        ws->ctx = NULL;
        return ERR_NOMEM;
    }
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    wslay_event_config_set_max_recv_msg_length(ws->ctx, WS_FRAME_MAX);
    return 0;
}

/* ---- handshake ---- */

static int ws_on_header_field(http_parser *p, const char *at, size_t n)
{
    struct ws_http *h = p->data;
    if (h->is_value) {
        h->is_value = false;
        h->name_len = 0;
    }
    if (h->name_len + n > WS_NAME_MAX) {
        h->name_len = WS_NAME_MAX + 1;
        return 0;
    }
    memcpy(h->name + h->name_len, at, n);
    h->name_len = (uint8_t)(h->name_len + n);
    return 0;
}

static uint8_t ws_hdr_lookup(const char *name, size_t len)
{
    for (int i = 0; i < WS_HDR_COUNT; i++) {
        if (strlen(ws_hdr_names[i]) == len && strncasecmp(ws_hdr_names[i], name, len) == 0)
            return (uint8_t)i;
    }
    return WS_HDR_COUNT;
}

static int ws_on_header_value(http_parser *p, const char *at, size_t n)
{
    struct ws_http *h = p->data;
    if (!h->is_value) {
        h->is_value = true;
        h->hdr = ws_hdr_lookup(h->name, h->name_len);
        if (h->hdr < WS_HDR_COUNT && buf_used(&h->val[h->hdr]) > 0)
            buf_append(&h->val[h->hdr], ",", 1);
    }
    if (h->hdr < WS_HDR_COUNT && n > 0)
        buf_append(&h->val[h->hdr], at, n);
    return 0;
}

/* An upgrade request has no body; refusing one also keeps body bytes from being taken as
 * WebSocket data. */
static int ws_on_body(http_parser *p, const char *at, size_t n)
{
    (void)p;
    (void)at;
    (void)n;
    return -1;
}

/* Stops the parser right after the request so that what follows is left for wslay. */
static int ws_on_message_complete(http_parser *p)
{
    struct ws_http *h = p->data;
    h->is_complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings ws_http_settings = {
    .on_header_field = ws_on_header_field,
    .on_header_value = ws_on_header_value,
    .on_body = ws_on_body,
    .on_message_complete = ws_on_message_complete,
};

static void ws_http_free(struct ws *ws)
{
    if (!ws->http)
        return;
    for (int i = 0; i < WS_HDR_COUNT; i++)
        buf_free(&ws->http->val[i]);
    free(ws->http);
    ws->http = NULL;
}

/* Steps through a comma-separated header value: sets tok/len to the next non-empty element
 * without surrounding blanks and returns true, or returns false at the end. */
static bool ws_list_next(const char **cur, const char *end, const char **tok, size_t *len)
{
    const char *s = *cur;
    while (s < end && (*s == ',' || *s == ' ' || *s == '\t'))
        s++;
    if (s == end)
        return false;
    const char *e = memchr(s, ',', (size_t)(end - s));
    if (!e)
        e = end;
    *cur = e;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *tok = s;
    *len = (size_t)(e - s);
    return true;
}

static bool ws_token_eq(const char *tok, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(tok, want, len) == 0;
}

/* Finds the first element of b equal (ignoring case) to one of want[0..n); sets tok/len. */
static bool ws_list_find(const struct buf *b, const char *const *want, size_t n, const char **tok,
                         size_t *len)
{
    if (buf_used(b) == 0)
        return false;
    const char *s = (const char *)buf_head(b);
    const char *end = s + buf_used(b);
    while (ws_list_next(&s, end, tok, len)) {
        for (size_t i = 0; i < n; i++) {
            if (ws_token_eq(*tok, *len, want[i]))
                return true;
        }
    }
    return false;
}

static bool ws_list_has(const struct buf *b, const char *want)
{
    const char *tok;
    size_t len;
    return ws_list_find(b, &want, 1, &tok, &len);
}

/* The whole value of a single-valued header without surrounding blanks. */
static void ws_value(const struct buf *b, const char **s, size_t *len)
{
    *s = "";
    *len = 0;
    if (buf_used(b) == 0)
        return;
    const char *p = (const char *)buf_head(b);
    const char *end = p + buf_used(b);
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *s = p;
    *len = (size_t)(end - p);
}

/* What the 101 reply carries. */
struct ws_reply {
    char accept[32];
    char protocol[16];
};

/* Checks the parsed request against RFC 6455 4.2.1 and our subprotocol. Returns NULL and fills
 * r when it is an acceptable upgrade; otherwise returns the reason for the log and sets
 * *status to the HTTP status to answer with. */
static const char *ws_http_check(const struct ws_http *h, struct ws_reply *r, int *status)
{
    const http_parser *p = &h->parser;
    const char *s;
    size_t len;
    uint8_t raw[16];

    *status = 400;
    if (p->method != HTTP_GET)
        return "method";
    if (p->http_major < 1 || (p->http_major == 1 && p->http_minor < 1))
        return "http_version";
    if (!ws_list_has(&h->val[WS_HDR_UPGRADE], "websocket"))
        return "upgrade_header";
    if (!ws_list_has(&h->val[WS_HDR_CONNECTION], "upgrade"))
        return "connection_header";
    ws_value(&h->val[WS_HDR_VERSION], &s, &len);
    if (len == 0)
        return "no_version";
    if (len != 2 || memcmp(s, "13", 2) != 0) {
        *status = 426;
        return "version";
    }
    ws_value(&h->val[WS_HDR_KEY], &s, &len);
    if (len != WS_KEY_LEN || digest_base64_decode(s, len, raw, sizeof(raw)) != sizeof(raw))
        return "key";

    char joined[WS_KEY_LEN + sizeof(WS_GUID)];
    uint8_t sha[DIGEST_SHA1_LEN];
    memcpy(joined, s, WS_KEY_LEN);
    memcpy(joined + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
    digest_sha1(joined, WS_KEY_LEN + sizeof(WS_GUID) - 1, sha);
    if (digest_base64_encode(sha, sizeof(sha), r->accept, sizeof(r->accept)) == 0)
        return "accept";

    /* Echo the client's own spelling: a client may compare it byte for byte. */
    if (!ws_list_find(&h->val[WS_HDR_PROTOCOL], ws_protocols,
                      sizeof(ws_protocols) / sizeof(ws_protocols[0]), &s, &len))
        return "subprotocol";
    memcpy(r->protocol, s, len);
    r->protocol[len] = '\0';
    return NULL;
}

/* Answers a refused request, which ends the connection. */
static int ws_reject(struct ws *ws, int status, const char *why)
{
    const char *text = status == 426   ? "Upgrade Required"
                       : status == 431 ? "Request Header Fields Too Large"
                                       : "Bad Request";
    const char *extra = status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "";
    char line[256];
    int k = snprintf(line, sizeof(line),
                     "HTTP/1.1 %d %s\r\n%sConnection: close\r\nContent-Length: 0\r\n\r\n", status,
                     text, extra);
    if (k > 0 && (size_t)k < sizeof(line))
        buf_append(ws->down, line, (size_t)k);
    log_ratelimited(LOG_LEVEL_INFO, "ws", "upgrade refused peer=%s status=%d reason=%s", ws->peer,
                    status, why);
    ws_http_free(ws);
    ws->state = WS_STATE_CLOSED;
    return ERR_WEBSOCKET;
}

/* Answers a complete request: 101 and on to framing, or an HTTP error. */
static int ws_upgrade(struct ws *ws)
{
    struct ws_reply r;
    int status;
    const char *why = ws_http_check(ws->http, &r, &status);
    if (why)
        return ws_reject(ws, status, why);
    if (ws_context_init(ws) != 0) {
        log_error("ws", "out of memory peer=%s", ws->peer);
        ws_http_free(ws);
        ws->state = WS_STATE_CLOSED;
        return ERR_NOMEM;
    }
    char line[256];
    int k = snprintf(line, sizeof(line),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     r.accept, r.protocol);
    if (k > 0 && (size_t)k < sizeof(line))
        buf_append(ws->down, line, (size_t)k);
    ws_http_free(ws);
    ws->state = WS_STATE_OPEN;
    return 0;
}

/* Feeds request bytes to the parser; *used is set to how many belong to the request (the rest
 * is WebSocket data once the state is open). */
static int ws_http_input(struct ws *ws, const uint8_t *p, size_t n, size_t *used)
{
    struct ws_http *h = ws->http;
    size_t room = WS_REQUEST_MAX - h->seen;
    size_t take = n < room ? n : room;
    *used = http_parser_execute(&h->parser, &ws_http_settings, (const char *)p, take);
    h->seen += (uint32_t)*used;
    if (h->is_complete)
        return ws_upgrade(ws);
    /* Short of the end of the request, the parser stops early only on an error. */
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (e != HPE_OK || *used != take)
        return ws_reject(ws, 400, http_errno_name(e));
    if (h->seen >= WS_REQUEST_MAX)
        return ws_reject(ws, 431, "request_too_large");
    return 0;
}

/* ---- frames ---- */

/* Moves every queued frame into ws->down. */
static int ws_flush(struct ws *ws)
{
    return wslay_event_send(ws->ctx) == 0 ? 0 : ERR_WEBSOCKET;
}

static void ws_log_end(struct ws *ws, int rc)
{
    if (wslay_event_get_close_received(ws->ctx)) {
        log_debug("ws", "closed by peer peer=%s code=%u", ws->peer,
                  (unsigned)wslay_event_get_status_code_received(ws->ctx));
    } else if (ws->is_text) {
        log_ratelimited(LOG_LEVEL_INFO, "ws", "closing peer=%s reason=text_frame", ws->peer);
    } else {
        log_ratelimited(LOG_LEVEL_INFO, "ws", "closing peer=%s reason=bad_frame code=%u rc=%d",
                        ws->peer, (unsigned)wslay_event_get_status_code_sent(ws->ctx), rc);
    }
}

static int ws_frames_input(struct ws *ws, const uint8_t *p, size_t n)
{
    ws->in = p;
    ws->in_len = n;
    int rc = wslay_event_recv(ws->ctx);
    ws->in = NULL;
    ws->in_len = 0;
    /* Pongs and close replies go out even when the connection ends here. */
    int flushed = ws_flush(ws);
    if (rc == 0 && flushed == 0 && wslay_event_get_read_enabled(ws->ctx))
        return 0;
    ws_log_end(ws, rc);
    ws->state = WS_STATE_CLOSED;
    return ERR_WEBSOCKET;
}

/* ---- struct xport ---- */

static int ws_input(struct xport *x, const uint8_t *p, size_t n, struct buf *up, struct buf *down)
{
    struct ws *ws = container_of(x, struct ws, base);
    int rc = 0;

    ws->up = up;
    ws->down = down;
    if (ws->state == WS_STATE_HTTP) {
        size_t used = 0;
        rc = ws_http_input(ws, p, n, &used);
        if (rc != 0)
            goto out;
        p += used;
        n -= used;
    }
    if (ws->state == WS_STATE_OPEN)
        rc = ws_frames_input(ws, p, n);
    else if (ws->state == WS_STATE_CLOSED)
        rc = ERR_WEBSOCKET;
out:
    ws->up = NULL;
    ws->down = NULL;
    return rc;
}

static int ws_output(struct xport *x, const uv_buf_t *iov, unsigned n, struct buf *down)
{
    struct ws *ws = container_of(x, struct ws, base);
    size_t total = 0;
    uint8_t *joined = NULL;

    if (ws->state != WS_STATE_OPEN)
        return ERR_CLOSED;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    if (total == 0)
        return 0;
    struct wslay_event_msg m = {
        .opcode = WSLAY_BINARY_FRAME, .msg = (const uint8_t *)iov[0].base, .msg_length = total};
    if (iov[0].len != total) {
        /* wslay takes one contiguous message (and copies it). */
        joined = xmalloc(total);
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(joined + off, iov[i].base, iov[i].len);
            off += iov[i].len;
        }
        m.msg = joined;
    }
    int rc = wslay_event_queue_msg(ws->ctx, &m);
    free(joined);
    joined = NULL;
    if (rc == WSLAY_ERR_NO_MORE_MSG)
        return ERR_CLOSED; /* a close frame is queued or sent: nothing may follow it */
    if (rc != 0)
        return ERR_NOMEM;
    ws->down = down;
    rc = ws_flush(ws);
    ws->down = NULL;
    return rc;
}

static void ws_shutdown(struct xport *x, struct buf *down)
{
    struct ws *ws = container_of(x, struct ws, base);
    if (ws->state != WS_STATE_OPEN)
        return;
    /* Fails harmlessly when a close frame was already queued. */
    (void)wslay_event_queue_close(ws->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    ws->down = down;
    (void)ws_flush(ws);
    ws->down = NULL;
}

static void ws_destroy(struct xport *x)
{
    struct ws *ws = container_of(x, struct ws, base);
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    ws_http_free(ws);
    free(ws);
}

static const struct xport_ops ws_ops = {
    .name = "ws",
    .input = ws_input,
    .output = ws_output,
    .shutdown = ws_shutdown,
    .destroy = ws_destroy,
};

struct xport *ws_create(const char *peer)
{
    size_t len = strlen(peer);
    struct ws *ws = xcalloc(1, sizeof(*ws) + len + 1);
    ws->base.ops = &ws_ops;
    memcpy(ws->peer, peer, len + 1);
    ws->http = xcalloc(1, sizeof(*ws->http));
    http_parser_init(&ws->http->parser, HTTP_REQUEST);
    ws->http->parser.data = ws->http;
    ws->state = WS_STATE_HTTP;
    return &ws->base;
}
