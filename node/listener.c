/*
 * Listeners. Each configured listener binds one socket (two in mosquitto's local-only mode:
 * 127.0.0.1 and ::1). When accept fails with EMFILE the broker sheds the pending connection by
 * briefly releasing a reserved descriptor, so a full fd table never spins the loop.
 */
#include "node/listener.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_tls.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/log.h"
#include "node/tls.h"

static int reserve_fd = -1;

static void shed_one(uv_stream_t *server)
{
    int fd = -1;
    if (uv_fileno((uv_handle_t *)server, &fd) < 0 || reserve_fd < 0)
        return;
    (void)close(reserve_fd);
    reserve_fd = -1;
    /* Accept at the system level and drop it: the client sees a closed connection. */
    int cfd = accept(fd, NULL, NULL);
    if (cfd >= 0)
        (void)close(cfd);
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status < 0) {
        log_ratelimited(LOG_LEVEL_WARN, "listener", "accept error port=%u rc=%s", l->cl->port,
                        err_str(status));
        if (status == UV_EMFILE || status == UV_ENFILE)
            shed_one(server);
        return;
    }
    conn_accept(l->b, l, server);
}

static int bind_one(struct listener *l, const char *host, bool is_optional)
{
    struct broker *b = l->b;
    struct sockaddr_storage ss;
    uint16_t port = l->cl->port;
    int rc;

    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        log_error("listener", "bad bind address bind=%s port=%u", host, port);
        return ERR_INVALID;
    }
    uv_tcp_t *t = &l->tcp[l->n_tcp];
    rc = uv_tcp_init(b->loop, t);
    if (rc < 0)
        return rc;
    t->data = l;
    rc = uv_tcp_bind(t, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 1024, on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)t, NULL);
        if (is_optional)
            return 0;
        log_error("listener", "cannot listen bind=%s port=%u rc=%s", host, port, err_str(rc));
        return rc;
    }
    l->n_tcp++;
    bool is_ws = l->cl->protocol == CONF_PROTO_WEBSOCKETS;
    log_info("listener", "listening bind=%s port=%u transport=%s", host, port,
             is_ws ? (l->tls ? "wss" : "ws") : (l->tls ? "tls" : "tcp"));
    return 0;
}

int listener_start_all(struct broker *b)
{
    const struct conf *c = b->conf;

    if (reserve_fd < 0)
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    b->listeners = xcalloc(c->n_listeners, sizeof(*b->listeners));
    b->n_listeners = c->n_listeners;
    for (size_t i = 0; i < c->n_listeners; i++) {
        struct listener *l = &b->listeners[i];
        l->b = b;
        l->cl = &c->listeners[i];
        int rc;
        if (conf_tls_enabled(l->cl)) {
            char err[512];
            l->tls = tls_ctx_create(l->cl, err, sizeof(err));
            if (!l->tls) {
                log_error("listener", "tls setup failed port=%u: %s", l->cl->port, err);
                return ERR_INVALID;
            }
        }
        if (l->cl->bind)
            rc = bind_one(l, l->cl->bind, false);
        else if (c->local_only) {
            rc = bind_one(l, "127.0.0.1", false);
            if (rc == 0)
                rc = bind_one(l, "::1", true);
        } else {
            rc = bind_one(l, "0.0.0.0", false);
            if (rc == 0)
                rc = bind_one(l, "::", true);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

void listener_close_all(struct broker *b)
{
    for (size_t i = 0; i < b->n_listeners; i++) {
        struct listener *l = &b->listeners[i];
        for (int k = 0; k < l->n_tcp; k++)
            if (!uv_is_closing((uv_handle_t *)&l->tcp[k]))
                uv_close((uv_handle_t *)&l->tcp[k], NULL);
    }
    if (reserve_fd >= 0) {
        (void)close(reserve_fd);
        reserve_fd = -1;
    }
}
