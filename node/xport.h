#ifndef SHOAL_NODE_XPORT_H
#define SHOAL_NODE_XPORT_H

/*
 * A transport layer between the socket and the MQTT codec: TLS (node/tls.c) and WebSocket
 * (node/ws.c). A connection stacks at most one of each, TLS below WebSocket; a plain TCP
 * connection has none, so the hot path of plain MQTT never goes through this interface.
 *
 * A layer is a pure byte transformer: it never touches the socket. `input` turns bytes from
 * the layer below into bytes for the layer above (and may produce bytes to send back down,
 * such as a TLS handshake record or a WebSocket pong); `output` turns bytes from above into
 * bytes for below. Both run to completion: a layer keeps no plaintext of its own between
 * calls, so a connection paused by flow control holds its unprocessed input in conn->in only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "node/buf.h"

struct xport;

struct xport_ops {
    const char *name; /* "tls" or "ws", for logs */
    /*
     * Consumes all of p[0..n) from below. Appends the decoded bytes to *up and any bytes that
     * must be sent below to *down. Returns 0, or a negative ERR_* after which the connection
     * is closed (the layer has logged why, rate-limited).
     */
    int (*input)(struct xport *x, const uint8_t *p, size_t n, struct buf *up, struct buf *down);
    /* Encodes iov[0..n) from above and appends the result to *down. Returns 0 or ERR_*. */
    int (*output)(struct xport *x, const uv_buf_t *iov, unsigned n, struct buf *down);
    /* Appends a graceful close (TLS close_notify, WebSocket close frame) to *down. */
    void (*shutdown)(struct xport *x, struct buf *down);
    /* Frees the layer. */
    void (*destroy)(struct xport *x);
};

/* Implementations embed this as their first member. */
struct xport {
    const struct xport_ops *ops;
};

static inline void xport_destroy(struct xport **x)
{
    if (*x) {
        (*x)->ops->destroy(*x);
        *x = NULL;
    }
}

#endif
