/*
 * CONNECT: who the client is (certificate, user name and password, anonymous), client id
 * rules, keepalive negotiation, MQTT 5 limits, the will, takeover of a live connection with the
 * same client id, and session resume or creation. A password check runs on the thread pool:
 * the connection stops reading meanwhile and keeps a copy of the encoded CONNECT, which is
 * decoded again when the answer arrives, so nothing borrowed from the read buffer outlives it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/auth.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/listener.h"
#include "node/log.h"
#include "node/mesh.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/session.h"
#include "node/tls.h"
#include "node/topic.h"
#include "node/xport.h"

#define CONNECT_MAX_ALIAS_OUT 64 /* aliases we use toward a client, whatever it allows */

static void assign_client_id(struct broker *b, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const char *prefix = b->conf->auto_id_prefix ? b->conf->auto_id_prefix : "auto-";
    uint64_t r = (uint64_t)rand() << 32 ^ (uint64_t)rand() ^ clock_precise_us();
    r ^= ++b->next_session_id * 0x9E3779B97F4A7C15ull;
    int n = snprintf(out, cap, "%s", prefix);
    for (int i = 0; i < 16 && (size_t)n + 1 < cap; i++, n++)
        out[n] = hex[(r >> (i * 4)) & 15];
    out[n] = '\0';
}

#define CONNECT_NEEDS_PASSWORD 1
#define CONNECT_PENDING        1 /* connect_finish handed the wait to an asynchronous step */

/* A CONNECT waiting for its password check or for its session in the store. */
struct connect_wait {
    struct conn *c;
    uint8_t *raw; /* the encoded CONNECT */
    size_t raw_len;
    char *user; /* the admitted identity (NULL = anonymous) */
    size_t ulen;
    uint64_t epoch; /* owner epoch claimed in the store */
    bool is_resumed;
};

static struct connect_wait *wait_new(struct conn *c, const char *user, size_t ulen)
{
    struct broker *b = c->b;
    struct connect_wait *w = xcalloc(1, sizeof(*w));
    w->c = c;
    w->raw_len = b->cur_raw_len;
    w->raw = xmalloc(w->raw_len);
    memcpy(w->raw, b->cur_raw, w->raw_len);
    if (user) {
        w->user = xstrndup(user, ulen);
        w->ulen = ulen;
    }
    conn_ref(c);
    conn_hold(c);
    return w;
}

static void wait_free(struct connect_wait *w)
{
    struct conn *c = w->c;
    free(w->raw);
    free(w->user);
    free(w);
    conn_unref(c);
}

/* Counts a refused CONNECT by its reason and returns err. */
static int refuse(struct conn *c, enum stats_auth why, int err)
{
    c->b->stats.auth_fail[why]++;
    return err;
}

/*
 * Who the client is. Sets *user (NULL when anonymous) from the listener's certificate mapping
 * or the CONNECT's user name. Returns 0 when the client is admitted as is,
 * CONNECT_NEEDS_PASSWORD when the password file must decide, or an error.
 */
static int identify(struct conn *c, const struct codec_connect *k, const struct codec_props *pr,
                    char *cert, size_t cap, const char **user, size_t *ulen)
{
    const struct conf *cf = c->b->conf;
    const struct conf_listener *cl = conn_listener(c)->cl;

    *user = NULL;
    *ulen = 0;
    if (k->version == CODEC_V5 && CODEC_HAS(pr, CODEC_PROP_AUTH_METHOD))
        return refuse(c, STATS_AUTH_METHOD, ERR_BAD_AUTH_METHOD);
    if (cl->use_identity_as_username || cl->use_subject_as_username) {
        /* The certificate is the identity; CONNECT's user name and password are not used. */
        int n = c->xp && c->xp->tls ? tls_peer_username(c->xp->tls, cert, cap) : ERR_NOT_FOUND;
        if (n <= 0)
            return refuse(c, STATS_AUTH_CERTIFICATE, ERR_NOT_AUTHORIZED);
        *user = cert;
        *ulen = (size_t)n;
        return 0;
    }
    if (!k->has_username)
        return cf->allow_anonymous ? 0 : refuse(c, STATS_AUTH_ANONYMOUS, ERR_NOT_AUTHORIZED);
    *user = (const char *)k->username.p;
    *ulen = k->username.len;
    if (c->b->auth)
        return CONNECT_NEEDS_PASSWORD;
    /* A user name nobody can verify counts only where anonymous clients are welcome. */
    return cf->allow_anonymous ? 0 : refuse(c, STATS_AUTH_ANONYMOUS, ERR_NOT_AUTHORIZED);
}

static bool has_allowed_prefix(const struct conf *cf, const char *id, size_t idlen)
{
    const char *pre = cf->clientid_prefixes;
    size_t n = pre ? strlen(pre) : 0;
    return n == 0 || (idlen >= n && memcmp(id, pre, n) == 0);
}

static int set_will(struct conn *c, struct session *s, const struct codec_connect *k)
{
    if (!k->has_will) {
        session_will_set(s, NULL, 0, false, 0, 0);
        return 0;
    }
    if (!topic_name_valid((const char *)k->will_topic.p, k->will_topic.len))
        return ERR_TOPIC_NAME;
    if (k->will_retain && !c->b->conf->retain_available)
        return ERR_RETAIN_UNSUPPORTED;
    const struct codec_props *wp = &k->will_props;
    size_t plen = codec_props_size(wp, CODEC_PROPS_FORWARD);
    uint8_t stackp[512];
    uint8_t *props = plen <= sizeof(stackp) ? stackp : xmalloc(plen);
    (void)codec_props_write(props, wp, CODEC_PROPS_FORWARD);
    struct msg *m = msg_create(k->will_topic.p, k->will_topic.len, plen ? props : NULL, plen,
                               k->will_payload.p, k->will_payload.len);
    if (props != stackp)
        free(props);
    m->qos = k->will_qos;
    m->retain = k->will_retain;
    session_will_set(s, m, k->will_qos, k->will_retain,
                     CODEC_HAS(wp, CODEC_PROP_WILL_DELAY) ? wp->will_delay : 0,
                     CODEC_HAS(wp, CODEC_PROP_MESSAGE_EXPIRY) ? wp->message_expiry : 0);
    return 0;
}

static void send_connack(struct conn *c, bool present, const char *assigned, bool server_ka)
{
    const struct conf *cf = c->b->conf;
    struct codec_packet p = {0};
    p.type = CODEC_CONNACK;
    p.u.connack.session_present = present;
    if (c->version == CODEC_V5) {
        struct codec_props *pr = &p.props;
        if (assigned) {
            pr->has |= CODEC_BIT(CODEC_PROP_ASSIGNED_CLIENT_ID);
            pr->assigned_client_id.p = (const uint8_t *)assigned;
            pr->assigned_client_id.len = (uint32_t)strlen(assigned);
        }
        if (server_ka) {
            pr->has |= CODEC_BIT(CODEC_PROP_SERVER_KEEPALIVE);
            pr->server_keepalive = c->keepalive_s;
        }
        if (!cf->retain_available) {
            pr->has |= CODEC_BIT(CODEC_PROP_RETAIN_AVAILABLE);
            pr->retain_available = 0;
        }
        if (cf->max_packet_size) {
            pr->has |= CODEC_BIT(CODEC_PROP_MAX_PACKET_SIZE);
            pr->max_packet_size = cf->max_packet_size;
        }
        if (cf->max_inflight_messages && cf->max_inflight_messages < 65535) {
            /* Incoming QoS 2 exchanges awaiting PUBREL are bounded like outgoing ones. */
            pr->has |= CODEC_BIT(CODEC_PROP_RECEIVE_MAX);
            pr->receive_max = (uint16_t)cf->max_inflight_messages;
        }
        pr->has |= CODEC_BIT(CODEC_PROP_TOPIC_ALIAS_MAX);
        pr->topic_alias_max = (uint16_t)cf->max_topic_alias;
    }
    /* The CONNACK must go out even if the client's own size limit is tiny. */
    uint32_t keep = c->max_packet_out;
    c->max_packet_out = 0;
    (void)conn_send(c, &p);
    c->max_packet_out = keep;
}

static void apply_v5_limits(struct conn *c, const struct codec_props *pr)
{
    c->receive_max = CODEC_HAS(pr, CODEC_PROP_RECEIVE_MAX) ? pr->receive_max : 65535;
    c->max_packet_out = CODEC_HAS(pr, CODEC_PROP_MAX_PACKET_SIZE) ? pr->max_packet_size : 0;
    c->request_problem_info =
        CODEC_HAS(pr, CODEC_PROP_REQUEST_PROBLEM_INFO) ? pr->request_problem_info != 0 : true;
    uint16_t amax = CODEC_HAS(pr, CODEC_PROP_TOPIC_ALIAS_MAX) ? pr->topic_alias_max : 0;
    c->alias_max_out = amax > CONNECT_MAX_ALIAS_OUT ? CONNECT_MAX_ALIAS_OUT : amax;
    c->alias_max_in = (uint16_t)c->b->conf->max_topic_alias; /* tables made on first use */
}

static uint32_t session_expiry_of(const struct conn *c, const struct codec_connect *k,
                                  const struct codec_props *pr)
{
    const struct conf *cf = c->b->conf;
    uint32_t e;
    if (k->version == CODEC_V5)
        e = CODEC_HAS(pr, CODEC_PROP_SESSION_EXPIRY) ? pr->session_expiry : 0;
    else
        e = k->clean_start ? 0 : UINT32_MAX;
    if (e == UINT32_MAX && cf->persistent_client_expiration_s)
        e = cf->persistent_client_expiration_s > UINT32_MAX - 1
                ? UINT32_MAX - 1
                : (uint32_t)cf->persistent_client_expiration_s;
    return e;
}

static int connect_finish(struct conn *c, struct codec_packet *p, const char *user, size_t ulen,
                          struct connect_wait *w);

/* Re-decodes the saved CONNECT and finishes it; then reads what arrived behind it. */
static void connect_continue(struct connect_wait *w)
{
    struct conn *c = w->c;
    struct codec_packet p;
    int rc = codec_decode(w->raw, w->raw_len, 0, true, 0, &p);
    if (NEVER(rc <= 0))
        rc = ERR_MALFORMED;
    else
        rc = connect_finish(c, &p, w->user, w->ulen, w);
    if (rc == CONNECT_PENDING)
        return; /* w went on to the next step */
    if (rc < 0)
        handle_fail(c, rc);
    else
        conn_resume(c);
    wait_free(w);
}

static void on_resumed(void *ctx, int rc, uint64_t epoch)
{
    struct connect_wait *w = ctx;
    if (w->c->state != CONN_CONNECTING) {
        wait_free(w);
        return;
    }
    if (rc < 0) {
        handle_fail(w->c, rc);
        wait_free(w);
        return;
    }
    w->is_resumed = true;
    w->epoch = epoch;
    connect_continue(w);
}

/* A persistent session with a durable store: claim it and read its queue first. */
static int start_resume(struct conn *c, struct connect_wait *w, const char *id, size_t idlen,
                        bool clean_start, const char *user, size_t ulen)
{
    if (!w)
        w = wait_new(c, user, ulen);
    int rc = persist_resume(c, id, idlen, clean_start, on_resumed, w);
    if (rc < 0) {
        wait_free(w);
        return rc;
    }
    return CONNECT_PENDING;
}

/* The rest of CONNECT once the client is admitted: user is its name (NULL = anonymous). w is
 * the wait of an asynchronous CONNECT, NULL when all of it runs now. */
static int connect_finish(struct conn *c, struct codec_packet *p, const char *user, size_t ulen,
                          struct connect_wait *w)
{
    struct broker *b = c->b;
    const struct conf *cf = b->conf;
    const struct codec_connect *k = &p->u.connect;
    char idbuf[96];
    const char *id = (const char *)k->client_id.p;
    size_t idlen = k->client_id.len;
    const char *assigned = NULL;
    int rc;

    if (idlen == 0) {
        if ((k->version != CODEC_V5 && !k->clean_start) || k->version == CODEC_V31 ||
            !cf->allow_zero_length_clientid)
            return ERR_CLIENT_ID;
        assign_client_id(b, idbuf, sizeof(idbuf));
        id = assigned = idbuf;
        idlen = strlen(idbuf);
    }
    if (!has_allowed_prefix(cf, id, idlen))
        return refuse(c, STATS_AUTH_CLIENTID_PREFIX, ERR_NOT_AUTHORIZED);
    /* One connection per client id: the older one goes, before a resume reads the session's
     * stored queue, so that what the old connection still owed is read back too. */
    struct session *old_s = broker_session_find(b, id, idlen);
    if (old_s && old_s->conn) {
        struct conn *old = old_s->conn;
        log_info("conn", "client id taken over client_id=%s old_peer=%s new_peer=%s",
                 conn_log_id(old), conn_log_peer(old), conn_log_peer(c));
        handle_fail(old, ERR_TAKEN_OVER);
    }
    bool is_resumed = w && w->is_resumed;
    /* In a cluster every client id is claimed, so that a second connection anywhere closes
     * this one. */
    if (persist_is_on(b) && !assigned && !is_resumed &&
        (session_expiry_of(c, k, &p->props) != 0 || !k->clean_start || mesh_is_on(b)))
        return start_resume(c, w, id, idlen, k->clean_start, user, ulen);

    bool server_ka = false;
    c->keepalive_s = k->keepalive;
    if (k->version == CODEC_V5 && cf->max_keepalive < 65535 &&
        (k->keepalive == 0 || k->keepalive > cf->max_keepalive)) {
        c->keepalive_s = (uint16_t)cf->max_keepalive;
        server_ka = true;
    }
    if (k->version == CODEC_V5)
        apply_v5_limits(c, &p->props);

    struct session *s = broker_session_find(b, id, idlen); /* may have ended meanwhile */
    if (s && k->clean_start) {
        session_will_publish(s); /* the old session ends now: a delayed will goes out */
        if (is_resumed)
            s->epoch = w->epoch;
        persist_forget(s);
        session_destroy(&s);
    }
    bool present = s != NULL;
    if (!s)
        s = session_create(b, id, idlen);
    s->version = k->version;
    free(s->username);
    s->username = user ? xstrndup(user, ulen) : NULL;
    uint32_t old_expiry = s->expiry_s;
    s->expiry_s = session_expiry_of(c, k, &p->props);
    rc = set_will(c, s, k);
    if (rc < 0) {
        s->expiry_s = old_expiry;
        if (!present)
            session_destroy(&s);
        return rc;
    }
    if (is_resumed)
        persist_resumed(s, c, w->epoch);

    send_connack(c, present, assigned, server_ka);
    c->state = CONN_ACTIVE;
    b->stats.clients_connected++;
    b->stats.clients_total_connects++;
    if (b->stats.clients_connected > b->stats.clients_maximum)
        b->stats.clients_maximum = b->stats.clients_connected;
    conn_keepalive_start(c);
    if (cf->connection_messages)
        log_info("conn", "client connected client_id=%s peer=%s version=%u clean=%d keepalive=%u",
                 conn_log_id(c), conn_log_peer(c), k->version, k->clean_start, c->keepalive_s);
    session_attach(s, c);
    return 0;
}

static void on_password_checked(void *ctx, int result)
{
    struct connect_wait *w = ctx;
    struct conn *c = w->c;

    if (c->state == CONN_CONNECTING && result == 0) {
        connect_continue(w);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        c->b->stats.auth_fail[STATS_AUTH_BAD_CREDENTIALS] += result != ERR_CANCELED;
        log_ratelimited(LOG_LEVEL_INFO, "auth", "bad user name or password peer=%s",
                        conn_log_peer(c));
        handle_fail(c, result == ERR_CANCELED ? ERR_SHUTTING_DOWN : ERR_BAD_AUTH);
    }
    wait_free(w);
}

static int wait_for_password(struct conn *c, const struct codec_connect *k, const char *user,
                             size_t ulen)
{
    struct broker *b = c->b;
    struct connect_wait *w = wait_new(c, user, ulen);
    int rc = auth_check(b->loop, b->auth, user, ulen, k->password.p,
                        k->has_password ? k->password.len : 0, on_password_checked, w);
    if (rc < 0) {
        wait_free(w);
        return ERR_SERVER_UNAVAILABLE;
    }
    return 0;
}

int handle_connect(struct conn *c, struct codec_packet *p)
{
    const struct codec_connect *k = &p->u.connect;
    char cert[256];
    const char *user;
    size_t ulen;

    c->version = k->version;
    c->state = CONN_CONNECTING;
    c->receive_max = 65535;
    int rc = identify(c, k, &p->props, cert, sizeof(cert), &user, &ulen);
    if (rc == CONNECT_NEEDS_PASSWORD)
        return wait_for_password(c, k, user, ulen);
    if (rc < 0)
        return rc;
    rc = connect_finish(c, p, user, ulen, NULL);
    return rc == CONNECT_PENDING ? 0 : rc;
}
