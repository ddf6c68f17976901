#ifndef SHOAL_NODE_LISTENER_H
#define SHOAL_NODE_LISTENER_H

/*
 * TCP listeners built from the configuration: bind, accept, per-listener connection limits and
 * file-descriptor exhaustion shedding.
 */

#include <stdint.h>

#include <uv.h>

struct broker;
struct conf_listener;
struct tls_ctx;

#define LISTENER_MAX_SOCKETS 2 /* local-only mode binds 127.0.0.1 and ::1 */

struct listener {
    struct broker *b;
    const struct conf_listener *cl;
    uv_tcp_t tcp[LISTENER_MAX_SOCKETS];
    int n_tcp;
    uint32_t n_conns;
    struct tls_ctx *tls; /* NULL on a plain listener */
};

/* Binds every configured listener into b->listeners. Returns 0, or a negative error after
 * logging which address failed (the caller then stops the broker). */
int listener_start_all(struct broker *b);
/* Stops accepting (drain). Handles close on the loop; the array is freed by broker_free. */
void listener_close_all(struct broker *b);

#endif
