/*
 * PINGREQ, DISCONNECT (will handling and the MQTT 5 session-expiry update) and AUTH.
 */
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/session.h"

int handle_pingreq(struct conn *c, struct codec_packet *p)
{
    (void)p;
    struct codec_packet r = {0};
    r.type = CODEC_PINGRESP;
    (void)conn_send(c, &r);
    return 0;
}

int handle_disconnect(struct conn *c, struct codec_packet *p)
{
    struct session *s = c->s;
    uint8_t reason = p->u.disconnect.reason;

    if (c->version == 5 && CODEC_HAS(&p->props, CODEC_PROP_SESSION_EXPIRY)) {
        /* A session that was to end with the connection may not be extended at DISCONNECT. */
        if (s->expiry_s == 0 && p->props.session_expiry != 0)
            return ERR_PROTOCOL;
        s->expiry_s = p->props.session_expiry;
    }
    /* 0x04 = disconnect with will message: the will is published as on a network failure. */
    if (c->version == 5 && reason == 0x04) {
        conn_close(c, ERR_CLOSED);
        return 0;
    }
    session_will_set(s, NULL, 0, false, 0, 0);
    conn_close(c, 0);
    return 0;
}

int handle_auth(struct conn *c, struct codec_packet *p)
{
    (void)c;
    (void)p;
    /* Enhanced authentication is refused at CONNECT, so an AUTH packet is never expected. */
    return ERR_PROTOCOL;
}
