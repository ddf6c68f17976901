/*
 * Retained messages in a trie of topic levels. A wildcard lookup walks only the branches the
 * filter allows, with an explicit stack; '#' enumerates a subtree the same way. Expired
 * messages are skipped during a lookup and removed right after it, so the walk never mutates
 * the trie under its own feet.
 */
#include "node/retain.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "node/buf.h"
#include "node/topic_map.h"

struct rt_node {
    struct rt_node *parent;
    char *level;
    uint32_t level_len;
    struct topic_map kids;
    struct msg *m;
};

struct rt_frame {
    struct rt_node *n;
    uint32_t level; /* filter level to match next; UINT32_MAX = emit the whole subtree */
};

struct retain {
    struct rt_node root;
    size_t count;
    uint64_t bytes;
    struct rt_frame *stack;
    uint32_t cap_stack;
    struct rt_node **expired;
    uint32_t n_expired;
    uint32_t cap_expired;
};

struct retain *retain_create(void)
{
    return xcalloc(1, sizeof(struct retain));
}

static void push(struct retain *r, uint32_t *sp, struct rt_node *n, uint32_t level)
{
    if (*sp == r->cap_stack) {
        r->cap_stack = r->cap_stack ? r->cap_stack * 2 : 32;
        r->stack = xrealloc(r->stack, r->cap_stack * sizeof(*r->stack));
    }
    r->stack[*sp].n = n;
    r->stack[*sp].level = level;
    (*sp)++;
}

static void node_drop_msg(struct retain *r, struct rt_node *n)
{
    if (!n->m)
        return;
    r->count--;
    r->bytes -= n->m->payload_len;
    msg_unref(&n->m);
}

static void prune(struct rt_node *n)
{
    while (n->parent && !n->m && n->kids.n == 0) {
        struct rt_node *p = n->parent;
        topic_map_del(&p->kids, n->level, n->level_len);
        topic_map_free(&n->kids);
        free(n->level);
        free(n);
        n = p;
    }
}

void retain_destroy(struct retain **rp)
{
    struct retain *r = *rp;
    *rp = NULL;
    if (!r)
        return;
    struct rt_node *n = &r->root;
    while (n) {
        struct rt_node *child = NULL;
        for (uint32_t i = 0; i < n->kids.cap && !child; i++)
            child = n->kids.slots[i].val;
        if (child) {
            n = child;
            continue;
        }
        struct rt_node *parent = n->parent;
        node_drop_msg(r, n);
        topic_map_free(&n->kids);
        if (parent) {
            topic_map_del(&parent->kids, n->level, n->level_len);
            free(n->level);
            free(n);
        }
        n = parent;
    }
    free(r->stack);
    free(r->expired);
    free(r);
}

void retain_set(struct retain *r, struct msg *m)
{
    struct rt_node *n = &r->root;
    const char *t = m->topic;
    size_t len = m->topic_len, i = 0;
    bool clear = m->payload_len == 0;

    for (;;) {
        size_t e = i;
        while (e < len && t[e] != '/')
            e++;
        struct rt_node *c = topic_map_get(&n->kids, t + i, e - i);
        if (!c) {
            if (clear)
                return;
            c = xcalloc(1, sizeof(*c));
            c->parent = n;
            c->level = xstrndup(t + i, e - i);
            c->level_len = (uint32_t)(e - i);
            topic_map_put(&n->kids, c->level, c->level_len, c);
        }
        n = c;
        if (e >= len)
            break;
        i = e + 1;
    }
    node_drop_msg(r, n);
    if (clear) {
        prune(n);
        return;
    }
    n->m = msg_ref(m);
    r->count++;
    r->bytes += m->payload_len;
}

static void visit(struct retain *r, struct rt_node *n, uint64_t now_ms, retain_match_cb cb,
                  void *ctx)
{
    if (!n->m)
        return;
    if (msg_is_expired(n->m, now_ms)) {
        if (r->n_expired == r->cap_expired) {
            r->cap_expired = r->cap_expired ? r->cap_expired * 2 : 8;
            r->expired = xrealloc(r->expired, r->cap_expired * sizeof(*r->expired));
        }
        r->expired[r->n_expired++] = n;
        return;
    }
    cb(ctx, n->m);
}

void retain_match(struct retain *r, const char *filter, size_t len, uint64_t now_ms,
                  retain_match_cb cb, void *ctx)
{
    /* Split the filter into levels once (offsets into filter). */
    uint32_t off[256], lens[256];
    uint32_t nl = 0;
    size_t i = 0;
    for (;;) {
        size_t e = i;
        while (e < len && filter[e] != '/')
            e++;
        if (nl == 256)
            return; /* deeper than any topic we accept to walk */
        off[nl] = (uint32_t)i;
        lens[nl] = (uint32_t)(e - i);
        nl++;
        if (e >= len)
            break;
        i = e + 1;
    }
    uint32_t sp = 0;
    r->n_expired = 0;
    push(r, &sp, &r->root, 0);
    while (sp > 0) {
        sp--;
        struct rt_node *n = r->stack[sp].n;
        uint32_t lv = r->stack[sp].level;
        if (lv == UINT32_MAX) {
            visit(r, n, now_ms, cb, ctx);
            for (uint32_t k = 0; k < n->kids.cap; k++)
                if (n->kids.slots[k].key)
                    push(r, &sp, n->kids.slots[k].val, UINT32_MAX);
            continue;
        }
        if (lv == nl) {
            visit(r, n, now_ms, cb, ctx);
            continue;
        }
        const char *f = filter + off[lv];
        uint32_t fl = lens[lv];
        bool at_root = n == &r->root;
        if (fl == 1 && f[0] == '#') {
            /* Matches the parent level too ("a/#" matches "a"), never at the root. */
            if (!at_root)
                visit(r, n, now_ms, cb, ctx);
            for (uint32_t k = 0; k < n->kids.cap; k++) {
                struct topic_map_slot *s = &n->kids.slots[k];
                if (s->key && !(at_root && s->len > 0 && s->key[0] == '$'))
                    push(r, &sp, s->val, UINT32_MAX);
            }
        } else if (fl == 1 && f[0] == '+') {
            for (uint32_t k = 0; k < n->kids.cap; k++) {
                struct topic_map_slot *s = &n->kids.slots[k];
                if (s->key && !(at_root && s->len > 0 && s->key[0] == '$'))
                    push(r, &sp, s->val, lv + 1);
            }
        } else {
            struct rt_node *c = topic_map_get(&n->kids, f, fl);
            if (c)
                push(r, &sp, c, lv + 1);
        }
    }
    for (uint32_t k = 0; k < r->n_expired; k++) {
        struct rt_node *n = r->expired[k];
        node_drop_msg(r, n);
        prune(n);
    }
    r->n_expired = 0;
}

size_t retain_count(const struct retain *r)
{
    return r->count;
}

uint64_t retain_bytes(const struct retain *r)
{
    return r->bytes;
}
