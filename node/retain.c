/*
 * Retained messages: a trie with one node per topic level, holding at most one message
 * reference per node. Children sit in an open-addressing hash table per node, so a subscribe
 * with a literal filter costs O(depth) whatever the number of retained topics, while '+' and
 * '#' iterate the tables they cover.
 *
 * The walk uses an explicit stack kept in the struct (it only grows). Every non-root node holds
 * a message or a child; clearing or expiring a message prunes the nodes that become empty.
 * Expired messages are dropped during a walk: a node is only ever pushed after its parent was
 * popped, so the nodes that such a prune frees are never still on the stack.
 */
#include "node/retain.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "node/buf.h"

#define RT_ALL SIZE_MAX /* frame position: the filter ended in '#', take the whole subtree */

struct rt_node {
    struct rt_node *parent;
    struct rt_node **kids; /* open addressing */
    struct msg *m;
    uint32_t kids_cap; /* power of two, or 0 */
    uint32_t kids_n;
    uint32_t hash;
    uint16_t len;
    char level[];
};

struct rt_frame {
    struct rt_node *n;
    size_t pos; /* start of the next filter level; flen + 1 when consumed; or RT_ALL */
};

struct retain {
    struct rt_node *root;
    size_t count;
    uint64_t bytes;
    size_t nodes;
    uint32_t seed;
    struct rt_frame *stack;
    size_t sp, stack_cap;
    uint32_t busy;
};

/* FNV-1a seeded per trie, so that colliding level names cannot be precomputed offline. */
static inline uint32_t level_hash(uint32_t seed, const char *s, size_t len)
{
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static struct rt_node *node_new(struct rt_node *parent, const char *lv, size_t len, uint32_t h)
{
    struct rt_node *n = xcalloc(1, sizeof(*n) + len + 1);
    n->parent = parent;
    n->hash = h;
    n->len = (uint16_t)len;
    memcpy(n->level, lv, len);
    return n;
}

static struct rt_node *kids_find(const struct rt_node *n, const char *lv, size_t len, uint32_t h)
{
    if (!n->kids_cap)
        return NULL;
    uint32_t mask = n->kids_cap - 1;
    for (uint32_t i = h & mask; n->kids[i]; i = (i + 1) & mask) {
        struct rt_node *c = n->kids[i];
        if (c->hash == h && c->len == len && memcmp(c->level, lv, len) == 0)
            return c;
    }
    return NULL;
}

static void kids_place(struct rt_node **kids, uint32_t cap, struct rt_node *c)
{
    uint32_t mask = cap - 1;
    uint32_t i = c->hash & mask;
    while (kids[i])
        i = (i + 1) & mask;
    kids[i] = c;
}

static void kids_resize(struct rt_node *n, uint32_t cap)
{
    struct rt_node **kids = xcalloc(cap, sizeof(struct rt_node *));
    for (uint32_t i = 0; i < n->kids_cap; i++) {
        if (n->kids[i])
            kids_place(kids, cap, n->kids[i]);
    }
    free(n->kids);
    n->kids = kids;
    n->kids_cap = cap;
}

/* Empties the slot of c with backward-shift deletion (no tombstones), shrinking when sparse. */
static void kids_delete(struct rt_node *n, struct rt_node *c)
{
    uint32_t mask = n->kids_cap - 1;
    uint32_t i = c->hash & mask;
    while (n->kids[i] != c)
        i = (i + 1) & mask;
    for (uint32_t j = i;;) {
        n->kids[i] = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!n->kids[j])
                goto out_deleted;
            uint32_t home = n->kids[j]->hash & mask;
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        n->kids[i] = n->kids[j];
        i = j;
    }
out_deleted:
    n->kids_n--;
    if (n->kids_n == 0) {
        free(n->kids);
        n->kids = NULL;
        n->kids_cap = 0;
    } else if (n->kids_cap > 16 && (uint64_t)n->kids_n * 8 < n->kids_cap) {
        kids_resize(n, n->kids_cap / 2);
    }
}

/* Node of a topic name; created level by level when create is set, else NULL if absent. */
static struct rt_node *node_path(struct retain *r, const char *topic, size_t len, bool create)
{
    struct rt_node *n = r->root;
    size_t pos = 0;
    for (;;) {
        const char *lv = topic + pos;
        const char *slash = memchr(lv, '/', len - pos);
        size_t ll = slash ? (size_t)(slash - lv) : len - pos;
        uint32_t h = level_hash(r->seed, lv, ll);
        struct rt_node *c = kids_find(n, lv, ll, h);
        if (!c) {
            if (!create)
                return NULL;
            c = node_new(n, lv, ll, h);
            r->nodes++;
            if ((uint64_t)(n->kids_n + 1) * 4 > (uint64_t)n->kids_cap * 3)
                kids_resize(n, n->kids_cap ? n->kids_cap * 2 : 4);
            kids_place(n->kids, n->kids_cap, c);
            n->kids_n++;
        }
        n = c;
        if (!slash)
            return n;
        pos += ll + 1;
    }
}

/* Frees n and its ancestors while they hold neither a message nor children. */
static void node_prune(struct retain *r, struct rt_node *n)
{
    while (n != r->root && !n->m && n->kids_n == 0) {
        struct rt_node *p = n->parent;
        kids_delete(p, n);
        free(n);
        r->nodes--;
        n = p;
    }
}

static void node_drop_msg(struct retain *r, struct rt_node *n)
{
    assert(r->count > 0 && r->bytes >= n->m->payload_len);
    r->count--;
    r->bytes -= n->m->payload_len;
    msg_unref(&n->m);
}

static void stack_push(struct retain *r, struct rt_node *n, size_t pos)
{
    if (r->sp == r->stack_cap) {
        r->stack_cap *= 2;
        r->stack = xrealloc(r->stack, r->stack_cap * sizeof(*r->stack));
    }
    r->stack[r->sp].n = n;
    r->stack[r->sp].pos = pos;
    r->sp++;
}

/* Pushes every child of n; below the root, '$' topics are left out for wildcards. */
static void push_kids(struct retain *r, struct rt_node *n, size_t pos)
{
    bool skip_dollar = n == r->root;
    for (uint32_t i = 0; i < n->kids_cap; i++) {
        struct rt_node *c = n->kids[i];
        if (c && !(skip_dollar && c->len > 0 && c->level[0] == '$'))
            stack_push(r, c, pos);
    }
}

struct retain *retain_create(void)
{
    struct retain *r = xcalloc(1, sizeof(*r));
    r->root = node_new(NULL, "", 0, 0);
    r->nodes = 1;
    r->seed = (uint32_t)(((uintptr_t)r >> 4) * 2654435761u);
    r->stack_cap = 16;
    r->stack = xmalloc(r->stack_cap * sizeof(*r->stack));
    return r;
}

void retain_destroy(struct retain **rp)
{
    struct retain *r = *rp;
    *rp = NULL;
    if (!r)
        return;
    assert(r->busy == 0);
    r->sp = 0;
    stack_push(r, r->root, 0);
    while (r->sp > 0) {
        struct rt_node *n = r->stack[--r->sp].n;
        for (uint32_t i = 0; i < n->kids_cap; i++) {
            if (n->kids[i])
                stack_push(r, n->kids[i], 0);
        }
        msg_unref(&n->m);
        free(n->kids);
        n->kids = NULL;
        free(n);
    }
    r->root = NULL;
    free(r->stack);
    r->stack = NULL;
    free(r);
}

void retain_set(struct retain *r, struct msg *m)
{
    assert(r->busy == 0);
    if (m->payload_len == 0) {
        struct rt_node *n = node_path(r, m->topic, m->topic_len, false);
        if (!n || !n->m)
            return;
        node_drop_msg(r, n);
        node_prune(r, n);
        return;
    }
    struct rt_node *n = node_path(r, m->topic, m->topic_len, true);
    struct msg *ref = msg_ref(m); /* before the drop: m may be the message being replaced */
    if (n->m)
        node_drop_msg(r, n);
    n->m = ref;
    r->count++;
    r->bytes += m->payload_len;
}

/* Hands n's message to cb, or drops it (and prunes) when it has expired. */
static void emit(struct retain *r, struct rt_node *n, uint64_t now_ms, retain_match_cb cb,
                 void *ctx)
{
    if (!n->m)
        return;
    if (msg_is_expired(n->m, now_ms)) {
        node_drop_msg(r, n);
        node_prune(r, n);
        return;
    }
    cb(ctx, n->m);
}

void retain_match(struct retain *r, const char *filter, size_t len, uint64_t now_ms,
                  retain_match_cb cb, void *ctx)
{
    size_t base = r->sp;
    r->busy++;
    stack_push(r, r->root, 0);
    while (r->sp > base) {
        struct rt_frame f = r->stack[--r->sp];
        struct rt_node *n = f.n;
        if (f.pos == RT_ALL) {
            push_kids(r, n, RT_ALL); /* before emit: emit may free a childless n */
            emit(r, n, now_ms, cb, ctx);
            continue;
        }
        if (f.pos > len) {
            emit(r, n, now_ms, cb, ctx);
            continue;
        }
        const char *lv = filter + f.pos;
        const char *slash = memchr(lv, '/', len - f.pos);
        size_t ll = slash ? (size_t)(slash - lv) : len - f.pos;
        if (ll == 1 && lv[0] == '#') {
            /* "a/#" matches "a" itself and everything below it. */
            push_kids(r, n, RT_ALL);
            emit(r, n, now_ms, cb, ctx);
        } else if (ll == 1 && lv[0] == '+') {
            push_kids(r, n, f.pos + ll + 1);
        } else {
            struct rt_node *c = kids_find(n, lv, ll, level_hash(r->seed, lv, ll));
            if (c)
                stack_push(r, c, f.pos + ll + 1);
        }
    }
    r->busy--;
}

size_t retain_count(const struct retain *r)
{
    return r->count;
}

uint64_t retain_bytes(const struct retain *r)
{
    return r->bytes;
}

size_t retain_nodes(const struct retain *r)
{
    return r->nodes;
}
