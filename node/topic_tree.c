/*
 * Subscription trie. Literal children sit in a hash map per node; '+' and '#' children are
 * separate pointers, so matching a topic of depth d visits at most the nodes that can match
 * and costs O(d x wildcard branches), independent of how many distinct topics exist. Matching
 * walks with an explicit stack that lives in the tree and only grows.
 */
#include "node/topic_tree.h"

#include <stdlib.h>
#include <string.h>

#include "node/buf.h"
#include "node/err.h"
#include "node/topic.h"
#include "node/topic_map.h"

struct tt_sub {
    void *owner;
    void *rec;
};

struct tt_group {
    struct tt_group *next;
    char *name;
    size_t name_len;
    struct tt_sub *members;
    uint32_t n;
    uint32_t cap;
    uint32_t cursor;
};

struct tt_node {
    struct tt_node *parent;
    char *level; /* NULL for the root */
    uint32_t level_len;
    struct topic_map kids;
    struct tt_node *plus;
    struct tt_node *hash;
    struct tt_sub *subs;
    uint32_t n_subs;
    uint32_t cap_subs;
    struct tt_group *groups;
    uint32_t routes; /* plain subscribers + shared members */
};

struct tt_frame {
    struct tt_node *n;
    uint32_t level;
};

struct topic_tree {
    struct tt_node root;
    size_t count;
    struct tt_frame *stack;
    uint32_t cap_stack;
    uint32_t *lv_off; /* topic level offsets for the match in progress */
    uint32_t *lv_len;
    uint32_t cap_lv;
};

struct topic_tree *topic_tree_create(void)
{
    return xcalloc(1, sizeof(struct topic_tree));
}

static bool node_is_empty(const struct tt_node *n)
{
    return n->n_subs == 0 && !n->groups && n->kids.n == 0 && !n->plus && !n->hash;
}

static void node_free_contents(struct tt_node *n)
{
    topic_map_free(&n->kids);
    free(n->subs);
    n->subs = NULL;
    while (n->groups) {
        struct tt_group *g = n->groups;
        n->groups = g->next;
        free(g->members);
        free(g->name);
        free(g);
    }
    free(n->level);
    n->level = NULL;
}

void topic_tree_destroy(struct topic_tree **tp)
{
    struct topic_tree *t = *tp;
    *tp = NULL;
    if (!t)
        return;
    /* Post-order without recursion: repeatedly descend to a leaf, free it, climb. */
    struct tt_node *n = &t->root;
    while (n) {
        struct tt_node *child = NULL;
        if (n->plus)
            child = n->plus;
        else if (n->hash)
            child = n->hash;
        else if (n->kids.n) {
            for (uint32_t i = 0; i < n->kids.cap && !child; i++)
                child = n->kids.slots[i].val;
        }
        if (child) {
            n = child;
            continue;
        }
        struct tt_node *parent = n->parent;
        if (parent) {
            if (parent->plus == n)
                parent->plus = NULL;
            else if (parent->hash == n)
                parent->hash = NULL;
            else
                topic_map_del(&parent->kids, n->level, n->level_len);
        }
        node_free_contents(n);
        if (n != &t->root)
            free(n);
        n = parent;
    }
    free(t->stack);
    free(t->lv_off);
    free(t->lv_len);
    free(t);
}

static struct tt_node *child_get(struct tt_node *n, const char *lv, size_t len, bool create)
{
    struct tt_node **special = NULL;
    if (len == 1 && lv[0] == '+')
        special = &n->plus;
    else if (len == 1 && lv[0] == '#')
        special = &n->hash;
    struct tt_node *c = special ? *special : topic_map_get(&n->kids, lv, len);
    if (c || !create)
        return c;
    c = xcalloc(1, sizeof(*c));
    c->parent = n;
    c->level = xstrndup(lv, len);
    c->level_len = (uint32_t)len;
    if (special)
        *special = c;
    else
        topic_map_put(&n->kids, c->level, len, c);
    return c;
}

/* Walks (creating if asked) to the node of a non-shared filter. */
static struct tt_node *walk(struct topic_tree *t, const char *f, size_t len, bool create)
{
    struct tt_node *n = &t->root;
    size_t i = 0;
    for (;;) {
        size_t e = i;
        while (e < len && f[e] != '/')
            e++;
        n = child_get(n, f + i, e - i, create);
        if (!n || e >= len)
            return n;
        i = e + 1;
    }
}

static int sub_index(const struct tt_sub *v, uint32_t n, const void *owner)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i].owner == owner)
            return (int)i;
    return -1;
}

static void sub_push(struct tt_sub **v, uint32_t *n, uint32_t *cap, void *owner, void *rec)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 2;
        *v = xrealloc(*v, *cap * sizeof(**v));
    }
    (*v)[*n].owner = owner;
    (*v)[*n].rec = rec;
    (*n)++;
}

int topic_tree_add(struct topic_tree *t, const char *filter, size_t len, void *owner, void *rec)
{
    const char *g = NULL, *f = filter;
    size_t glen = 0, flen = len;
    bool shared = topic_share_split(filter, len, &g, &glen, &f, &flen);
    struct tt_node *n = walk(t, f, flen, true);
    struct tt_sub **v = &n->subs;
    uint32_t *cnt = &n->n_subs, *cap = &n->cap_subs;

    if (shared) {
        struct tt_group *grp = n->groups;
        while (grp && !(grp->name_len == glen && memcmp(grp->name, g, glen) == 0))
            grp = grp->next;
        if (!grp) {
            grp = xcalloc(1, sizeof(*grp));
            grp->name = xstrndup(g, glen);
            grp->name_len = glen;
            grp->next = n->groups;
            n->groups = grp;
        }
        v = &grp->members;
        cnt = &grp->n;
        cap = &grp->cap;
    }
    int i = sub_index(*v, *cnt, owner);
    if (i >= 0) {
        (*v)[i].rec = rec;
        return TOPIC_TREE_REPLACED;
    }
    sub_push(v, cnt, cap, owner, rec);
    t->count++;
    return n->routes++ == 0 ? TOPIC_TREE_FIRST : TOPIC_TREE_ADDED;
}

static void prune(struct tt_node *n)
{
    while (n->parent && node_is_empty(n)) {
        struct tt_node *p = n->parent;
        if (p->plus == n)
            p->plus = NULL;
        else if (p->hash == n)
            p->hash = NULL;
        else
            topic_map_del(&p->kids, n->level, n->level_len);
        node_free_contents(n);
        free(n);
        n = p;
    }
}

int topic_tree_remove(struct topic_tree *t, const char *filter, size_t len, void *owner)
{
    const char *g = NULL, *f = filter;
    size_t glen = 0, flen = len;
    bool shared = topic_share_split(filter, len, &g, &glen, &f, &flen);
    struct tt_node *n = walk(t, f, flen, false);
    if (!n)
        return ERR_NOT_FOUND;
    if (shared) {
        struct tt_group **pg = &n->groups;
        while (*pg && !((*pg)->name_len == glen && memcmp((*pg)->name, g, glen) == 0))
            pg = &(*pg)->next;
        struct tt_group *grp = *pg;
        int i = grp ? sub_index(grp->members, grp->n, owner) : -1;
        if (i < 0)
            return ERR_NOT_FOUND;
        /* Keep member order so the round-robin stays fair. */
        memmove(&grp->members[i], &grp->members[i + 1],
                (grp->n - (uint32_t)i - 1) * sizeof(*grp->members));
        grp->n--;
        if (grp->cursor > (uint32_t)i)
            grp->cursor--;
        if (grp->n == 0) {
            *pg = grp->next;
            free(grp->members);
            free(grp->name);
            free(grp);
        }
    } else {
        int i = sub_index(n->subs, n->n_subs, owner);
        if (i < 0)
            return ERR_NOT_FOUND;
        n->subs[i] = n->subs[--n->n_subs];
        if (n->n_subs == 0) {
            free(n->subs);
            n->subs = NULL;
            n->cap_subs = 0;
        }
    }
    t->count--;
    bool last = --n->routes == 0;
    prune(n);
    return last ? 1 : 0;
}

static void emit(struct tt_node *n, topic_tree_eligible_cb eligible, topic_tree_match_cb cb,
                 void *ctx)
{
    for (uint32_t i = 0; i < n->n_subs; i++)
        cb(ctx, n->subs[i].owner, n->subs[i].rec);
    for (struct tt_group *g = n->groups; g; g = g->next) {
        uint32_t pick = g->cursor % g->n;
        if (eligible) {
            for (uint32_t k = 0; k < g->n; k++) {
                uint32_t j = (g->cursor + k) % g->n;
                if (eligible(g->members[j].owner)) {
                    pick = j;
                    break;
                }
            }
        }
        g->cursor = (pick + 1) % g->n;
        cb(ctx, g->members[pick].owner, g->members[pick].rec);
    }
}

static void push(struct topic_tree *t, uint32_t *sp, struct tt_node *n, uint32_t level)
{
    if (*sp == t->cap_stack) {
        t->cap_stack = t->cap_stack ? t->cap_stack * 2 : 32;
        t->stack = xrealloc(t->stack, t->cap_stack * sizeof(*t->stack));
    }
    t->stack[*sp].n = n;
    t->stack[*sp].level = level;
    (*sp)++;
}

void topic_tree_match(struct topic_tree *t, const char *topic, size_t len,
                      topic_tree_eligible_cb eligible, topic_tree_match_cb cb, void *ctx)
{
    uint32_t nl = 0;
    size_t i = 0;
    for (;;) {
        size_t e = i;
        while (e < len && topic[e] != '/')
            e++;
        if (nl == t->cap_lv) {
            t->cap_lv = t->cap_lv ? t->cap_lv * 2 : 16;
            t->lv_off = xrealloc(t->lv_off, t->cap_lv * sizeof(*t->lv_off));
            t->lv_len = xrealloc(t->lv_len, t->cap_lv * sizeof(*t->lv_len));
        }
        t->lv_off[nl] = (uint32_t)i;
        t->lv_len[nl] = (uint32_t)(e - i);
        nl++;
        if (e >= len)
            break;
        i = e + 1;
    }
    bool dollar = len > 0 && topic[0] == '$';
    uint32_t sp = 0;
    push(t, &sp, &t->root, 0);
    while (sp > 0) {
        sp--;
        struct tt_node *n = t->stack[sp].n;
        uint32_t lv = t->stack[sp].level;
        bool wild_ok = !(lv == 0 && dollar);
        if (lv == nl) {
            emit(n, eligible, cb, ctx);
            if (n->hash)
                emit(n->hash, eligible, cb, ctx); /* "a/#" also matches "a" */
            continue;
        }
        if (n->hash && wild_ok)
            emit(n->hash, eligible, cb, ctx);
        if (n->plus && wild_ok)
            push(t, &sp, n->plus, lv + 1);
        struct tt_node *c = topic_map_get(&n->kids, topic + t->lv_off[lv], t->lv_len[lv]);
        if (c)
            push(t, &sp, c, lv + 1);
    }
}

size_t topic_tree_count(const struct topic_tree *t)
{
    return t->count;
}
