#ifndef SHOAL_NODE_STATS_H
#define SHOAL_NODE_STATS_H

/*
 * Broker counters and their publication under $SYS/broker/ every sys_interval.
 */

#include <stdint.h>

#define SHOAL_VERSION "0.1.0"

struct broker;

/* Why a message was not delivered, for shoal_messages_dropped_total{reason}. */
enum stats_drop {
    STATS_DROP_QUEUE_FULL = 0,   /* max_queued_messages or max_queued_bytes reached */
    STATS_DROP_TOO_LARGE,        /* a PUBLISH over message_size_limit, on the way in */
    STATS_DROP_PACKET_TOO_LARGE, /* over the subscriber's MQTT 5 Maximum Packet Size */
    STATS_DROP_SLOW_CONSUMER,    /* QoS 0 to a client too far behind, or not connected yet */
    STATS_DROP_EXPIRED,          /* its message expiry passed before it could be sent */
    STATS_DROP_N
};

/* Why a CONNECT was refused as unauthenticated or unauthorised. */
enum stats_auth {
    STATS_AUTH_BAD_CREDENTIALS = 0, /* the password file said no */
    STATS_AUTH_ANONYMOUS,           /* no verifiable user name while anonymous clients are off */
    STATS_AUTH_CERTIFICATE,         /* the listener maps certificates to users: none usable */
    STATS_AUTH_CLIENTID_PREFIX,     /* client id outside clientid_prefixes */
    STATS_AUTH_METHOD,              /* MQTT 5 enhanced authentication, which is not supported */
    STATS_AUTH_N
};

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
    uint64_t auth_fail[STATS_AUTH_N]; /* CONNECTs refused, by enum stats_auth */
    uint64_t acl_denied;              /* publishes, subscriptions and deliveries the ACL refused */
    uint64_t takeovers_in;  /* clients this node dropped because another member took them */
    uint64_t takeovers_out; /* takeovers this node asked of another member */
    uint64_t fwd_parked;    /* forwards parked in the store for a member that died */
    uint64_t fwd_unparked;  /* parked messages this node took and delivered */
    uint64_t fwd_replayed;  /* parked messages sent again to a member, acknowledged */
    uint64_t adopted;       /* sessions adopted from dead members */
    /* By QoS: PUBLISH packets received from clients and sent to them (resends included). */
    uint64_t pub_in[3];
    uint64_t pub_out[3];
    /* pub_dropped by enum stats_drop; expired messages are counted here only. */
    uint64_t drops[STATS_DROP_N];
    uint64_t reload_failures; /* security files that failed to load on a reload */
};

/* Publishes the $SYS topics as retained messages through the router. */
void stats_publish_sys(struct broker *b);

#endif
