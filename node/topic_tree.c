/*
 * Subscription trie. One node per filter level. Literal children live in an open-addressing
 * hash table per node (linear probing, backward-shift deletion), so a level with 100k distinct
 * topics is still one probe away; '+' and '#' children are separate pointers, so a match
 * visits only nodes that can match: O(depth x wildcard branches).
 *
 * Subscribers of a node sit in a flat array that match iterates; an owner index (a table of
 * array positions keyed by owner pointer) is added only once a set grows past a short linear
 * scan, so adding or removing one of 10k subscribers on "sensors/#" stays O(1).
 *
 * Matching walks with an explicit stack that lives in the tree and only grows, so steady-state
 * matching allocates nothing. Frames are addressed by index from a base, which keeps a nested
 * match (from inside a callback) correct even if the stack moves. Callbacks must not add or
 * remove subscriptions of the tree being matched.
 */
#include "node/topic_tree.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "node/buf.h"
#include "node/err.h"
#include "node/topic.h"

#define TT_LINEAR_MAX 8 /* sets up to this size are scanned instead of indexed */

struct tt_entry {
    void *owner;
    void *rec;
};

/* Subscribers: a dense array plus, when large, an index of positions + 1 (0 = empty slot). */
struct tt_set {
    struct tt_entry *v;
    uint32_t n, cap;
    uint32_t *idx;
    uint32_t idx_cap; /* power of two, or 0 when not indexed */
};

struct tt_group {
    struct tt_group *next;
    struct tt_set members;
    uint32_t cursor; /* next member to try, < members.n */
    size_t name_len;
    char name[];
};

struct tt_node {
    struct tt_node *parent;
    struct tt_node *plus;  /* '+' child */
    struct tt_node *multi; /* '#' child */
    struct tt_node **kids; /* literal children, open addressing */
    struct tt_group *groups;
    struct tt_set subs;
    uint32_t kids_cap; /* power of two, or 0 */
    uint32_t kids_n;
    uint32_t routes; /* plain subscribers + members of every group */
    uint32_t hash;   /* of level, for the parent's table */
    uint16_t len;
    char level[];
};

struct tt_frame {
    struct tt_node *n;
    size_t pos; /* start of the next topic level; len + 1 once the topic is consumed */
};

struct topic_tree {
    struct tt_node *root;
    size_t count;
    size_t nodes;
    uint32_t seed;
    struct tt_frame *stack;
    size_t sp, stack_cap;
    uint32_t busy; /* matches in progress, to catch edits from callbacks */
};

/* FNV-1a seeded per tree, so that colliding level names cannot be precomputed offline. */
static inline uint32_t level_hash(uint32_t seed, const char *s, size_t len)
{
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static inline uint32_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(x >> 32);
}

/* ---- owner sets ---- */

static void set_index_insert(struct tt_set *s, uint32_t pos)
{
    uint32_t mask = s->idx_cap - 1;
    uint32_t i = ptr_hash(s->v[pos].owner) & mask;
    while (s->idx[i])
        i = (i + 1) & mask;
    s->idx[i] = pos + 1;
}

static void set_index_build(struct tt_set *s, uint32_t cap)
{
    free(s->idx);
    s->idx = xcalloc(cap, sizeof(*s->idx));
    s->idx_cap = cap;
    for (uint32_t i = 0; i < s->n; i++)
        set_index_insert(s, i);
}

/* Slot in the index holding owner, or idx_cap when absent. */
static uint32_t set_index_slot(const struct tt_set *s, const void *owner)
{
    uint32_t mask = s->idx_cap - 1;
    for (uint32_t i = ptr_hash(owner) & mask; s->idx[i]; i = (i + 1) & mask) {
        if (s->v[s->idx[i] - 1].owner == owner)
            return i;
    }
    return s->idx_cap;
}

/* Empties slot i, shifting back later entries of the probe run so lookups never stop early. */
static void set_index_delete(struct tt_set *s, uint32_t i)
{
    uint32_t mask = s->idx_cap - 1;
    uint32_t j = i;
    for (;;) {
        s->idx[i] = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!s->idx[j])
                return;
            uint32_t home = ptr_hash(s->v[s->idx[j] - 1].owner) & mask;
            /* Entry j may move to i only if its home is not cyclically within (i, j]. */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        s->idx[i] = s->idx[j];
        i = j;
    }
}

static int64_t set_find(const struct tt_set *s, const void *owner)
{
    if (s->idx_cap) {
        uint32_t slot = set_index_slot(s, owner);
        return slot == s->idx_cap ? -1 : (int64_t)s->idx[slot] - 1;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->v[i].owner == owner)
            return i;
    }
    return -1;
}

static void set_append(struct tt_set *s, void *owner, void *rec)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 2;
        s->v = xrealloc(s->v, (size_t)s->cap * sizeof(*s->v));
    }
    uint32_t pos = s->n++;
    s->v[pos].owner = owner;
    s->v[pos].rec = rec;
    if (s->idx_cap && (uint64_t)s->n * 4 <= (uint64_t)s->idx_cap * 3) {
        set_index_insert(s, pos);
    } else if (s->idx_cap || s->n > TT_LINEAR_MAX) {
        uint32_t cap = s->idx_cap ? s->idx_cap * 2 : 32;
        set_index_build(s, cap);
    }
}

/* Removes position pos by moving the last entry into it. */
static void set_remove(struct tt_set *s, uint32_t pos)
{
    uint32_t last = s->n - 1;
    if (s->idx_cap) {
        set_index_delete(s, set_index_slot(s, s->v[pos].owner));
        if (pos != last) {
            uint32_t slot = set_index_slot(s, s->v[last].owner);
            assert(slot != s->idx_cap);
            s->idx[slot] = pos + 1;
        }
    }
    s->v[pos] = s->v[last];
    s->n = last;
}

static void set_free(struct tt_set *s)
{
    free(s->v);
    free(s->idx);
    memset(s, 0, sizeof(*s));
}

/* ---- nodes ---- */

static struct tt_node *node_new(struct tt_node *parent, const char *lv, size_t len, uint32_t h)
{
    struct tt_node *n = xcalloc(1, sizeof(*n) + len + 1);
    n->parent = parent;
    n->hash = h;
    n->len = (uint16_t)len;
    memcpy(n->level, lv, len);
    return n;
}

static void node_free(struct tt_node *n)
{
    struct tt_group *g = n->groups;
    while (g) {
        struct tt_group *next = g->next;
        set_free(&g->members);
        free(g);
        g = next;
    }
    n->groups = NULL;
    set_free(&n->subs);
    free(n->kids);
    n->kids = NULL;
    free(n);
}

static struct tt_node *kids_find(const struct tt_node *n, const char *lv, size_t len, uint32_t h)
{
    if (!n->kids_cap)
        return NULL;
    uint32_t mask = n->kids_cap - 1;
    for (uint32_t i = h & mask; n->kids[i]; i = (i + 1) & mask) {
        struct tt_node *c = n->kids[i];
        if (c->hash == h && c->len == len && memcmp(c->level, lv, len) == 0)
            return c;
    }
    return NULL;
}

static void kids_place(struct tt_node **kids, uint32_t cap, struct tt_node *c)
{
    uint32_t mask = cap - 1;
    uint32_t i = c->hash & mask;
    while (kids[i])
        i = (i + 1) & mask;
    kids[i] = c;
}

static void kids_resize(struct tt_node *n, uint32_t cap)
{
    struct tt_node **kids = xcalloc(cap, sizeof(struct tt_node *));
    for (uint32_t i = 0; i < n->kids_cap; i++) {
        if (n->kids[i])
            kids_place(kids, cap, n->kids[i]);
    }
    free(n->kids);
    n->kids = kids;
    n->kids_cap = cap;
}

static void kids_insert(struct tt_node *n, struct tt_node *c)
{
    if ((uint64_t)(n->kids_n + 1) * 4 > (uint64_t)n->kids_cap * 3)
        kids_resize(n, n->kids_cap ? n->kids_cap * 2 : 4);
    kids_place(n->kids, n->kids_cap, c);
    n->kids_n++;
}

static void kids_delete(struct tt_node *n, struct tt_node *c)
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

/* Child of n for one filter level; created when create is set, else NULL if absent. */
static struct tt_node *node_child(struct topic_tree *t, struct tt_node *n, const char *lv,
                                  size_t len, bool create)
{
    if (len == 1 && (lv[0] == '+' || lv[0] == '#')) {
        struct tt_node **slot = lv[0] == '+' ? &n->plus : &n->multi;
        if (!*slot && create) {
            *slot = node_new(n, lv, len, 0);
            t->nodes++;
        }
        return *slot;
    }
    uint32_t h = level_hash(t->seed, lv, len);
    struct tt_node *c = kids_find(n, lv, len, h);
    if (!c && create) {
        c = node_new(n, lv, len, h);
        kids_insert(n, c);
        t->nodes++;
    }
    return c;
}

/* Node of a non-shared filter, or NULL when absent and !create. */
static struct tt_node *node_path(struct topic_tree *t, const char *f, size_t len, bool create)
{
    struct tt_node *n = t->root;
    size_t pos = 0;
    for (;;) {
        const char *slash = memchr(f + pos, '/', len - pos);
        size_t ll = slash ? (size_t)(slash - (f + pos)) : len - pos;
        n = node_child(t, n, f + pos, ll, create);
        if (!n || !slash)
            return n;
        pos += ll + 1;
    }
}

static bool node_is_empty(const struct tt_node *n)
{
    return n->routes == 0 && n->kids_n == 0 && !n->plus && !n->multi;
}

/* Frees n and its ancestors while they hold nothing. The root stays. */
static void node_prune(struct topic_tree *t, struct tt_node *n)
{
    while (n != t->root && node_is_empty(n)) {
        struct tt_node *p = n->parent;
        if (p->plus == n)
            p->plus = NULL;
        else if (p->multi == n)
            p->multi = NULL;
        else
            kids_delete(p, n);
        node_free(n);
        t->nodes--;
        n = p;
    }
}

static struct tt_group *group_find(struct tt_node *n, const char *name, size_t len,
                                   struct tt_group ***link)
{
    struct tt_group **pg = &n->groups;
    for (; *pg; pg = &(*pg)->next) {
        if ((*pg)->name_len == len && memcmp((*pg)->name, name, len) == 0)
            break;
    }
    if (link)
        *link = pg;
    return *pg;
}

/* ---- public ---- */

struct topic_tree *topic_tree_create(void)
{
    struct topic_tree *t = xcalloc(1, sizeof(*t));
    t->root = node_new(NULL, "", 0, 0);
    t->nodes = 1;
    t->seed = ptr_hash(t) ^ ptr_hash(t->root);
    t->stack_cap = 16;
    t->stack = xmalloc(t->stack_cap * sizeof(*t->stack));
    return t;
}

static void stack_push(struct topic_tree *t, struct tt_node *n, size_t pos)
{
    if (t->sp == t->stack_cap) {
        t->stack_cap *= 2;
        t->stack = xrealloc(t->stack, t->stack_cap * sizeof(*t->stack));
    }
    t->stack[t->sp].n = n;
    t->stack[t->sp].pos = pos;
    t->sp++;
}

void topic_tree_destroy(struct topic_tree **tp)
{
    struct topic_tree *t = *tp;
    *tp = NULL;
    if (!t)
        return;
    assert(t->busy == 0);
    t->sp = 0;
    stack_push(t, t->root, 0);
    while (t->sp > 0) {
        struct tt_node *n = t->stack[--t->sp].n;
        for (uint32_t i = 0; i < n->kids_cap; i++) {
            if (n->kids[i])
                stack_push(t, n->kids[i], 0);
        }
        if (n->plus)
            stack_push(t, n->plus, 0);
        if (n->multi)
            stack_push(t, n->multi, 0);
        node_free(n);
    }
    t->root = NULL;
    free(t->stack);
    t->stack = NULL;
    free(t);
}

static int add_plain(struct tt_node *n, void *owner, void *rec)
{
    int64_t pos = set_find(&n->subs, owner);
    if (pos >= 0) {
        n->subs.v[pos].rec = rec;
        return TOPIC_TREE_REPLACED;
    }
    set_append(&n->subs, owner, rec);
    return n->subs.n == 1 ? TOPIC_TREE_FIRST : TOPIC_TREE_ADDED;
}

static int add_shared(struct tt_node *n, const char *name, size_t len, void *owner, void *rec)
{
    struct tt_group **link;
    struct tt_group *g = group_find(n, name, len, &link);
    if (!g) {
        g = xcalloc(1, sizeof(*g) + len + 1);
        g->name_len = len;
        memcpy(g->name, name, len);
        *link = g;
    }
    int64_t pos = set_find(&g->members, owner);
    if (pos >= 0) {
        g->members.v[pos].rec = rec;
        return TOPIC_TREE_REPLACED;
    }
    set_append(&g->members, owner, rec);
    return g->members.n == 1 ? TOPIC_TREE_FIRST : TOPIC_TREE_ADDED;
}

int topic_tree_add(struct topic_tree *t, const char *filter, size_t len, void *owner, void *rec)
{
    assert(t->busy == 0);
    const char *group = NULL, *f = filter;
    size_t group_len = 0, flen = len;
    bool is_shared = topic_share_split(filter, len, &group, &group_len, &f, &flen);

    struct tt_node *n = node_path(t, f, flen, true);
    int rc = is_shared ? add_shared(n, group, group_len, owner, rec) : add_plain(n, owner, rec);
    if (rc == TOPIC_TREE_REPLACED)
        return rc;
    t->count++;
    n->routes++;
    return rc;
}

static int remove_shared(struct tt_node *n, const char *name, size_t len, void *owner)
{
    struct tt_group **link;
    struct tt_group *g = group_find(n, name, len, &link);
    if (!g)
        return ERR_NOT_FOUND;
    int64_t pos = set_find(&g->members, owner);
    if (pos < 0)
        return ERR_NOT_FOUND;
    set_remove(&g->members, (uint32_t)pos);
    if (g->cursor >= g->members.n)
        g->cursor = 0;
    if (g->members.n == 0) {
        *link = g->next;
        set_free(&g->members);
        free(g);
        return 1;
    }
    return 0;
}

int topic_tree_remove(struct topic_tree *t, const char *filter, size_t len, void *owner)
{
    assert(t->busy == 0);
    const char *group = NULL, *f = filter;
    size_t group_len = 0, flen = len;
    bool is_shared = topic_share_split(filter, len, &group, &group_len, &f, &flen);

    struct tt_node *n = node_path(t, f, flen, false);
    if (!n)
        return ERR_NOT_FOUND;
    int rc;
    if (is_shared) {
        rc = remove_shared(n, group, group_len, owner);
        if (rc < 0)
            return rc;
    } else {
        int64_t pos = set_find(&n->subs, owner);
        if (pos < 0)
            return ERR_NOT_FOUND;
        set_remove(&n->subs, (uint32_t)pos);
        rc = n->subs.n == 0 ? 1 : 0;
    }
    t->count--;
    n->routes--;
    node_prune(t, n);
    return rc;
}

/* Round-robin from the cursor over eligible members; with none eligible, the next anyway. */
static const struct tt_entry *group_pick(struct tt_group *g, topic_tree_eligible_cb eligible)
{
    uint32_t n = g->members.n;
    uint32_t start = g->cursor < n ? g->cursor : 0;
    uint32_t j = start;
    if (eligible) {
        for (uint32_t i = 0; i < n; i++) {
            if (eligible(g->members.v[j].owner))
                break;
            j = j + 1 == n ? 0 : j + 1;
        }
        /* After a full lap without an eligible member, j is back at start. */
    }
    g->cursor = j + 1 == n ? 0 : j + 1;
    return &g->members.v[j];
}

static void deliver(struct tt_node *n, topic_tree_eligible_cb eligible, topic_tree_match_cb cb,
                    void *ctx)
{
    const struct tt_entry *v = n->subs.v;
    for (uint32_t i = 0, cnt = n->subs.n; i < cnt; i++)
        cb(ctx, v[i].owner, v[i].rec);
    for (struct tt_group *g = n->groups; g; g = g->next) {
        const struct tt_entry *e = group_pick(g, eligible);
        cb(ctx, e->owner, e->rec);
    }
}

void topic_tree_match(struct topic_tree *t, const char *topic, size_t len,
                      topic_tree_eligible_cb eligible, topic_tree_match_cb cb, void *ctx)
{
    /* Topics starting with '$' skip the root's wildcard children ([MQTT-4.7.2-1]). */
    bool is_dollar = len > 0 && topic[0] == '$';
    size_t base = t->sp;
    t->busy++;
    stack_push(t, t->root, 0);
    while (t->sp > base) {
        struct tt_frame f = t->stack[--t->sp];
        struct tt_node *n = f.n;
        if (f.pos > len) {
            deliver(n, eligible, cb, ctx);
            if (n->multi) /* "a/#" matches "a" */
                deliver(n->multi, eligible, cb, ctx);
            continue;
        }
        bool wild_ok = !(is_dollar && n == t->root);
        if (wild_ok && n->multi)
            deliver(n->multi, eligible, cb, ctx);
        const char *lv = topic + f.pos;
        const char *slash = memchr(lv, '/', len - f.pos);
        size_t ll = slash ? (size_t)(slash - lv) : len - f.pos;
        size_t next = f.pos + ll + 1;
        if (wild_ok && n->plus)
            stack_push(t, n->plus, next);
        if (n->kids_n) {
            struct tt_node *c = kids_find(n, lv, ll, level_hash(t->seed, lv, ll));
            if (c)
                stack_push(t, c, next);
        }
    }
    t->busy--;
}

size_t topic_tree_count(const struct topic_tree *t)
{
    return t->count;
}

size_t topic_tree_nodes(const struct topic_tree *t)
{
    return t->nodes;
}
