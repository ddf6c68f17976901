/*
 * PUBACK, PUBREC, PUBREL and PUBCOMP: transitions of the outgoing window (session_ack) and the
 * end of the incoming QoS 2 exchange.
 */
#include "node/codec.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/handle.h"
#include "node/log.h"
#include "node/persist.h"
#include "node/session.h"

int handle_ack(struct conn *c, struct codec_packet *p)
{
    uint16_t pid = p->u.ack.packet_id;

    if (p->type == CODEC_PUBREL) {
        int rc = session_rx_qos2_release(c->s, pid);
        /* A forgotten id must be durable before PUBCOMP, or a restart could take the
         * client's next message with that id for a duplicate. */
        if (rc == 0)
            persist_save_before_ack(c);
        if (rc == 0 && persist_ack_defer(c, CODEC_PUBCOMP, pid))
            return 0;
        struct codec_packet r = {0};
        r.type = CODEC_PUBCOMP;
        r.u.ack.packet_id = pid;
        r.u.ack.reason = rc < 0 && c->version == 5 ? 0x92 : 0;
        (void)conn_send(c, &r);
        return 0;
    }
    if (p->type == CODEC_PUBREC && p->u.ack.reason >= 0x80) {
        /* The client refused the message: the exchange ends here. */
        (void)session_ack(c->s, pid, 0);
        return 0;
    }
    if (session_ack(c->s, pid, (uint8_t)p->type) < 0)
        log_ratelimited(LOG_LEVEL_DEBUG, "handle", "ack for unknown packet id client_id=%s pid=%u",
                        conn_log_id(c), pid);
    return 0;
}
