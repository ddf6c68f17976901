/*
 * The memory backend: the single-node store, all in this process. Every request is computed
 * at call time and handed to store__complete(); store.c delivers it on a later loop pass.
 *
 * Two hash maps: client id → client record (owner registry entry, session state, expiry,
 * offline queue) and topic → retained message. Keys are peer-chosen, so the maps use open
 * addressing with linear probing, backward-shift deletion (no tombstones) and a SipHash-2-4
 * keyed with a per-map random key, so that nobody can aim keys at one probe chain.
 *
 * A client record outlives its session and its claim: it keeps the last epoch so a stale
 * owner stays fenced after a delete or release. Expiry is lazy: an expired session is dropped
 * when it is next touched, and reads as not found. Members (node id → info) and parked
 * messages (node id → list) live in two more maps; member deadlines run on the loop's clock.
 * A memory store serves one node, so every claim is this node's and it alone can win an
 * adoption election.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "node/buf.h"
#include "node/clock.h"
#include "node/err.h"
#include "store/store_int.h"

#define MEM_MAP_MIN_CAP 16

/* ---- hash map: string key → record --------------------------------------------------------- */

struct mem_slot {
    uint64_t hash;
    const char *key; /* owned by the record in val */
    void *val;       /* NULL = empty slot */
};

struct mem_map {
    struct mem_slot *slots;
    size_t cap; /* power of two, or 0 before the first insert */
    size_t len;
    uint64_t k0, k1;
};

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static inline void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl64(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl64(v[0], 32);
    v[2] += v[3];
    v[3] = rotl64(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl64(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl64(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl64(v[2], 32);
}

static uint64_t load_le64(const uint8_t *p, size_t n)
{
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

static uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t *p, size_t len)
{
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull,
                     k0 ^ 0x6c7967656e657261ull, k1 ^ 0x7465646279746573ull};
    size_t full = len & ~(size_t)7;
    uint64_t m;

    for (size_t i = 0; i < full; i += 8) {
        m = load_le64(p + i, 8);
        v[3] ^= m;
        sip_round(v);
        sip_round(v);
        v[0] ^= m;
    }
    m = load_le64(p + full, len - full) | ((uint64_t)len << 56);
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static void map_init(struct mem_map *m)
{
    uint64_t key[2];

    memset(m, 0, sizeof(*m));
    /* Synchronous uv_random (no loop, no callback). Falling back to the clock still keys each
     * map differently; it only weakens the flooding defence. */
    if (uv_random(NULL, NULL, key, sizeof(key), 0, NULL) != 0) {
        key[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)m;
        key[1] = rotl64(key[0], 29) ^ 0x9e3779b97f4a7c15ull;
    }
    m->k0 = key[0];
    m->k1 = key[1];
}

static uint64_t map_hash(const struct mem_map *m, const char *key)
{
    return siphash24(m->k0, m->k1, (const uint8_t *)key, strlen(key));
}

/* Index of key's slot, or of the empty slot where it would go. Needs cap > len. */
static size_t map_find(const struct mem_map *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;

    while (m->slots[i].val) {
        if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static void *map_get(const struct mem_map *m, const char *key)
{
    if (m->len == 0)
        return NULL;
    return m->slots[map_find(m, key, map_hash(m, key))].val;
}

static void map_grow(struct mem_map *m)
{
    struct mem_slot *old = m->slots;
    size_t old_cap = m->cap;

    m->cap = old_cap ? old_cap * 2 : MEM_MAP_MIN_CAP;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < old_cap; i++) {
        size_t j;
        if (!old[i].val)
            continue;
        j = (size_t)old[i].hash & (m->cap - 1);
        while (m->slots[j].val)
            j = (j + 1) & (m->cap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

/* Inserts a key that is not present. key must live as long as the entry. */
static void map_put(struct mem_map *m, const char *key, void *val)
{
    uint64_t h = map_hash(m, key);
    size_t i;

    /* Keep the load factor at or below 3/4 so probe chains stay short. */
    if ((m->len + 1) * 4 > m->cap * 3)
        map_grow(m);
    i = map_find(m, key, h);
    m->slots[i].hash = h;
    m->slots[i].key = key;
    m->slots[i].val = val;
    m->len++;
}

/* Removes key and returns its value, or NULL. */
static void *map_del(struct mem_map *m, const char *key)
{
    size_t mask, i, j;
    void *val;

    if (m->len == 0)
        return NULL;
    mask = m->cap - 1;
    i = map_find(m, key, map_hash(m, key));
    val = m->slots[i].val;
    if (!val)
        return NULL;
    /* Backward shift: pull later entries of the chain into the hole when the hole lies between
     * their home slot and where they are now, so lookups never need tombstones. */
    for (j = (i + 1) & mask; m->slots[j].val; j = (j + 1) & mask) {
        size_t home = (size_t)m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    memset(&m->slots[i], 0, sizeof(m->slots[i]));
    m->len--;
    return val;
}

/* ---- records ----------------------------------------------------------------------------- */

struct mem_qmsg {
    struct mem_qmsg *next;
    size_t len;
    uint8_t data[];
};

struct mem_client {
    uint64_t epoch; /* last epoch claimed for this id; 0 = never claimed */
    bool is_owned;  /* a claim is held (the owner is this node: the memory store is per node) */
    bool has_state;
    uint8_t *state;
    size_t state_len;
    uint64_t expiry_s; /* wall-clock second at which the session expires; 0 = never */
    struct mem_qmsg *q_head;
    struct mem_qmsg **q_tail;
    size_t q_count;
    uint64_t q_bytes;
    char id[];
};

struct mem_retained {
    size_t len;
    uint8_t *data; /* points into this allocation, after topic */
    char topic[];
};

/* A member registered by a heartbeat. */
struct mem_member {
    uint64_t expires_ms; /* uv_now() of the store's loop past which it is gone */
    uint8_t *info;
    size_t info_len;
    char id[];
};

/* The messages parked for one node, oldest first; never empty while in the map. */
struct mem_parked {
    struct mem_qmsg *head;
    struct mem_qmsg **tail;
    char node[];
};

struct mem_store {
    uv_loop_t *loop;
    char *node_id;
    uint64_t last_epoch; /* global and monotonic: every claim takes the next one */
    struct mem_map clients;
    struct mem_map retained;
    struct mem_map members;
    struct mem_map parked;
    char **nodes; /* every node id that heartbeated, until forgotten */
    size_t n_nodes;
};

static struct mem_client *client_get(struct mem_store *ms, const char *id)
{
    return map_get(&ms->clients, id);
}

static struct mem_client *client_get_or_add(struct mem_store *ms, const char *id)
{
    struct mem_client *c = map_get(&ms->clients, id);
    size_t n;

    if (c)
        return c;
    n = strlen(id);
    c = xcalloc(1, sizeof(*c) + n + 1);
    memcpy(c->id, id, n + 1);
    c->q_tail = &c->q_head;
    map_put(&ms->clients, c->id, c);
    return c;
}

static void client_queue_clear(struct mem_client *c)
{
    struct mem_qmsg *q;

    while ((q = c->q_head) != NULL) {
        c->q_head = q->next;
        free(q);
    }
    c->q_tail = &c->q_head;
    c->q_count = 0;
    c->q_bytes = 0;
}

static void client_session_clear(struct mem_client *c)
{
    free(c->state);
    c->state = NULL;
    c->state_len = 0;
    c->has_state = false;
    c->expiry_s = 0;
    client_queue_clear(c);
}

/* Lazy expiry: drops the session and its queue once its expiry time has passed. */
static void client_expire(struct mem_client *c)
{
    if (c && c->has_state && c->expiry_s != 0 && c->expiry_s <= clock_wall_s())
        client_session_clear(c);
}

/* Fencing: a writer whose epoch is older than the latest claim has been superseded. */
static bool client_is_stale(const struct mem_client *c, uint64_t epoch)
{
    return c && epoch < c->epoch;
}

static void member_free(struct mem_member *m)
{
    if (!m)
        return;
    free(m->info);
    m->info = NULL;
    free(m);
}

static void parked_free(struct mem_parked *p)
{
    struct mem_qmsg *q;

    if (!p)
        return;
    while ((q = p->head) != NULL) {
        p->head = q->next;
        free(q);
    }
    free(p);
}

static struct mem_qmsg *qmsg_new(struct store_blob msg)
{
    struct mem_qmsg *q = xmalloc(sizeof(*q) + msg.len);

    q->next = NULL;
    q->len = msg.len;
    if (msg.len)
        memcpy(q->data, msg.p, msg.len);
    return q;
}

/* ---- backend ops ------------------------------------------------------------------------- */

static int mem_open(struct store *s, const char *url, const char *node_id, void **impl, char *err,
                    size_t errlen)
{
    struct mem_store *ms = xcalloc(1, sizeof(*ms));

    (void)url;
    (void)err;
    (void)errlen;
    ms->loop = store__loop(s);
    ms->node_id = xstrdup(node_id);
    map_init(&ms->clients);
    map_init(&ms->retained);
    map_init(&ms->members);
    map_init(&ms->parked);
    *impl = ms;
    return 0;
}

static void mem_close(void *impl)
{
    struct mem_store *ms = impl;

    for (size_t i = 0; i < ms->clients.cap; i++) {
        struct mem_client *c = ms->clients.slots[i].val;
        if (!c)
            continue;
        client_session_clear(c);
        free(c);
    }
    for (size_t i = 0; i < ms->retained.cap; i++)
        free(ms->retained.slots[i].val);
    for (size_t i = 0; i < ms->members.cap; i++)
        member_free(ms->members.slots[i].val);
    for (size_t i = 0; i < ms->n_nodes; i++)
        free(ms->nodes[i]);
    free(ms->nodes);
    for (size_t i = 0; i < ms->parked.cap; i++)
        parked_free(ms->parked.slots[i].val);
    free(ms->clients.slots);
    ms->clients.slots = NULL;
    free(ms->retained.slots);
    ms->retained.slots = NULL;
    free(ms->members.slots);
    ms->members.slots = NULL;
    free(ms->parked.slots);
    ms->parked.slots = NULL;
    free(ms->node_id);
    ms->node_id = NULL;
    free(ms);
}

static int mem_owner_claim(void *impl, struct store__req *r, const char *client_id)
{
    struct mem_store *ms = impl;
    struct mem_client *c = client_get_or_add(ms, client_id);

    if (c->is_owned)
        store__req_set_claim(r, ms->last_epoch + 1, ms->node_id, c->epoch);
    else
        store__req_set_claim(r, ms->last_epoch + 1, NULL, 0);
    c->epoch = ++ms->last_epoch;
    c->is_owned = true;
    store__complete(r, 0);
    return 0;
}

static int mem_owner_release(void *impl, struct store__req *r, const char *client_id,
                             uint64_t epoch)
{
    struct mem_client *c = client_get(impl, client_id);
    int rc = 0;

    if (client_is_stale(c, epoch))
        rc = ERR_EXISTS;
    else if (c && epoch == c->epoch)
        c->is_owned = false;
    store__complete(r, rc);
    return 0;
}

static int mem_session_save(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                            struct store_blob state, uint64_t expiry_s)
{
    struct mem_store *ms = impl;
    struct mem_client *c = client_get(ms, client_id);

    client_expire(c);
    if (client_is_stale(c, epoch)) {
        store__complete(r, ERR_EXISTS);
        return 0;
    }
    if (!c)
        c = client_get_or_add(ms, client_id);
    free(c->state);
    c->state = xmalloc(state.len);
    if (state.len)
        memcpy(c->state, state.p, state.len);
    c->state_len = state.len;
    c->has_state = true;
    c->expiry_s = expiry_s;
    store__complete(r, 0);
    return 0;
}

static int mem_session_load(void *impl, struct store__req *r, const char *client_id)
{
    struct mem_client *c = client_get(impl, client_id);
    size_t total = 0;

    client_expire(c);
    if (!c || !c->has_state) {
        store__complete(r, ERR_NOT_FOUND);
        return 0;
    }
    store__req_set_state(r, c->state, c->state_len);
    for (const struct mem_qmsg *q = c->q_head; q; q = q->next)
        total += q->len;
    store__req_blobs_begin(r, c->q_count, total);
    for (const struct mem_qmsg *q = c->q_head; q; q = q->next)
        store__req_add_blob(r, q->data, q->len);
    store__complete(r, 0);
    return 0;
}

static int mem_session_delete(void *impl, struct store__req *r, const char *client_id,
                              uint64_t epoch)
{
    struct mem_client *c = client_get(impl, client_id);

    if (client_is_stale(c, epoch)) {
        store__complete(r, ERR_EXISTS);
        return 0;
    }
    if (c)
        client_session_clear(c);
    store__complete(r, 0);
    return 0;
}

static int mem_queue_push(void *impl, struct store__req *r, const char *client_id,
                          struct store_blob msg, uint32_t max_count, uint64_t max_bytes)
{
    struct mem_client *c = client_get(impl, client_id);
    struct mem_qmsg *q;
    size_t count;
    uint64_t bytes;

    client_expire(c);
    /* A queue belongs to a session: without one, a message would wait for whoever next
     * creates a session under this id, which in MQTT must start empty. */
    if (!c || !c->has_state) {
        store__complete(r, ERR_NOT_FOUND);
        return 0;
    }
    count = c->q_count;
    bytes = c->q_bytes;
    if ((max_count && count >= max_count) ||
        (max_bytes && (msg.len > max_bytes || bytes > max_bytes - msg.len))) {
        store__complete(r, ERR_QUOTA);
        return 0;
    }
    q = qmsg_new(msg);
    *c->q_tail = q;
    c->q_tail = &q->next;
    c->q_count++;
    c->q_bytes += msg.len;
    store__complete(r, 0);
    return 0;
}

static bool is_named(struct store_blob id, const struct store_blob *ids, bool *found, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!found[i] && ids[i].len == id.len && memcmp(ids[i].p, id.p, id.len) == 0)
            return found[i] = true;
    return false;
}

static int mem_queue_trim(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                          const struct store_blob *ids, size_t n)
{
    struct mem_client *c = client_get(impl, client_id);

    client_expire(c);
    if (client_is_stale(c, epoch)) {
        store__complete(r, ERR_EXISTS);
        return 0;
    }
    bool *found = xcalloc(n, sizeof(*found));
    size_t left = n, seen = 0;
    struct mem_qmsg **at = c ? &c->q_head : NULL;
    while (at && *at && left > 0 && seen++ < n + STORE_TRIM_SLACK) {
        struct mem_qmsg *q = *at;
        if (!is_named(store_entry_id((struct store_blob){q->data, q->len}), ids, found, n)) {
            at = &q->next;
            continue;
        }
        left--;
        *at = q->next;
        if (c->q_tail == &q->next)
            c->q_tail = at;
        c->q_count--;
        c->q_bytes -= q->len;
        free(q);
    }
    free(found);
    store__complete(r, 0);
    return 0;
}

static int mem_retain_set(void *impl, struct store__req *r, const char *topic,
                          struct store_blob msg)
{
    struct mem_store *ms = impl;
    struct mem_retained *old = map_del(&ms->retained, topic);
    struct mem_retained *e;
    size_t tlen;

    free(old);
    if (msg.len > 0) {
        tlen = strlen(topic);
        e = xmalloc(sizeof(*e) + tlen + 1 + msg.len);
        memcpy(e->topic, topic, tlen + 1);
        e->data = (uint8_t *)e->topic + tlen + 1;
        memcpy(e->data, msg.p, msg.len);
        e->len = msg.len;
        map_put(&ms->retained, e->topic, e);
    }
    store__complete(r, 0);
    return 0;
}

static int mem_retain_load(void *impl, struct store__req *r)
{
    struct mem_store *ms = impl;
    const struct mem_map *m = &ms->retained;
    size_t total = 0;

    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_retained *e = m->slots[i].val;
        if (e)
            total += e->len;
    }
    store__req_blobs_begin(r, m->len, total);
    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_retained *e = m->slots[i].val;
        if (e)
            store__req_add_blob(r, e->data, e->len);
    }
    store__complete(r, 0);
    return 0;
}

static int mem_session_scan(void *impl, struct store__req *r)
{
    struct mem_store *ms = impl;
    const struct mem_map *m = &ms->clients;
    size_t n = 0, total = 0;

    for (size_t i = 0; i < m->cap; i++) {
        struct mem_client *c = m->slots[i].val;
        client_expire(c);
        if (c && c->has_state) {
            n++;
            total += strlen(m->slots[i].key) + c->state_len;
        }
    }
    store__req_blobs_begin(r, 2 * n, total);
    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_client *c = m->slots[i].val;
        if (c && c->has_state) {
            store__req_add_blob(r, (const uint8_t *)m->slots[i].key, strlen(m->slots[i].key));
            store__req_add_blob(r, c->state, c->state_len);
        }
    }
    store__complete(r, 0);
    return 0;
}

/* ---- members, adoption and parked messages ----------------------------------------------- */

static size_t node_find(const struct mem_store *ms, const char *node_id)
{
    for (size_t i = 0; i < ms->n_nodes; i++)
        if (strcmp(ms->nodes[i], node_id) == 0)
            return i;
    return SIZE_MAX;
}

static int mem_member_heartbeat(void *impl, struct store__req *r, const char *node_id,
                                struct store_blob info, uint32_t ttl_ms)
{
    struct mem_store *ms = impl;
    struct mem_member *m = map_get(&ms->members, node_id);
    size_t n;

    if (node_find(ms, node_id) == SIZE_MAX) {
        ms->nodes = xrealloc(ms->nodes, (ms->n_nodes + 1) * sizeof(*ms->nodes));
        ms->nodes[ms->n_nodes++] = xstrdup(node_id);
    }
    if (!m) {
        n = strlen(node_id);
        m = xcalloc(1, sizeof(*m) + n + 1);
        memcpy(m->id, node_id, n + 1);
        map_put(&ms->members, m->id, m);
    }
    free(m->info);
    m->info = xmalloc(info.len);
    if (info.len)
        memcpy(m->info, info.p, info.len);
    m->info_len = info.len;
    m->expires_ms = uv_now(ms->loop) + ttl_ms;
    store__complete(r, 0);
    return 0;
}

static int mem_member_leave(void *impl, struct store__req *r, const char *node_id)
{
    struct mem_store *ms = impl;

    member_free(map_del(&ms->members, node_id));
    store__complete(r, 0);
    return 0;
}

static bool member_is_expired(const struct mem_store *ms, const struct mem_member *m)
{
    return m->expires_ms <= uv_now(ms->loop);
}

/* Drops expired members. They are collected first: deleting while walking the slots would let
 * the backward shift move an entry past the walk. */
static void members_expire(struct mem_store *ms)
{
    struct mem_map *m = &ms->members;
    const char **gone; /* ids, owned by their members until these are freed */
    size_t n = 0;

    if (m->len == 0)
        return;
    gone = xmalloc(m->len * sizeof(*gone));
    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_member *e = m->slots[i].val;
        if (e && member_is_expired(ms, e))
            gone[n++] = e->id;
    }
    for (size_t i = 0; i < n; i++)
        member_free(map_del(m, gone[i]));
    free(gone);
}

static int mem_member_list(void *impl, struct store__req *r)
{
    struct mem_store *ms = impl;
    const struct mem_map *m = &ms->members;
    size_t total = 0;

    members_expire(ms);
    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_member *e = m->slots[i].val;
        if (e)
            total += strlen(e->id) + e->info_len;
    }
    store__req_blobs_begin(r, 2 * m->len, total);
    for (size_t i = 0; i < m->cap; i++) {
        const struct mem_member *e = m->slots[i].val;
        if (!e)
            continue;
        store__req_add_blob(r, (const uint8_t *)e->id, strlen(e->id));
        store__req_add_blob(r, e->info, e->info_len);
    }
    store__complete(r, 0);
    return 0;
}

static int mem_member_gone(void *impl, struct store__req *r)
{
    struct mem_store *ms = impl;
    size_t n = 0, total = 0;

    members_expire(ms);
    for (size_t i = 0; i < ms->n_nodes; i++) {
        if (!map_get(&ms->members, ms->nodes[i])) {
            n++;
            total += strlen(ms->nodes[i]);
        }
    }
    store__req_blobs_begin(r, n, total);
    for (size_t i = 0; i < ms->n_nodes; i++)
        if (!map_get(&ms->members, ms->nodes[i]))
            store__req_add_blob(r, (const uint8_t *)ms->nodes[i], strlen(ms->nodes[i]));
    store__complete(r, 0);
    return 0;
}

static int mem_member_forget(void *impl, struct store__req *r, const char *node_id)
{
    struct mem_store *ms = impl;
    size_t i = node_find(ms, node_id);

    if (i != SIZE_MAX) {
        free(ms->nodes[i]);
        ms->nodes[i] = ms->nodes[--ms->n_nodes];
    }
    store__complete(r, 0);
    return 0;
}

static int mem_session_scan_owned(void *impl, struct store__req *r, const char *owner)
{
    struct mem_store *ms = impl;
    const struct mem_map *m = &ms->clients;
    bool is_mine = strcmp(owner, ms->node_id) == 0;
    size_t n = 0, total = 0;

    for (size_t i = 0; is_mine && i < m->cap; i++) {
        struct mem_client *c = m->slots[i].val;
        client_expire(c);
        if (c && c->has_state && c->is_owned) {
            n++;
            total += strlen(c->id) + c->state_len;
        }
    }
    store__req_blobs_begin(r, 2 * n, total);
    for (size_t i = 0; is_mine && i < m->cap; i++) {
        const struct mem_client *c = m->slots[i].val;
        if (c && c->has_state && c->is_owned) {
            store__req_add_blob(r, (const uint8_t *)c->id, strlen(c->id));
            store__req_add_blob(r, c->state, c->state_len);
        }
    }
    store__complete(r, 0);
    return 0;
}

static int mem_owner_adopt(void *impl, struct store__req *r, const char *client_id,
                           const char *dead_owner)
{
    struct mem_store *ms = impl;
    struct mem_client *c = client_get(ms, client_id);

    if (!c || !c->is_owned) {
        store__req_set_claim(r, 0, NULL, 0);
        store__complete(r, ERR_EXISTS);
        return 0;
    }
    /* An owned id is this node's: only "adopting" from this node itself can succeed. */
    if (strcmp(dead_owner, ms->node_id) != 0) {
        store__req_set_claim(r, 0, ms->node_id, c->epoch);
        store__complete(r, ERR_EXISTS);
        return 0;
    }
    return mem_owner_claim(impl, r, client_id);
}

static int mem_node_adopt_lock(void *impl, struct store__req *r, const char *dead_node,
                               uint32_t ttl_ms)
{
    (void)impl;
    (void)dead_node;
    (void)ttl_ms;
    /* No other node shares this store, so none can hold the election: this one wins it. */
    store__complete(r, 0);
    return 0;
}

static int mem_park_push(void *impl, struct store__req *r, const char *dead_node,
                         struct store_blob msg)
{
    struct mem_store *ms = impl;
    struct mem_parked *p = map_get(&ms->parked, dead_node);
    struct mem_qmsg *q = qmsg_new(msg);
    size_t n;

    if (!p) {
        n = strlen(dead_node);
        p = xcalloc(1, sizeof(*p) + n + 1);
        memcpy(p->node, dead_node, n + 1);
        p->tail = &p->head;
        map_put(&ms->parked, p->node, p);
    }
    *p->tail = q;
    p->tail = &q->next;
    store__complete(r, 0);
    return 0;
}

static int mem_park_take(void *impl, struct store__req *r, const char *dead_node, size_t max)
{
    struct mem_store *ms = impl;
    struct mem_parked *p = map_get(&ms->parked, dead_node);
    const struct mem_qmsg *q;
    size_t n = 0, total = 0;

    for (q = p ? p->head : NULL; q && n < max; q = q->next) {
        n++;
        total += q->len;
    }
    store__req_blobs_begin(r, n, total);
    for (size_t i = 0; i < n; i++) {
        struct mem_qmsg *first = p->head;
        store__req_add_blob(r, first->data, first->len);
        p->head = first->next;
        free(first);
    }
    if (p && !p->head) {
        (void)map_del(&ms->parked, dead_node);
        parked_free(p);
    }
    store__complete(r, 0);
    return 0;
}

const struct store__backend_ops store__memory_ops = {
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .owner_claim = mem_owner_claim,
    .owner_release = mem_owner_release,
    .session_save = mem_session_save,
    .session_load = mem_session_load,
    .session_delete = mem_session_delete,
    .queue_push = mem_queue_push,
    .queue_trim = mem_queue_trim,
    .retain_set = mem_retain_set,
    .retain_load = mem_retain_load,
    .session_scan = mem_session_scan,
    .member_heartbeat = mem_member_heartbeat,
    .member_leave = mem_member_leave,
    .member_list = mem_member_list,
    .member_gone = mem_member_gone,
    .member_forget = mem_member_forget,
    .session_scan_owned = mem_session_scan_owned,
    .owner_adopt = mem_owner_adopt,
    .node_adopt_lock = mem_node_adopt_lock,
    .park_push = mem_park_push,
    .park_take = mem_park_take,
};
