/*
 * Message allocation. Small messages are recycled through a free list so that steady-state
 * publishing does not call malloc; the list is bounded so a burst does not pin memory forever.
 */
#include "node/msg.h"

#include <stdlib.h>
#include <string.h>

#include "node/buf.h"

#define MSG_SMALL      256 /* bytes of topic+props+payload that fit a recycled block */
#define MSG_FREE_LIMIT 4096

struct msg_free {
    struct msg_free *next;
};

static struct msg_free *free_list;
static uint32_t free_count;
static uint64_t live;

struct msg *msg_create(const void *topic, size_t topic_len, const void *props, size_t props_len,
                       const void *payload, size_t payload_len)
{
    size_t body = topic_len + 1 + props_len + payload_len;
    struct msg *m;

    if (body <= MSG_SMALL && free_list) {
        m = (struct msg *)(void *)free_list;
        free_list = free_list->next;
        free_count--;
    } else {
        m = xmalloc(sizeof(*m) + (body <= MSG_SMALL ? MSG_SMALL : body));
    }
    memset(m, 0, sizeof(*m));
    m->refs = 1;
    m->topic_len = (uint16_t)topic_len;
    m->props_len = (uint32_t)props_len;
    m->payload_len = (uint32_t)payload_len;
    m->topic = (char *)m->data;
    memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->props = m->data + topic_len + 1;
    if (props_len)
        memcpy(m->props, props, props_len);
    m->payload = m->props + props_len;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    live++;
    return m;
}

void msg_unref(struct msg **mp)
{
    struct msg *m = *mp;
    *mp = NULL;
    if (!m || --m->refs > 0)
        return;
    for (int i = 0; i < MSG_CACHE_N; i++) {
        free(m->cache[i]);
        m->cache[i] = NULL;
    }
    live--;
    size_t body = (size_t)m->topic_len + 1 + m->props_len + m->payload_len;
    if (body <= MSG_SMALL && free_count < MSG_FREE_LIMIT) {
        struct msg_free *f = (struct msg_free *)(void *)m;
        f->next = free_list;
        free_list = f;
        free_count++;
        return;
    }
    free(m);
}

uint32_t msg_expiry_left_s(const struct msg *m, uint64_t now_ms)
{
    if (m->expiry_ms == 0 || now_ms >= m->expiry_ms)
        return 0;
    return (uint32_t)((m->expiry_ms - now_ms + 999) / 1000);
}

uint64_t msg_live_count(void)
{
    return live;
}

size_t msg_blob_size(const struct msg *m)
{
    return MSG_BLOB_HEADER + (size_t)m->topic_len + m->props_len + m->payload_len;
}

void msg_blob_write(const struct msg *m, uint8_t *out, uint64_t now_ms, uint64_t wall_ms)
{
    uint64_t exp = m->expiry_ms ? wall_ms + (m->expiry_ms > now_ms ? m->expiry_ms - now_ms : 0) : 0;
    out[0] = 1;
    out[1] = m->qos;
    out[2] = m->retain ? 1 : 0;
    out[3] = 0;
    be_put(out + 4, exp, 8);
    be_put(out + 12, m->topic_len, 2);
    be_put(out + 14, m->props_len, 4);
    be_put(out + 18, m->payload_len, 4);
    be_put(out + 22, 0, 2);
    uint8_t *w = out + MSG_BLOB_HEADER;
    memcpy(w, m->topic, m->topic_len);
    w += m->topic_len;
    if (m->props_len)
        memcpy(w, m->props, m->props_len);
    w += m->props_len;
    if (m->payload_len)
        memcpy(w, m->payload, m->payload_len);
}

struct msg *msg_blob_read(const uint8_t *p, size_t len, uint64_t now_ms, uint64_t wall_ms)
{
    if (len < MSG_BLOB_HEADER || p[0] != 1 || p[1] > 2)
        return NULL;
    uint64_t exp = be_get(p + 4, 8);
    size_t tl = (size_t)be_get(p + 12, 2);
    size_t pl = (size_t)be_get(p + 14, 4);
    size_t yl = (size_t)be_get(p + 18, 4);
    if (tl == 0 || len != MSG_BLOB_HEADER + tl + pl + yl)
        return NULL;
    const uint8_t *t = p + MSG_BLOB_HEADER;
    struct msg *m = msg_create(t, tl, t + tl, pl, t + tl + pl, yl);
    m->qos = p[1];
    m->retain = p[2] & 1;
    if (exp)
        m->expiry_ms = exp > wall_ms ? now_ms + (exp - wall_ms) : now_ms;
    return m;
}
