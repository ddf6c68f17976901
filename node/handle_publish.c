/*
 * Incoming PUBLISH: topic alias resolution, limits, QoS 2 de-duplication, one struct msg built
 * from the packet (the only copy of the payload), routing, and the acknowledgement.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "node/acl.h"
#include "node/broker.h"
#include "node/clock.h"
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/msg.h"
#include "node/persist.h"
#include "node/router.h"
#include "node/session.h"

static void send_ack(struct conn *c, enum codec_type type, uint16_t pid, int err)
{
    struct codec_packet p = {0};
    p.type = type;
    p.u.ack.packet_id = pid;
    if (c->version == 5 && err < 0) {
        p.u.ack.reason = handle_reason_code(err);
        handle_reason_string(c, &p, err);
    }
    (void)conn_send(c, &p);
}

/* Resolves the topic through MQTT 5 topic aliases. Returns 0 and the topic view, or an error. */
static int resolve_topic(struct conn *c, const struct codec_packet *p, const char **t, size_t *len)
{
    const struct codec_publish *pub = &p->u.publish;
    *t = (const char *)pub->topic.p;
    *len = pub->topic.len;
    if (c->version != 5 || !CODEC_HAS(&p->props, CODEC_PROP_TOPIC_ALIAS))
        return *len ? 0 : ERR_PROTOCOL;
    uint16_t a = p->props.topic_alias;
    if (a == 0 || a > c->alias_max_in)
        return ERR_TOPIC_ALIAS;
    char **in = conn_aliases(c);
    if (*len) {
        free(in[a - 1]);
        in[a - 1] = xstrndup(*t, *len);
        return 0;
    }
    if (!in[a - 1])
        return ERR_PROTOCOL;
    *t = in[a - 1];
    *len = strlen(*t);
    return 0;
}

static struct msg *build_msg(struct conn *c, const struct codec_packet *p, const char *t,
                             size_t tlen)
{
    const struct codec_publish *pub = &p->u.publish;
    size_t plen = 0;
    uint8_t stackp[512];
    uint8_t *props = stackp;
    if (c->version == 5) {
        plen = codec_props_size(&p->props, CODEC_PROPS_FORWARD);
        if (plen > sizeof(stackp))
            props = xmalloc(plen);
        (void)codec_props_write(props, &p->props, CODEC_PROPS_FORWARD);
    }
    struct msg *m =
        msg_create(t, tlen, plen ? props : NULL, plen, pub->payload.p, pub->payload.len);
    if (props != stackp)
        free(props);
    m->qos = pub->qos;
    m->retain = pub->retain;
    m->origin = c->s->id;
    if (c->version == 5 && CODEC_HAS(&p->props, CODEC_PROP_MESSAGE_EXPIRY))
        m->expiry_ms = clock_now_ms() + (uint64_t)p->props.message_expiry * 1000u;
    return m;
}

int handle_publish(struct conn *c, struct codec_packet *p)
{
    struct broker *b = c->b;
    const struct conf *cf = b->conf;
    const struct codec_publish *pub = &p->u.publish;
    const char *t;
    size_t tlen;
    enum codec_type ack = pub->qos == 1 ? CODEC_PUBACK : CODEC_PUBREC;

    b->stats.pub_received++;
    b->stats.pub_in[pub->qos]++;
    if (c->version == 5 && CODEC_HAS(&p->props, CODEC_PROP_SUBSCRIPTION_ID))
        return ERR_PROTOCOL;
    int rc = resolve_topic(c, p, &t, &tlen);
    if (rc < 0)
        return rc;
    if (pub->retain && !cf->retain_available)
        return ERR_RETAIN_UNSUPPORTED;
    if (pub->qos == 2 && session_rx_qos2_seen(c->s, pub->packet_id)) {
        send_ack(c, CODEC_PUBREC, pub->packet_id, 0); /* duplicate: already routed once */
        return 0;
    }
    if (cf->message_size_limit && pub->payload.len > cf->message_size_limit) {
        b->stats.pub_dropped++;
        b->stats.drops[STATS_DROP_TOO_LARGE]++;
        if (pub->qos == 2)
            (void)session_rx_qos2_release(c->s, pub->packet_id);
        if (pub->qos > 0)
            send_ack(c, ack, pub->packet_id, ERR_QUOTA);
        return 0;
    }
    if (c->version == 5 && CODEC_HAS(&p->props, CODEC_PROP_PAYLOAD_FORMAT) &&
        p->props.payload_format == 1 && !codec_utf8_valid(pub->payload.p, pub->payload.len)) {
        if (pub->qos == 0)
            return ERR_PAYLOAD_FORMAT;
        if (pub->qos == 2)
            (void)session_rx_qos2_release(c->s, pub->packet_id);
        send_ack(c, ack, pub->packet_id, ERR_PAYLOAD_FORMAT);
        return 0;
    }

    /* $SYS belongs to the broker: clients may not publish into it (as mosquitto). A refused
     * publish is acknowledged all the same, with reason 0x87 in MQTT 5; 3.1.1 has no way to
     * say no, and a missing ack would only make the client send it again. */
    bool is_sys = tlen >= 4 && memcmp(t, "$SYS", 4) == 0 && (tlen == 4 || t[4] == '/');
    if (is_sys ||
        (b->acl && !acl_check(b->acl, c->s->client_id, c->s->username, t, tlen, ACL_WRITE))) {
        b->stats.acl_denied += !is_sys;
        if (pub->qos == 2)
            (void)session_rx_qos2_release(c->s, pub->packet_id);
        if (pub->qos > 0)
            send_ack(c, ack, pub->packet_id, ERR_NOT_AUTHORIZED);
        return 0;
    }
    if (pub->qos == 2 && c->s->q->n_rx_qos2 > c->b->conf->max_inflight_messages &&
        c->b->conf->max_inflight_messages)
        return ERR_RECEIVE_MAX;
    struct msg *m = build_msg(c, p, t, tlen);
    b->publisher = c;
    router_publish(b, m, c->s);
    b->publisher = NULL;
    msg_unref(&m);
    if (pub->qos == 2)
        persist_save_before_ack(c); /* the packet id must be durable before PUBREC */
    if (pub->qos > 0 && !persist_ack_defer(c, (uint8_t)ack, pub->packet_id))
        send_ack(c, ack, pub->packet_id, 0);
    return 0;
}
