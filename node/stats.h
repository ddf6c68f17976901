#ifndef SHOAL_NODE_STATS_H
#define SHOAL_NODE_STATS_H

/*
 * Broker counters and their publication under $SYS/broker/ every sys_interval.
 */

#include <stdint.h>

struct broker;

struct stats {
    uint64_t clients_connected;
    uint64_t clients_maximum;
    uint64_t clients_total_connects;
    uint64_t msgs_received; /* every MQTT packet received */
    uint64_t msgs_sent;     /* every MQTT packet sent */
    uint64_t pub_received;  /* PUBLISH received */
    uint64_t pub_sent;      /* PUBLISH sent */
    uint64_t pub_dropped;   /* deliveries dropped (queue full, slow consumer, too large) */
    uint64_t pub_unrouted;  /* PUBLISH that matched no subscription */
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t connections_refused;
    uint64_t auth_failures; /* CONNECTs refused: bad password, anonymous, certificate */
    uint64_t acl_denied;    /* publishes, subscriptions and deliveries the ACL refused */
    uint64_t takeovers_in;  /* clients this node dropped because another member took them */
    uint64_t takeovers_out; /* takeovers this node asked of another member */
    uint64_t fwd_parked;    /* forwards parked in the store for a member that died */
    uint64_t fwd_unparked;  /* parked messages this node took and delivered */
    uint64_t fwd_replayed;  /* parked messages sent again to a member, acknowledged */
    uint64_t adopted;       /* sessions adopted from dead members */
};

/* Publishes the $SYS topics as retained messages through the router. */
void stats_publish_sys(struct broker *b);

#endif
