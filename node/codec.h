#ifndef SHOAL_NODE_CODEC_H
#define SHOAL_NODE_CODEC_H

/*
 * Pure MQTT 3.1 / 3.1.1 / 5.0 codec: no I/O, no libuv, no allocation.
 *
 * Decoding fills a struct codec_packet whose strings are views into the caller's buffer; they
 * stay valid only as long as that buffer is untouched. Decoding validates everything the
 * specifications require of the bytes themselves (reserved flags, lengths, UTF-8, property
 * placement and duplicates, packet identifiers, topic-name syntax) and returns a precise
 * negative ERR_* code; node/handle.c maps those codes to reason codes.
 *
 * Encoding is two-step: codec_size() then codec_write() into a buffer of that size. For
 * PUBLISH, codec_publish_head_*() write everything except the payload so that the payload can
 * go out by reference (iovec) from the shared struct msg.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CODEC_AGAIN 0 /* need more bytes */

/* Largest remaining length MQTT can express (4-byte variable integer). */
#define CODEC_MAX_REMAINING 268435455u

enum codec_type {
    CODEC_CONNECT = 1,
    CODEC_CONNACK = 2,
    CODEC_PUBLISH = 3,
    CODEC_PUBACK = 4,
    CODEC_PUBREC = 5,
    CODEC_PUBREL = 6,
    CODEC_PUBCOMP = 7,
    CODEC_SUBSCRIBE = 8,
    CODEC_SUBACK = 9,
    CODEC_UNSUBSCRIBE = 10,
    CODEC_UNSUBACK = 11,
    CODEC_PINGREQ = 12,
    CODEC_PINGRESP = 13,
    CODEC_DISCONNECT = 14,
    CODEC_AUTH = 15,
};

/* Protocol levels as carried in CONNECT. */
enum codec_version { CODEC_V31 = 3, CODEC_V311 = 4, CODEC_V5 = 5 };

/* MQTT 5 property identifiers. */
enum codec_prop_id {
    CODEC_PROP_PAYLOAD_FORMAT = 0x01,
    CODEC_PROP_MESSAGE_EXPIRY = 0x02,
    CODEC_PROP_CONTENT_TYPE = 0x03,
    CODEC_PROP_RESPONSE_TOPIC = 0x08,
    CODEC_PROP_CORRELATION_DATA = 0x09,
    CODEC_PROP_SUBSCRIPTION_ID = 0x0B,
    CODEC_PROP_SESSION_EXPIRY = 0x11,
    CODEC_PROP_ASSIGNED_CLIENT_ID = 0x12,
    CODEC_PROP_SERVER_KEEPALIVE = 0x13,
    CODEC_PROP_AUTH_METHOD = 0x15,
    CODEC_PROP_AUTH_DATA = 0x16,
    CODEC_PROP_REQUEST_PROBLEM_INFO = 0x17,
    CODEC_PROP_WILL_DELAY = 0x18,
    CODEC_PROP_REQUEST_RESPONSE_INFO = 0x19,
    CODEC_PROP_RESPONSE_INFO = 0x1A,
    CODEC_PROP_SERVER_REFERENCE = 0x1C,
    CODEC_PROP_REASON_STRING = 0x1F,
    CODEC_PROP_RECEIVE_MAX = 0x21,
    CODEC_PROP_TOPIC_ALIAS_MAX = 0x22,
    CODEC_PROP_TOPIC_ALIAS = 0x23,
    CODEC_PROP_MAX_QOS = 0x24,
    CODEC_PROP_RETAIN_AVAILABLE = 0x25,
    CODEC_PROP_USER_PROPERTY = 0x26,
    CODEC_PROP_MAX_PACKET_SIZE = 0x27,
    CODEC_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    CODEC_PROP_SUB_ID_AVAILABLE = 0x29,
    CODEC_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

#define CODEC_BIT(id)        (1ull << (id))
#define CODEC_HAS(props, id) (((props)->has & CODEC_BIT(id)) != 0)

/* The properties an application message carries from publisher to subscriber unchanged
 * (message expiry and topic alias are rewritten per hop, subscription ids per subscriber). */
#define CODEC_PROPS_FORWARD                                                                        \
    (CODEC_BIT(CODEC_PROP_PAYLOAD_FORMAT) | CODEC_BIT(CODEC_PROP_CONTENT_TYPE) |                   \
     CODEC_BIT(CODEC_PROP_RESPONSE_TOPIC) | CODEC_BIT(CODEC_PROP_CORRELATION_DATA) |               \
     CODEC_BIT(CODEC_PROP_USER_PROPERTY))

/* A view of bytes: a UTF-8 string or binary data. p is NULL when absent. */
struct codec_str {
    const uint8_t *p;
    uint32_t len;
};

/*
 * Decoded or to-be-encoded MQTT 5 properties. `has` says which are present. User properties
 * are kept as their raw encoded run (each: 0x26, string, string) in wire order, so that they
 * can be forwarded verbatim. Subscription identifiers: decoding stores the first in sub_id;
 * encoding writes sub_ids[0..n_sub_ids) when the bit is set (several for overlapping
 * subscriptions), or sub_id alone when n_sub_ids is 0. The user_props run may also hold other
 * properties a peer interleaved: read it with codec_user_prop_next, write it with
 * codec_props_write, never copy it raw into another packet.
 */
struct codec_props {
    uint64_t has;
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t max_packet_size;
    uint32_t sub_id;
    const uint32_t *sub_ids;
    uint32_t n_sub_ids;
    uint16_t server_keepalive;
    uint16_t receive_max;
    uint16_t topic_alias_max;
    uint16_t topic_alias;
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t max_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    struct codec_str content_type;
    struct codec_str response_topic;
    struct codec_str correlation_data;
    struct codec_str assigned_client_id;
    struct codec_str auth_method;
    struct codec_str auth_data;
    struct codec_str response_info;
    struct codec_str server_reference;
    struct codec_str reason_string;
    struct codec_str user_props; /* raw run of user-property entries */
};

struct codec_connect {
    uint8_t version; /* CODEC_V31, CODEC_V311 or CODEC_V5 */
    bool clean_start;
    bool has_will;
    bool has_username;
    bool has_password;
    bool will_retain;
    uint8_t will_qos;
    uint16_t keepalive;
    struct codec_str client_id;
    struct codec_props will_props; /* v5 only */
    struct codec_str will_topic;
    struct codec_str will_payload;
    struct codec_str username;
    struct codec_str password;
};

struct codec_connack {
    bool session_present;
    uint8_t reason; /* v5 reason code, or the 3.1.1 return code */
};

struct codec_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id; /* 0 for QoS 0 */
    struct codec_str topic;
    struct codec_str payload;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. reason is 0 when omitted on the wire. */
struct codec_ack {
    uint16_t packet_id;
    uint8_t reason;
};

struct codec_sub_entry {
    struct codec_str filter;
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling; /* 0, 1 or 2 */
};

/*
 * SUBSCRIBE and UNSUBSCRIBE. Decoding validates every entry and sets raw (the payload) and
 * count; iterate with codec_sub_next / codec_unsub_next. Encoding reads list and count, or
 * writes raw verbatim when list is NULL (re-encoding a decoded packet).
 */
struct codec_subscribe {
    uint16_t packet_id;
    uint32_t count;
    struct codec_str raw;
    const struct codec_sub_entry *list;
};

struct codec_unsubscribe {
    uint16_t packet_id;
    uint32_t count;
    struct codec_str raw;
    const struct codec_str *list;
};

/* SUBACK and UNSUBACK (UNSUBACK has reasons only in v5; count 0 otherwise). */
struct codec_suback {
    uint16_t packet_id;
    uint32_t count;
    const uint8_t *reasons;
};

/* DISCONNECT and AUTH. reason is 0 when omitted on the wire. */
struct codec_disconnect {
    uint8_t reason;
};

struct codec_packet {
    enum codec_type type;
    uint8_t flags; /* low nibble of the fixed header, as received */
    union {
        struct codec_connect connect;
        struct codec_connack connack;
        struct codec_publish publish;
        struct codec_ack ack;
        struct codec_subscribe subscribe;
        struct codec_unsubscribe unsubscribe;
        struct codec_suback suback;
        struct codec_disconnect disconnect;
    } u;
    struct codec_props props; /* v5 only; zeroed otherwise */
};

/*
 * Reads the fixed header at buf. On success returns 1 and sets *total to the whole packet's
 * size in bytes. Returns CODEC_AGAIN when the header is incomplete, ERR_MALFORMED for a
 * remaining length longer than 4 bytes, ERR_PACKET_TOO_LARGE when *total would exceed
 * max_size (0 = no limit beyond the protocol's). Lets a reader reject oversize packets before
 * buffering them.
 */
int codec_frame(const uint8_t *buf, size_t len, uint32_t max_size, size_t *total);

/*
 * Decodes one packet from buf. version is the connection's protocol level, or 0 before
 * CONNECT (then only CONNECT is accepted; its version is read from the packet). A server
 * decodes client-to-server packets and a client decodes server-to-client packets: is_server
 * selects which direction's rules apply. Returns the packet's size (>0), CODEC_AGAIN, or a
 * negative ERR_*. On error *out is unspecified. A CONNECT when version is not 0 is ERR_PROTOCOL
 * (a second CONNECT); a version other than 0, 3, 4 or 5 is ERR_INVALID.
 */
int codec_decode(const uint8_t *buf, size_t len, uint8_t version, bool is_server, uint32_t max_size,
                 struct codec_packet *out);

/* Iterates a decoded SUBSCRIBE's entries. *pos starts at 0. Returns false after the last. */
bool codec_sub_next(const struct codec_subscribe *s, uint8_t version, size_t *pos,
                    struct codec_sub_entry *e);
/* Iterates a decoded UNSUBSCRIBE's filters. */
bool codec_unsub_next(const struct codec_unsubscribe *u, size_t *pos, struct codec_str *filter);

/*
 * Exact encoded size of p for version (properties are written only for v5, and only those the
 * packet type may carry; v5 acks, DISCONNECT and AUTH leave out a 0 reason code and empty
 * properties). For CONNECT a version of 0 means p->u.connect.version. Returns 0 if the
 * packet cannot be encoded (for example a remaining length past CODEC_MAX_REMAINING).
 */
size_t codec_size(uint8_t version, const struct codec_packet *p);
/* Writes p into out, which holds at least codec_size() bytes. Returns the bytes written. */
size_t codec_write(uint8_t *out, uint8_t version, const struct codec_packet *p);

/* PUBLISH without its payload bytes: the header's remaining length counts
 * p->u.publish.payload.len, but only the head is written. */
size_t codec_publish_head_size(uint8_t version, const struct codec_packet *p);
size_t codec_publish_head_write(uint8_t *out, uint8_t version, const struct codec_packet *p);

/* Size of the properties in p->has & mask, without the length prefix. */
size_t codec_props_size(const struct codec_props *p, uint64_t mask);
/* Writes those properties (no length prefix); returns the end pointer. */
uint8_t *codec_props_write(uint8_t *out, const struct codec_props *p, uint64_t mask);

/*
 * Iterates the user properties of a raw run (struct codec_props.user_props): sets *key and *val
 * to views of the next pair and returns true, or returns false after the last. *pos starts at
 * 0. Entries of other properties found inside the run (a peer may interleave them) are skipped.
 */
bool codec_user_prop_next(const struct codec_str *run, size_t *pos, struct codec_str *key,
                          struct codec_str *val);

/* Variable byte integer helpers. codec_varint_size(v) is 1..4 (v <= CODEC_MAX_REMAINING). */
size_t codec_varint_size(uint32_t v);
uint8_t *codec_varint_write(uint8_t *out, uint32_t v);

/* True when s is well-formed UTF-8 as MQTT requires: no U+0000, no surrogates, no overlong
 * forms, nothing above U+10FFFF. */
bool codec_utf8_valid(const uint8_t *s, size_t len);

/* Internal to node/codec*.c (folder-internal symbols). */
#define CODEC__KIND_WILL 0 /* property-set index of CONNECT's will properties */
/* Reads a property length and block at *pp for packet type kind (or CODEC__KIND_WILL) into
 * out, rejecting the properties in deny; advances *pp. Returns 0 or a negative ERR_*. */
int codec__props_read(const uint8_t **pp, const uint8_t *end, unsigned kind, uint64_t deny,
                      struct codec_props *out);
/* The properties packet type kind may carry. */
uint64_t codec__props_mask(unsigned kind);
/* codec_props_size that also reports values that cannot be encoded (string > 65535 bytes,
 * subscription identifier 0 or > CODEC_MAX_REMAINING). */
size_t codec__props_len(const struct codec_props *p, uint64_t mask, bool *is_bad);

#endif
