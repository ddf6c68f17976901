/*
 * WebSocket layer: the upgrade handshake and its refusals, framing in both directions with
 * frames split and merged in every way a client may send them, control frames and closing.
 * Client frames are built here (masked); server frames are decoded here (never masked).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/buf.h"
#include "node/err.h"
#include "node/ws.h"

#define OP_CONT   0x0
#define OP_TEXT   0x1
#define OP_BINARY 0x2
#define OP_CLOSE  0x8
#define OP_PING   0x9
#define OP_PONG   0xa
#define FIN       0x80

#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* RFC 6455 section 1.3 */

struct fixture {
    struct xport *x;
    struct buf up;
    struct buf down;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->x = ws_create("127.0.0.1:1");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    xport_destroy(&f->x);
    buf_free(&f->up);
    buf_free(&f->down);
    free(f);
    return 0;
}

static int input(struct fixture *f, const void *p, size_t n)
{
    return f->x->ops->input(f->x, p, n, &f->up, &f->down);
}

/* Feeds p one byte per call; returns the first non-zero result, or 0. */
static int input_bytewise(struct fixture *f, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        int rc = input(f, b + i, 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The unread part of *down as a string (the test owns the copy). */
static char *down_str(struct fixture *f)
{
    size_t n = buf_used(&f->down);
    char *s = malloc(n + 1);
    if (n)
        memcpy(s, buf_head(&f->down), n);
    s[n] = '\0';
    return s;
}

/* A request like a browser's; extra (may be NULL) is a block of further header lines. */
static void build_request(char *out, size_t cap, const char *version, const char *protocol,
                          const char *extra)
{
    char v[64] = "", pr[256] = "";
    if (version)
        (void)snprintf(v, sizeof(v), "Sec-WebSocket-Version: %s\r\n", version);
    if (protocol)
        (void)snprintf(pr, sizeof(pr), "Sec-WebSocket-Protocol: %s\r\n", protocol);
    int k = snprintf(out, cap,
                     "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " RFC_KEY "\r\n%s%s%s\r\n",
                     v, pr, extra ? extra : "");
    assert_true(k > 0 && (size_t)k < cap);
}

static const char *std_request(void)
{
    static char req[1024];
    build_request(req, sizeof(req), "13", "mqtt", NULL);
    return req;
}

/* Checks that *down starts with a 101 reply and consumes it. */
static void expect_101(struct fixture *f, const char *protocol)
{
    char *s = down_str(f);
    char *end = strstr(s, "\r\n\r\n");
    assert_non_null(end);
    end[2] = '\0';
    assert_true(strncmp(s, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    assert_non_null(strstr(s, "\r\nUpgrade: websocket\r\n"));
    assert_non_null(strstr(s, "\r\nConnection: Upgrade\r\n"));
    assert_non_null(strstr(s, "\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n"));
    char want[64];
    (void)snprintf(want, sizeof(want), "\r\nSec-WebSocket-Protocol: %s\r\n", protocol);
    assert_non_null(strstr(s, want));
    buf_consume(&f->down, (size_t)(end + 4 - s));
    free(s);
}

static void upgrade(struct fixture *f)
{
    const char *req = std_request();
    assert_int_equal(input(f, req, strlen(req)), 0);
    expect_101(f, "mqtt");
    assert_int_equal(buf_used(&f->down), 0);
}

/* Checks that *down holds exactly one HTTP error reply with this status. */
static void expect_http_error(struct fixture *f, int status)
{
    char *s = down_str(f);
    char want[32];
    (void)snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
    assert_true(strncmp(s, want, strlen(want)) == 0);
    assert_non_null(strstr(s, "\r\nConnection: close\r\n"));
    size_t len = strlen(s);
    assert_true(len >= 4 && strcmp(s + len - 4, "\r\n\r\n") == 0);
    free(s);
}

/* Appends a client frame: b0 is FIN | opcode, the payload is masked unless is_unmasked. */
static void frame_ex(struct buf *b, uint8_t b0, const void *payload, size_t n, bool is_unmasked)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t hdr[14];
    size_t h = 0;
    uint8_t mbit = is_unmasked ? 0 : 0x80;

    hdr[h++] = b0;
    if (n < 126) {
        hdr[h++] = (uint8_t)(mbit | n);
    } else if (n <= 0xffff) {
        hdr[h++] = mbit | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    if (!is_unmasked) {
        memcpy(hdr + h, key, 4);
        h += 4;
    }
    buf_append(b, hdr, h);
    uint8_t *dst = buf_reserve(b, n);
    const uint8_t *src = payload;
    for (size_t i = 0; i < n; i++)
        dst[i] = is_unmasked ? src[i] : (uint8_t)(src[i] ^ key[i % 4]);
    buf_commit(b, n);
}

static void frame(struct buf *b, uint8_t b0, const void *payload, size_t n)
{
    frame_ex(b, b0, payload, n, false);
}

struct sframe {
    uint8_t b0;
    const uint8_t *payload;
    size_t len;
};

/* Decodes one server frame from the front of *down and consumes it. */
static void next_frame(struct fixture *f, struct sframe *s)
{
    const uint8_t *p = buf_head(&f->down);
    size_t n = buf_used(&f->down);
    size_t h = 2;
    assert_true(n >= 2);
    s->b0 = p[0];
    assert_int_equal(p[1] & 0x80, 0); /* servers never mask */
    uint64_t len = p[1] & 0x7f;
    if (len == 126) {
        assert_true(n >= 4);
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
        assert_true(len >= 126);
    } else if (len == 127) {
        assert_true(n >= 10);
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
        assert_true(len > 0xffff);
    }
    assert_true(n - h >= len);
    s->payload = p + h;
    s->len = (size_t)len;
    buf_consume(&f->down, h + (size_t)len);
}

/* Consumes the close frame at the front of *down and returns its status code (0 if none). */
static unsigned expect_close(struct fixture *f)
{
    struct sframe s;
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_CLOSE);
    if (s.len == 0)
        return 0;
    assert_true(s.len >= 2);
    return (unsigned)(s.payload[0] << 8 | s.payload[1]);
}

static void expect_up(struct fixture *f, const void *want, size_t n)
{
    assert_int_equal(buf_used(&f->up), n);
    assert_memory_equal(buf_head(&f->up), want, n);
}

/* A CONNECT packet for client "ab" and a PINGREQ: real MQTT bytes for the payload tests. */
static const uint8_t connect_pkt[] = {0x10, 0x0e, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                      0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, 'a', 'b'};
static const uint8_t pingreq_pkt[] = {0xc0, 0x00};

/* ---- handshake ---- */

static void test_upgrade_ok(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    assert_int_equal(buf_used(&f->up), 0);
}

static void test_subprotocol_echo(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), "13", "chat, mqttv3.1 , mqtt", NULL);
    assert_int_equal(input(f, req, strlen(req)), 0);
    expect_101(f, "mqttv3.1");
}

static void test_subprotocol_repeated_header(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), "13", "chat", "Sec-WebSocket-Protocol: MQTT\r\n");
    assert_int_equal(input(f, req, strlen(req)), 0);
    expect_101(f, "MQTT"); /* the client's own spelling */
}

static void test_lenient_headers(void **state)
{
    struct fixture *f = *state;
    const char *req = "GET /any/path?x=1 HTTP/1.1\r\nhost: h\r\nX-Empty:\r\n"
                      "UPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
                      "sec-websocket-key:   " RFC_KEY "  \r\nSEC-WEBSOCKET-VERSION: 13\r\n"
                      "X-A-Very-Long-Header-Name-That-We-Ignore-Entirely: x\r\n"
                      "sec-websocket-protocol: mqtt\r\n\r\n";
    struct buf b = {0};
    buf_append(&b, req, strlen(req));
    frame(&b, FIN | OP_BINARY, pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_101(f, "mqtt");
    expect_up(f, pingreq_pkt, sizeof(pingreq_pkt));
    buf_free(&b);
}

static void test_missing_subprotocol(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), "13", NULL, NULL);
    assert_int_equal(input(f, req, strlen(req)), ERR_WEBSOCKET);
    expect_http_error(f, 400);
    /* The layer stays closed. */
    buf_reset(&f->down);
    assert_int_equal(input(f, "x", 1), ERR_WEBSOCKET);
    assert_int_equal(buf_used(&f->down), 0);
}

static void test_wrong_subprotocol(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), "13", "chat, mqttx", NULL);
    assert_int_equal(input(f, req, strlen(req)), ERR_WEBSOCKET);
    expect_http_error(f, 400);
}

static void test_wrong_version(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), "8", "mqtt", NULL);
    assert_int_equal(input(f, req, strlen(req)), ERR_WEBSOCKET);
    expect_http_error(f, 426);
    char *s = down_str(f);
    assert_non_null(strstr(s, "\r\nSec-WebSocket-Version: 13\r\n"));
    free(s);
}

static void test_missing_version(void **state)
{
    struct fixture *f = *state;
    char req[1024];
    build_request(req, sizeof(req), NULL, "mqtt", NULL);
    assert_int_equal(input(f, req, strlen(req)), ERR_WEBSOCKET);
    expect_http_error(f, 400);
}

/* Each request differs from a good one in a single respect. */
static void test_bad_requests(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        /* method */
        "POST /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* HTTP/1.0 */
        "GET /mqtt HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* no Upgrade */
        "GET /mqtt HTTP/1.1\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* Upgrade to something else */
        "GET /mqtt HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* Connection without the upgrade token */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* no key */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* key of 15 bytes */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* key that is not base64 */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!!\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* two keys */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Key: " RFC_KEY "\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
        /* a body */
        "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\nContent-Length: 4\r\n\r\nabcd",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct fixture *f = NULL;
        assert_int_equal(setup((void **)&f), 0);
        if (input(f, reqs[i], strlen(reqs[i])) != ERR_WEBSOCKET)
            fail_msg("request %zu was accepted", i);
        expect_http_error(f, 400);
        assert_int_equal(buf_used(&f->up), 0);
        assert_int_equal(teardown((void **)&f), 0);
    }
}

static void test_mqtt_on_ws_port(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(input(f, connect_pkt, sizeof(connect_pkt)), ERR_WEBSOCKET);
    expect_http_error(f, 400);
}

static void test_oversize_request(void **state)
{
    struct fixture *f = *state;
    const char *head = "GET /mqtt HTTP/1.1\r\nX-Filler: ";
    assert_int_equal(input(f, head, strlen(head)), 0);
    char filler[1024];
    memset(filler, 'a', sizeof(filler));
    int rc = 0;
    size_t sent = strlen(head);
    while (rc == 0 && sent < (size_t)64 * 1024) {
        rc = input(f, filler, sizeof(filler));
        sent += sizeof(filler);
    }
    assert_int_equal(rc, ERR_WEBSOCKET);
    assert_true(sent <= 8192 + sizeof(filler));
    expect_http_error(f, 431);
}

static void test_oversize_request_one_call(void **state)
{
    struct fixture *f = *state;
    struct buf b = {0};
    const char *head = "GET /mqtt HTTP/1.1\r\nX-Filler: ";
    buf_append(&b, head, strlen(head));
    memset(buf_reserve(&b, 20000), 'a', 20000);
    buf_commit(&b, 20000);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    expect_http_error(f, 431);
    buf_free(&b);
}

static void test_upgrade_bytewise(void **state)
{
    struct fixture *f = *state;
    const char *req = std_request();
    size_t n = strlen(req);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(input(f, req + i, 1), 0);
        if (i + 1 < n)
            assert_int_equal(buf_used(&f->down), 0);
    }
    expect_101(f, "mqtt");
    struct buf b = {0};
    frame(&b, FIN | OP_BINARY, connect_pkt, sizeof(connect_pkt));
    assert_int_equal(input_bytewise(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, connect_pkt, sizeof(connect_pkt));
    buf_free(&b);
}

static void test_request_and_frame_together(void **state)
{
    struct fixture *f = *state;
    struct buf b = {0};
    const char *req = std_request();
    buf_append(&b, req, strlen(req));
    frame(&b, FIN | OP_BINARY, connect_pkt, sizeof(connect_pkt));
    frame(&b, FIN | OP_PING, "hi", 2);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, connect_pkt, sizeof(connect_pkt));
    expect_101(f, "mqtt");
    struct sframe s;
    next_frame(f, &s); /* the pong follows the 101 */
    assert_int_equal(s.b0, FIN | OP_PONG);
    assert_int_equal(s.len, 2);
    assert_memory_equal(s.payload, "hi", 2);
    assert_int_equal(buf_used(&f->down), 0);
    buf_free(&b);
}

/* ---- frames from the client ---- */

static void test_packet_over_three_frames(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    frame(&b, OP_BINARY, connect_pkt, 3);
    frame(&b, OP_CONT, connect_pkt + 3, 0);
    frame(&b, FIN | OP_PING, "p", 1); /* control frames may come between fragments */
    frame(&b, OP_CONT, connect_pkt + 3, 7);
    frame(&b, FIN | OP_CONT, connect_pkt + 10, sizeof(connect_pkt) - 10);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, connect_pkt, sizeof(connect_pkt));
    struct sframe s;
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_PONG);
    assert_int_equal(buf_used(&f->down), 0);

    /* A packet whose halves are separate messages. */
    buf_reset(&b);
    buf_reset(&f->up);
    frame(&b, FIN | OP_BINARY, connect_pkt, 5);
    frame(&b, FIN | OP_BINARY, connect_pkt + 5, sizeof(connect_pkt) - 5);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, connect_pkt, sizeof(connect_pkt));
    buf_free(&b);
}

static void test_packets_in_one_frame(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    uint8_t both[sizeof(connect_pkt) + 2 * sizeof(pingreq_pkt)];
    memcpy(both, connect_pkt, sizeof(connect_pkt));
    memcpy(both + sizeof(connect_pkt), pingreq_pkt, sizeof(pingreq_pkt));
    memcpy(both + sizeof(connect_pkt) + sizeof(pingreq_pkt), pingreq_pkt, sizeof(pingreq_pkt));
    struct buf b = {0};
    frame(&b, FIN | OP_BINARY, both, sizeof(both));
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, both, sizeof(both));
    assert_int_equal(buf_used(&f->down), 0);
    buf_free(&b);
}

static void test_frame_bytewise(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    struct buf b = {0};
    frame(&b, FIN | OP_BINARY, payload, sizeof(payload)); /* 16-bit length */
    size_t hdr = buf_used(&b) - sizeof(payload);
    const uint8_t *p = buf_head(&b);
    for (size_t i = 0; i < buf_used(&b); i++) {
        assert_int_equal(input(f, p + i, 1), 0);
        /* Payload bytes are passed on as they arrive, not at the end of the frame. */
        assert_int_equal(buf_used(&f->up), i + 1 > hdr ? i + 1 - hdr : 0);
    }
    expect_up(f, payload, sizeof(payload));
    assert_int_equal(buf_used(&f->down), 0);
    buf_free(&b);
}

static void test_ping_pong(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    frame(&b, FIN | OP_PING, "abc", 3);
    frame(&b, FIN | OP_PING, NULL, 0);
    frame(&b, FIN | OP_PONG, "x", 1); /* unsolicited pongs are ignored */
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    struct sframe s;
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_PONG);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.payload, "abc", 3);
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_PONG);
    assert_int_equal(s.len, 0);
    assert_int_equal(buf_used(&f->down), 0);
    assert_int_equal(buf_used(&f->up), 0);
    buf_free(&b);
}

static void test_close(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    uint8_t code[] = {0x03, 0xe8, 'b', 'y', 'e'}; /* 1000 */
    frame(&b, FIN | OP_BINARY, pingreq_pkt, sizeof(pingreq_pkt));
    frame(&b, FIN | OP_CLOSE, code, sizeof(code));
    frame(&b, FIN | OP_BINARY, connect_pkt, sizeof(connect_pkt)); /* after close: dropped */
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    expect_up(f, pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(expect_close(f), 1000);
    assert_int_equal(buf_used(&f->down), 0);
    /* Closed for good: no more input, no output, no second close frame. */
    assert_int_equal(input(f, "x", 1), ERR_WEBSOCKET);
    uv_buf_t iov = uv_buf_init((char *)pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(f->x->ops->output(f->x, &iov, 1, &f->down), ERR_CLOSED);
    f->x->ops->shutdown(f->x, &f->down);
    assert_int_equal(buf_used(&f->down), 0);
    buf_free(&b);
}

static void test_close_without_code(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    frame(&b, FIN | OP_CLOSE, NULL, 0);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    assert_int_equal(expect_close(f), 0);
    buf_free(&b);
}

static void test_text_frame(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    frame(&b, FIN | OP_TEXT, "hello", 5);
    frame(&b, FIN | OP_BINARY, pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    assert_int_equal(buf_used(&f->up), 0);
    assert_int_equal(expect_close(f), 1003);
    assert_int_equal(buf_used(&f->down), 0);
    buf_free(&b);
}

static void test_unmasked_frame(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    struct buf b = {0};
    frame_ex(&b, FIN | OP_BINARY, pingreq_pkt, sizeof(pingreq_pkt), true);
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    assert_int_equal(buf_used(&f->up), 0);
    assert_int_equal(expect_close(f), 1002);
    buf_free(&b);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    struct buf frames[4] = {{0}};
    frame(&frames[0], FIN | OP_CONT, pingreq_pkt, 2);          /* continues nothing */
    frame(&frames[1], FIN | 0x3, pingreq_pkt, 2);              /* reserved opcode */
    frame(&frames[2], FIN | 0x40 | OP_BINARY, pingreq_pkt, 2); /* RSV1 without extension */
    frame(&frames[3], OP_PING, "x", 1);                        /* fragmented control */
    for (size_t i = 0; i < 4; i++) {
        struct fixture *f = NULL;
        assert_int_equal(setup((void **)&f), 0);
        upgrade(f);
        if (input(f, buf_head(&frames[i]), buf_used(&frames[i])) != ERR_WEBSOCKET)
            fail_msg("frame %zu was accepted", i);
        assert_int_equal(buf_used(&f->up), 0);
        unsigned code = expect_close(f);
        assert_true(code == 1002 || code == 0);
        assert_int_equal(teardown((void **)&f), 0);
        buf_free(&frames[i]);
    }
}

static void test_large_input(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    size_t n = 70000;
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    struct buf b = {0};
    frame(&b, FIN | OP_BINARY, payload, n);
    assert_int_equal(((const uint8_t *)buf_head(&b))[1] & 0x7f, 127); /* 64-bit length */
    /* In two uneven pieces, as reads would bring it. */
    assert_int_equal(input(f, buf_head(&b), 12345), 0);
    assert_int_equal(buf_used(&f->up), 12345 - 14);
    assert_int_equal(input(f, buf_head(&b) + 12345, buf_used(&b) - 12345), 0);
    expect_up(f, payload, n);
    free(payload);
    buf_free(&b);
}

/* ---- frames to the client ---- */

static void test_output_two_iovecs(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    uv_buf_t iov[2] = {uv_buf_init((char *)connect_pkt, 4),
                       uv_buf_init((char *)connect_pkt + 4, sizeof(connect_pkt) - 4)};
    assert_int_equal(f->x->ops->output(f->x, iov, 2, &f->down), 0);
    struct sframe s;
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_BINARY);
    assert_int_equal(s.len, sizeof(connect_pkt));
    assert_memory_equal(s.payload, connect_pkt, sizeof(connect_pkt));
    assert_int_equal(buf_used(&f->down), 0);

    /* One iovec, and nothing at all. */
    assert_int_equal(f->x->ops->output(f->x, iov, 1, &f->down), 0);
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_BINARY);
    assert_int_equal(s.len, 4);
    assert_int_equal(f->x->ops->output(f->x, iov, 0, &f->down), 0);
    assert_int_equal(buf_used(&f->down), 0);
}

static void test_large_output(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    size_t n = 70000;
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 13);
    uv_buf_t iov[3] = {uv_buf_init((char *)payload, 5), uv_buf_init((char *)payload + 5, 0),
                       uv_buf_init((char *)payload + 5, (unsigned)(n - 5))};
    assert_int_equal(f->x->ops->output(f->x, iov, 3, &f->down), 0);
    assert_int_equal(buf_head(&f->down)[1], 127);
    struct sframe s;
    next_frame(f, &s);
    assert_int_equal(s.b0, FIN | OP_BINARY);
    assert_int_equal(s.len, n);
    assert_memory_equal(s.payload, payload, n);
    assert_int_equal(buf_used(&f->down), 0);
    free(payload);
}

static void test_shutdown(void **state)
{
    struct fixture *f = *state;
    upgrade(f);
    f->x->ops->shutdown(f->x, &f->down);
    assert_int_equal(expect_close(f), 1000);
    assert_int_equal(buf_used(&f->down), 0);
    /* Nothing may follow a close frame. */
    uv_buf_t iov = uv_buf_init((char *)pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(f->x->ops->output(f->x, &iov, 1, &f->down), ERR_CLOSED);
    f->x->ops->shutdown(f->x, &f->down);
    assert_int_equal(buf_used(&f->down), 0);
    /* Data still in flight from the client is delivered; its close ends the connection. */
    struct buf b = {0};
    frame(&b, FIN | OP_BINARY, pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), 0);
    expect_up(f, pingreq_pkt, sizeof(pingreq_pkt));
    buf_reset(&b);
    uint8_t code[] = {0x03, 0xe8};
    frame(&b, FIN | OP_CLOSE, code, sizeof(code));
    assert_int_equal(input(f, buf_head(&b), buf_used(&b)), ERR_WEBSOCKET);
    assert_int_equal(buf_used(&f->down), 0); /* our close was already sent */
    buf_free(&b);
}

static void test_before_upgrade(void **state)
{
    struct fixture *f = *state;
    uv_buf_t iov = uv_buf_init((char *)pingreq_pkt, sizeof(pingreq_pkt));
    assert_int_equal(f->x->ops->output(f->x, &iov, 1, &f->down), ERR_CLOSED);
    f->x->ops->shutdown(f->x, &f->down);
    assert_int_equal(buf_used(&f->down), 0);
    /* A half-received request is fine to destroy. */
    assert_int_equal(input(f, "GET / HTTP/1.1\r\nUpgr", 20), 0);
    assert_string_equal(f->x->ops->name, "ws");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upgrade_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subprotocol_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subprotocol_repeated_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lenient_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_subprotocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_subprotocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_version, setup, teardown),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test_setup_teardown(test_mqtt_on_ws_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_request_one_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_bytewise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_and_frame_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packet_over_three_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packets_in_one_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frame_bytewise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_pong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_without_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmasked_frame, setup, teardown),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test_setup_teardown(test_large_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_two_iovecs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_before_upgrade, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
