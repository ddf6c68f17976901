/*
 * Dispatch of decoded packets by type and connection state, and the single mapping from
 * internal errors to MQTT reason codes (v5) and CONNACK return codes (v3.1/3.1.1).
 */
#include "node/handle.h"

#include <stddef.h>
#include <string.h>

#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/log.h"

typedef int (*handle_fn)(struct conn *c, struct codec_packet *p);

static const handle_fn handlers[16] = {
    [CODEC_CONNECT] = handle_connect,     [CODEC_PUBLISH] = handle_publish,
    [CODEC_PUBACK] = handle_ack,          [CODEC_PUBREC] = handle_ack,
    [CODEC_PUBREL] = handle_ack,          [CODEC_PUBCOMP] = handle_ack,
    [CODEC_SUBSCRIBE] = handle_subscribe, [CODEC_UNSUBSCRIBE] = handle_unsubscribe,
    [CODEC_PINGREQ] = handle_pingreq,     [CODEC_DISCONNECT] = handle_disconnect,
    [CODEC_AUTH] = handle_auth,
};

static const struct {
    int err;
    uint8_t reason;
} reason_table[] = {
    {ERR_MALFORMED, 0x81},
    {ERR_PROTOCOL, 0x82},
    {ERR_UNSUPPORTED_VERSION, 0x84},
    {ERR_CLIENT_ID, 0x85},
    {ERR_BAD_AUTH, 0x86},
    {ERR_NOT_AUTHORIZED, 0x87},
    {ERR_SERVER_UNAVAILABLE, 0x88},
    {ERR_SERVER_BUSY, 0x89},
    {ERR_BANNED, 0x8A},
    {ERR_SHUTTING_DOWN, 0x8B},
    {ERR_BAD_AUTH_METHOD, 0x8C},
    {ERR_KEEPALIVE, 0x8D},
    {ERR_TAKEN_OVER, 0x8E},
    {ERR_TOPIC_FILTER, 0x8F},
    {ERR_TOPIC_NAME, 0x90},
    {ERR_PACKET_ID_IN_USE, 0x91},
    {ERR_PACKET_ID_NOT_FOUND, 0x92},
    {ERR_RECEIVE_MAX, 0x93},
    {ERR_TOPIC_ALIAS, 0x94},
    {ERR_PACKET_TOO_LARGE, 0x95},
    {ERR_QUOTA, 0x97},
    {ERR_PAYLOAD_FORMAT, 0x99},
    {ERR_RETAIN_UNSUPPORTED, 0x9A},
    {ERR_QOS_UNSUPPORTED, 0x9B},
    {ERR_SHARED_UNSUPPORTED, 0x9E},
    {ERR_CONN_RATE, 0x9F},
    {ERR_SUBID_UNSUPPORTED, 0xA1},
    {ERR_WILDCARD_UNSUPPORTED, 0xA2},
};

uint8_t handle_reason_code(int err)
{
    for (size_t i = 0; i < sizeof(reason_table) / sizeof(reason_table[0]); i++)
        if (reason_table[i].err == err)
            return reason_table[i].reason;
    return 0x80; /* unspecified error */
}

/* CONNACK return codes of MQTT 3.1/3.1.1, or -1 when the spec says to just close. */
static int v3_return_code(int err)
{
    switch (err) {
    case ERR_UNSUPPORTED_VERSION:
        return 1;
    case ERR_CLIENT_ID:
        return 2;
    case ERR_SERVER_UNAVAILABLE:
    case ERR_SERVER_BUSY:
    case ERR_SHUTTING_DOWN:
        return 3;
    case ERR_BAD_AUTH:
        return 4;
    case ERR_NOT_AUTHORIZED:
    case ERR_BANNED:
    case ERR_BAD_AUTH_METHOD:
        return 5;
    default:
        return -1;
    }
}

/* MQTT 5 Reason String: CONNACK and DISCONNECT may always carry one; other packets only when
 * the client did not turn Request Problem Information off. */
void handle_reason_string(struct conn *c, struct codec_packet *p, int err)
{
    if (c->version != 5 ||
        (!c->request_problem_info && p->type != CODEC_CONNACK && p->type != CODEC_DISCONNECT))
        return;
    const char *s = err_str(err);
    p->props.has |= CODEC_BIT(CODEC_PROP_REASON_STRING);
    p->props.reason_string.p = (const uint8_t *)s;
    p->props.reason_string.len = (uint32_t)strlen(s);
}

void handle_fail(struct conn *c, int err)
{
    struct codec_packet p = {0};

    if (c->state == CONN_CLOSING)
        return;
    if (c->state != CONN_ACTIVE) {
        /* No CONNACK yet: refuse the connection the way its protocol version expects. */
        uint8_t v = c->version ? c->version : CODEC_V311;
        int code = v == CODEC_V5 ? handle_reason_code(err) : v3_return_code(err);
        /* Before CONNECT was understood only a bad protocol level earns a CONNACK (3.1.1). */
        if (code >= 0 && (c->state != CONN_NEW || err == ERR_UNSUPPORTED_VERSION)) {
            p.type = CODEC_CONNACK;
            p.u.connack.reason = (uint8_t)code;
            handle_reason_string(c, &p, err);
            c->version = v;
            (void)conn_send(c, &p);
        }
    } else if (c->version == CODEC_V5) {
        p.type = CODEC_DISCONNECT;
        p.u.disconnect.reason = handle_reason_code(err);
        handle_reason_string(c, &p, err);
        (void)conn_send(c, &p);
    }
    if (err != ERR_SHUTTING_DOWN && err != ERR_TAKEN_OVER)
        log_ratelimited(LOG_LEVEL_INFO, "handle", "closing client_id=%s peer=%s rc=%s",
                        conn_log_id(c), conn_log_peer(c), err_str(err));
    conn_close(c, err);
}

int handle_packet(struct conn *c, struct codec_packet *p)
{
    int rc;

    if (c->state == CONN_NEW && p->type != CODEC_CONNECT)
        rc = ERR_PROTOCOL;
    else if (c->state != CONN_NEW && p->type == CODEC_CONNECT)
        rc = ERR_PROTOCOL;
    else if (!handlers[p->type])
        rc = ERR_PROTOCOL;
    else
        rc = handlers[p->type](c, p);
    if (rc < 0) {
        handle_fail(c, rc);
        return rc;
    }
    return 0;
}
