#ifndef SHOAL_NODE_CONN_H
#define SHOAL_NODE_CONN_H

/*
 * One client socket: its input buffer, its batched output and its lifecycle. Output is
 * assembled in `out` (packet heads and small packets) plus a list of segments that splice a
 * shared message payload in at an offset, so fan-out never copies a payload. Everything queued
 * during a loop pass goes out in one writev-style write from the broker's prepare hook.
 *
 * The struct is shared by the node/ modules (handlers read version, session and limits).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "node/buf.h"
#include "node/keepalive.h"

struct broker;
struct listener;
struct session;
struct msg;
struct codec_packet;
struct xport;

enum conn_state {
    CONN_NEW = 0,    /* waiting for CONNECT */
    CONN_CONNECTING, /* CONNECT received, asynchronous steps pending */
    CONN_ACTIVE,     /* CONNACK sent */
    CONN_CLOSING,    /* no more input is processed */
};

/* Transport layers of a TLS or WebSocket connection (NULL for plain TCP). */
struct conn_xp {
    struct xport *tls;
    struct xport *ws;   /* above tls when both are set */
    struct buf raw_out; /* encoded bytes for the socket, not yet handed to libuv */
    bool is_failed;     /* a layer failed: no graceful close through it */
};

struct conn_seg {
    size_t off; /* position in out where the payload goes */
    struct msg *m;
};

/* Every idle connection costs this struct: it stays within 488 bytes on 64-bit Linux, so that
 * with malloc's header it fits a 496-byte chunk (a static assertion in conn.c checks it). */
struct conn {
    uv_tcp_t tcp; /* tcp.data is the listener that accepted it (conn_listener) */
    struct broker *b;
    struct session *s;

    struct buf in;  /* only ever holds a partial packet */
    struct buf out; /* queued bytes not yet handed to the kernel */
    struct conn_seg *segs;
    struct conn_xp *xp;    /* NULL on plain TCP */
    size_t out_bytes;      /* bytes in out plus payload segments */
    size_t inflight_bytes; /* bytes in uv_write requests not yet completed */
    uint64_t bytes_handed; /* total bytes ever given to the kernel or to uv_write */
    struct conn *flush_next;
    struct conn *paused_next;
    struct conn *next;
    struct conn *prev;

    struct keepalive_entry ka;
    uint64_t last_rx_ms;

    /* Topic aliases, made on first use: alias_max_in entries the client set, then
     * alias_max_out entries, the topic per slot that this node sent. */
    char **aliases;
    uint8_t peer_ip[16]; /* peer address, formatted only when a line is logged */

    uint32_t refs; /* the handle's own ref plus pending asynchronous requests */
    uint32_t n_segs;
    uint32_t cap_segs;
    uint32_t writes_pending;
    uint32_t max_packet_out; /* MQTT 5 limit the client asked for; 0 = protocol maximum */
    uint16_t keepalive_s;
    uint16_t receive_max;
    uint16_t alias_max_out; /* aliases we may send */
    uint16_t alias_max_in;  /* aliases the client may send */
    uint16_t peer_port;
    uint8_t state; /* enum conn_state */
    uint8_t version;
    bool peer_is_v6;
    bool request_problem_info;
    bool in_flush_list;
    bool is_reading;
    bool close_after_flush;
    bool has_closed; /* uv_close called */
    bool is_paused;  /* reading stopped by flow control */
    uint8_t corked;  /* output held until store writes complete (conn_cork) */
};

static inline struct listener *conn_listener(const struct conn *c)
{
    return (struct listener *)c->tcp.data;
}

/* The topic alias tables (see struct conn), made on first use. */
char **conn_aliases(struct conn *c);

/* For log lines: the client id (escaped) and the peer address. Each returns one of a few
 * rotating static buffers, so a line may use several. */
const char *conn_log_id(const struct conn *c);
const char *conn_log_peer(const struct conn *c);

/* Accepts a pending connection on server for listener l. Errors are logged; nothing is
 * returned because the accept callback has nothing to undo. */
void conn_accept(struct broker *b, struct listener *l, uv_stream_t *server);

/* Reserves n bytes at the end of the output; write them, then conn_out_commit. */
uint8_t *conn_out_reserve(struct conn *c, size_t n);
void conn_out_commit(struct conn *c, size_t n);
/* Appends the payload of m (takes a reference) after the bytes committed so far. */
void conn_out_payload(struct conn *c, struct msg *m);
/* Encodes a control packet into the output. Returns 0 or ERR_PACKET_TOO_LARGE when it exceeds
 * the client's maximum packet size (the packet is then not sent). */
int conn_send(struct conn *c, const struct codec_packet *p);
/* Total bytes the kernel has taken from uv_write requests so far, partial writes included:
 * the progress measure of a slow consumer (a large request completes only at its end). */
uint64_t conn_bytes_written(const struct conn *c);

/* Bytes queued and in flight: the slow-consumer measure. */
static inline size_t conn_backlog(const struct conn *c)
{
    return c->out_bytes + c->inflight_bytes;
}

/* Flow control: stops reading from a publisher until broker_resume_publishers. */
void conn_pause(struct conn *c);
/* Stops reading without the flow-control bookkeeping: a CONNECT waits for its password check.
 * conn_resume restarts it once the connection is active. */
void conn_hold(struct conn *c);
/* Restarts reading after a pause, first handling input buffered meanwhile; harmless on a
 * closing connection. */
void conn_resume(struct conn *c);

/* Writes everything queued, unless corked. Called by the broker's prepare hook. */
void conn_flush(struct conn *c);

/*
 * Holds the output queued from now on (and what is queued already) until the matching
 * conn_uncork: a CONNACK or SUBACK waits for the session state it promises to be stored, and
 * whatever follows it on the wire waits behind it. Nests. Takes a reference on c, which
 * conn_uncork drops. Never calls back.
 */
void conn_cork(struct conn *c);
/* Ends one conn_cork. is_ok false: the write failed, so what was held is never sent and the
 * connection is closed without another packet (the client sees no acknowledgement). */
void conn_uncork(struct conn *c, bool is_ok);

/* Stops reading, flushes what is queued (a DISCONNECT or CONNACK already sent), then closes.
 * err is the reason, for logs and the will: 0 for a clean DISCONNECT. Idempotent. */
void conn_close(struct conn *c, int err);
/* Closes c at once, dropping output the kernel has not taken (the node is stopping: the
 * timing wheel that bounds a graceful close no longer runs). */
void conn_close_now(struct conn *c);

/* Arms the keepalive check (1.5 x keepalive_s after the last packet) once CONNECT is done. */
void conn_keepalive_start(struct conn *c);

void conn_ref(struct conn *c);
/* Drops a reference; the struct is freed after the handle closed and the last ref went. */
void conn_unref(struct conn *c);

#endif
