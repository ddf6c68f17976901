/*
 * Prometheus text exposition (format 0.0.4) of the node's state. Counters are read from the
 * plain increments in struct stats, the store's and the cluster's statistics; every gauge is
 * computed here, at scrape time, by one walk over the connections and one over the sessions,
 * so that nothing on the MQTT path maintains a gauge for the sake of metrics. Families are
 * always written, with zero values where a feature is off, so dashboards and alerts see a
 * stable set of series.
 */
#include "node/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "conf/conf.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/clock.h"
#include "node/conn.h"
#include "node/http.h"
#include "node/listener.h"
#include "node/msg.h"
#include "node/retain.h"
#include "node/session.h"
#include "node/stats.h"
#include "node/tls.h"
#include "node/topic_tree.h"
#include "store/store.h"

#define METRICS_LABEL_MAX 160 /* an escaped label value; longer peer names are cut */

static const char *const protocol_names[] = {"3.1", "3.1.1", "5"}; /* CODEC_V31 + index */

static const char *const drop_names[STATS_DROP_N] = {
    [STATS_DROP_QUEUE_FULL] = "queue_full",
    [STATS_DROP_TOO_LARGE] = "too_large",
    [STATS_DROP_PACKET_TOO_LARGE] = "packet_too_large",
    [STATS_DROP_SLOW_CONSUMER] = "slow_consumer",
    [STATS_DROP_EXPIRED] = "expired",
};

static const char *const auth_names[STATS_AUTH_N] = {
    [STATS_AUTH_BAD_CREDENTIALS] = "bad_credentials",
    [STATS_AUTH_ANONYMOUS] = "anonymous",
    [STATS_AUTH_CERTIFICATE] = "certificate",
    [STATS_AUTH_CLIENTID_PREFIX] = "clientid_prefix",
    [STATS_AUTH_METHOD] = "auth_method",
};

static const char *const tls_names[TLS_FAIL_N] = {
    [TLS_FAIL_UNKNOWN_CA] = "unknown_ca", [TLS_FAIL_REVOKED] = "revoked",
    [TLS_FAIL_EXPIRED] = "expired",       [TLS_FAIL_NO_CERT] = "no_certificate",
    [TLS_FAIL_PROTOCOL] = "protocol",     [TLS_FAIL_OTHER] = "other",
};

static void put(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct buf *out, const char *fmt, ...)
{
    va_list ap;
    size_t cap = 256;
    char *w = (char *)buf_reserve(out, cap);

    va_start(ap, fmt);
    int n = vsnprintf(w, cap, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= cap) {
        cap = (size_t)n + 1;
        w = (char *)buf_reserve(out, cap);
        va_start(ap, fmt);
        n = vsnprintf(w, cap, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
    }
    buf_commit(out, (size_t)n);
}

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
    put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct buf *out, const char *name, const char *help, uint64_t v)
{
    family(out, name, "counter", help);
    put(out, "%s %" PRIu64 "\n", name, v);
}

static void gauge(struct buf *out, const char *name, const char *help, uint64_t v)
{
    family(out, name, "gauge", help);
    put(out, "%s %" PRIu64 "\n", name, v);
}

/* A label value with \, " and newline escaped as the format asks; cut at a whole character
 * when it does not fit. Returns out. */
static const char *esc(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        bool is_special = *s == '\\' || *s == '"' || *s == '\n';
        if (n + (is_special ? 2 : 1) >= cap)
            break;
        if (is_special)
            out[n++] = '\\';
        out[n++] = *s == '\n' ? 'n' : *s;
    }
    out[n] = '\0';
    return out;
}

/* A listener is named by its port, or by BIND:PORT when two listeners share the port. */
static const char *listener_name(const struct broker *b, size_t i, char *out, size_t cap)
{
    const struct conf_listener *cl = b->listeners[i].cl;
    bool is_shared = false;
    for (size_t k = 0; k < b->n_listeners; k++)
        is_shared |= k != i && b->listeners[k].cl->port == cl->port;
    if (!is_shared) {
        (void)snprintf(out, cap, "%u", (unsigned)cl->port);
        return out;
    }
    char bind[METRICS_LABEL_MAX];
    int n = snprintf(out, cap, "%s:%u", esc(bind, sizeof(bind), cl->bind ? cl->bind : "*"),
                     (unsigned)cl->port);
    if (n < 0 || (size_t)n >= cap) /* an address that long is cut, like any label value */
        out[cap - 1] = '\0';
    return out;
}

static const char *transport_name(const struct listener *l)
{
    bool is_ws = l->cl->protocol == CONF_PROTO_WEBSOCKETS;
    if (is_ws)
        return l->tls ? "wss" : "ws";
    return l->tls ? "tls" : "tcp";
}

static void render_process(struct broker *b, struct buf *out)
{
    char node[METRICS_LABEL_MAX];

    family(out, "shoal_build_info", "gauge", "Version of this node, as labels.");
    put(out, "shoal_build_info{version=\"%s\",node_id=\"%s\"} 1\n", SHOAL_VERSION,
        esc(node, sizeof(node), b->conf->node_id));
    family(out, "shoal_uptime_seconds", "gauge", "Seconds since this node started.");
    put(out, "shoal_uptime_seconds %.3f\n", (double)(clock_now_ms() - b->started_ms) / 1000.0);
    gauge(out, "shoal_ready", "1 while /readyz answers 200: the node accepts clients.",
          http_unready_reason(b) == NULL);
}

/* Active MQTT clients by listener and protocol version, and open sockets by listener. */
static void render_connections(struct broker *b, struct buf *out)
{
    const struct stats *st = &b->stats;
    size_t n = b->n_listeners;
    uint64_t *by = xcalloc(n ? n * 3 : 1, sizeof(*by));
    char name[METRICS_LABEL_MAX];

    for (const struct conn *c = b->conns; c; c = c->next) {
        size_t i = (size_t)(conn_listener(c) - b->listeners);
        unsigned v = (unsigned)c->version - 3u; /* CODEC_V31 .. CODEC_V5 */
        if (c->state == CONN_ACTIVE && i < n && v < 3)
            by[i * 3 + v]++;
    }
    family(out, "shoal_connections", "gauge",
           "MQTT clients connected (CONNACK sent), by listener, transport and protocol.");
    for (size_t i = 0; i < n; i++) {
        listener_name(b, i, name, sizeof(name));
        for (size_t v = 0; v < 3; v++)
            put(out,
                "shoal_connections{listener=\"%s\",transport=\"%s\",protocol=\"%s\"} %" PRIu64 "\n",
                name, transport_name(&b->listeners[i]), protocol_names[v], by[i * 3 + v]);
    }
    free(by);
    family(out, "shoal_listener_sockets", "gauge",
           "Open client sockets by listener, those still in handshake or CONNECT included.");
    for (size_t i = 0; i < n; i++)
        put(out, "shoal_listener_sockets{listener=\"%s\",transport=\"%s\"} %u\n",
            listener_name(b, i, name, sizeof(name)), transport_name(&b->listeners[i]),
            (unsigned)b->listeners[i].n_conns);
    counter(out, "shoal_connects_total", "CONNECTs accepted (CONNACK 0 sent).",
            st->clients_total_connects);
    counter(out, "shoal_connections_refused_total",
            "Sockets closed at accept because the listener's max_connections was reached.",
            st->connections_refused);
    gauge(out, "shoal_connections_peak", "Most MQTT clients connected at once since start.",
          st->clients_maximum);
}

static void render_sessions(struct broker *b, struct buf *out)
{
    uint64_t persistent = 0, offline = 0;

    for (size_t i = 0; i < b->sess_nbuckets; i++) {
        for (const struct session *s = b->sess_buckets[i]; s; s = s->hnext) {
            persistent += s->expiry_s != 0;
            offline += s->conn == NULL;
        }
    }
    gauge(out, "shoal_sessions", "Sessions held by this node, connected or not.", b->sess_count);
    gauge(out, "shoal_sessions_persistent", "Sessions that outlive their connection.", persistent);
    gauge(out, "shoal_sessions_offline", "Sessions held without a connection.", offline);
    gauge(out, "shoal_subscriptions", "Subscriptions of this node's sessions (client, filter).",
          topic_tree_count(b->subs));
    gauge(out, "shoal_retained_messages", "Retained messages.", retain_count(b->retained));
    gauge(out, "shoal_retained_bytes", "Payload bytes of the retained messages.",
          retain_bytes(b->retained));
    gauge(out, "shoal_messages_in_memory", "Message objects alive (shared by their receivers).",
          msg_live_count());
}

static void render_messages(struct broker *b, struct buf *out)
{
    const struct stats *st = &b->stats;

    family(out, "shoal_messages_received_total", "counter",
           "PUBLISH packets from clients, by QoS.");
    for (int q = 0; q < 3; q++)
        put(out, "shoal_messages_received_total{qos=\"%d\"} %" PRIu64 "\n", q, st->pub_in[q]);
    family(out, "shoal_messages_sent_total", "counter",
           "PUBLISH packets to clients, by QoS (resends included).");
    for (int q = 0; q < 3; q++)
        put(out, "shoal_messages_sent_total{qos=\"%d\"} %" PRIu64 "\n", q, st->pub_out[q]);
    family(out, "shoal_messages_dropped_total", "counter",
           "Messages not delivered to a subscriber, or not accepted from a publisher, by reason.");
    uint64_t known = 0;
    for (int r = 0; r < STATS_DROP_N; r++) {
        put(out, "shoal_messages_dropped_total{reason=\"%s\"} %" PRIu64 "\n", drop_names[r],
            st->drops[r]);
        known += r == STATS_DROP_EXPIRED ? 0 : st->drops[r];
    }
    put(out, "shoal_messages_dropped_total{reason=\"other\"} %" PRIu64 "\n",
        st->pub_dropped > known ? st->pub_dropped - known : 0);
    counter(out, "shoal_messages_unrouted_total", "PUBLISH packets that matched no subscription.",
            st->pub_unrouted);
    counter(out, "shoal_packets_received_total", "MQTT packets received.", st->msgs_received);
    counter(out, "shoal_packets_sent_total", "MQTT packets sent.", st->msgs_sent);
    counter(out, "shoal_bytes_received_total", "Bytes read from client sockets.",
            st->bytes_received);
    counter(out, "shoal_bytes_sent_total", "Bytes written to client sockets.", st->bytes_sent);
}

static void render_security(struct broker *b, struct buf *out)
{
    const struct stats *st = &b->stats;
    char name[METRICS_LABEL_MAX];

    family(out, "shoal_auth_failures_total", "counter", "CONNECTs refused, by reason.");
    for (int r = 0; r < STATS_AUTH_N; r++)
        put(out, "shoal_auth_failures_total{reason=\"%s\"} %" PRIu64 "\n", auth_names[r],
            st->auth_fail[r]);
    counter(out, "shoal_acl_denied_total",
            "Publishes, subscriptions and deliveries the ACL refused.", st->acl_denied);
    family(out, "shoal_tls_handshake_failures_total", "counter",
           "Failed TLS handshakes, by listener and reason.");
    for (size_t i = 0; i < b->n_listeners; i++) {
        const struct tls_ctx *t = b->listeners[i].tls;
        if (!t)
            continue;
        listener_name(b, i, name, sizeof(name));
        for (int r = 0; r < TLS_FAIL_N; r++)
            put(out,
                "shoal_tls_handshake_failures_total{listener=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                name, tls_names[r], tls_ctx_failures(t, (enum tls_fail)r));
    }
    counter(out, "shoal_reload_failures_total",
            "Security file reloads that failed (the previous state stayed in force).",
            st->reload_failures);
}

static void render_store(struct broker *b, struct buf *out)
{
    static const struct store_stats none;
    const struct store_stats *ss = b->store ? store_get_stats(b->store) : &none;
    const char *h = "shoal_store_request_duration_seconds";
    uint64_t cum = 0;

    gauge(out, "shoal_store_up", "1 while the store can serve requests.", store_is_up(b->store));
    family(out, h, "histogram", "Store requests, from the call to the result.");
    for (size_t i = 0; i < STORE_LATENCY_BUCKETS; i++) {
        cum += ss->buckets[i];
        put(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h, (double)store_latency_bounds_us[i] / 1e6,
            cum);
    }
    put(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", h, cum + ss->buckets[STORE_LATENCY_BUCKETS]);
    put(out, "%s_sum %.6f\n", h, (double)ss->sum_us / 1e6);
    put(out, "%s_count %" PRIu64 "\n", h, ss->count);
    counter(out, "shoal_store_errors_total",
            "Store requests that failed for want of a working store (I/O error, timeout).",
            ss->errors);
}

static void put_link(void *ctx, const char *node_id, bool is_up)
{
    char peer[METRICS_LABEL_MAX];
    put(ctx, "shoal_cluster_link_up{peer=\"%s\"} %d\n", esc(peer, sizeof(peer), node_id),
        is_up ? 1 : 0);
}

static void render_cluster(struct broker *b, struct buf *out)
{
    static const struct cluster_stats none;
    const struct cluster_stats *cs = b->cluster ? cluster_get_stats(b->cluster) : &none;
    const struct stats *st = &b->stats;

    gauge(out, "shoal_cluster_members", "Other members joined (linked, routes received).",
          b->cluster ? cluster_members(b->cluster) : 0);
    family(out, "shoal_cluster_link_up", "gauge",
           "1 while the link to a known member is up and the member is joined.");
    if (b->cluster)
        cluster_peer_foreach(b->cluster, put_link, out);
    gauge(out, "shoal_cluster_remote_routes", "Topic filters other members subscribe to.",
          b->remote ? topic_tree_count(b->remote) : 0);
    counter(out, "shoal_cluster_forwards_sent_total", "Messages forwarded to other members.",
            cs->forwards_sent);
    counter(out, "shoal_cluster_forwards_received_total", "Messages other members forwarded here.",
            cs->forwards_received);
    counter(out, "shoal_cluster_forwards_retried_total",
            "Forwards sent again on a new link after a link break.", cs->forwards_retried);
    counter(out, "shoal_cluster_forwards_dropped_total",
            "Forwards dropped: the member's queue was full or it was gone.", cs->forwards_dropped);
    counter(out, "shoal_cluster_takeovers_in_total",
            "Clients closed here because another member took their client id.", st->takeovers_in);
    counter(out, "shoal_cluster_takeovers_out_total",
            "Client ids this node took over from another member.", st->takeovers_out);
    counter(out, "shoal_cluster_takeover_requests_sent_total",
            "Takeover requests sent to members (asked again after a partition included).",
            cs->takeovers_sent);
    counter(out, "shoal_cluster_takeover_requests_received_total",
            "Takeover requests received from members.", cs->takeovers_received);
    counter(out, "shoal_cluster_links_refused_total",
            "Member links refused (wrong cluster name or secret, bad hello).", cs->links_refused);
    counter(out, "shoal_cluster_route_snapshots_total", "Full route sets received from members.",
            cs->route_snapshots);
    counter(out, "shoal_cluster_members_cut_total",
            "Members found unreachable while the registry listed them alive (partitions).",
            cs->members_cut);
    counter(out, "shoal_cluster_forwards_parked_total",
            "Forwards parked in the store for a member that died or was cut off.", st->fwd_parked);
    counter(out, "shoal_cluster_parked_delivered_total",
            "Parked messages this node took from the store and delivered.", st->fwd_unparked);
    counter(out, "shoal_cluster_parked_replayed_total",
            "Parked messages sent again to a member and acknowledged.", st->fwd_replayed);
    counter(out, "shoal_cluster_sessions_adopted_total", "Sessions adopted from dead members.",
            st->adopted);
}

void metrics_render(struct broker *b, struct buf *out)
{
    render_process(b, out);
    render_connections(b, out);
    render_sessions(b, out);
    render_messages(b, out);
    render_security(b, out);
    render_store(b, out);
    render_cluster(b, out);
}
