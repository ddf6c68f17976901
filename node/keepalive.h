#ifndef SHOAL_NODE_KEEPALIVE_H
#define SHOAL_NODE_KEEPALIVE_H

/*
 * One hashed timing wheel for every per-client deadline: keepalive, will delay and session
 * expiry. Entries are embedded in their owners; arming, re-arming and cancelling are O(1).
 * Resolution is one slot (250 ms). A keepalive entry is armed once and rechecked lazily: the
 * owner's callback compares its own last-activity time and re-arms instead of paying for a
 * relink on every packet.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEPALIVE_SLOT_MS 250u
#define KEEPALIVE_SLOTS   1024u

struct keepalive_entry;
typedef void (*keepalive_fire_cb)(struct keepalive_entry *e, uint64_t now_ms);

struct keepalive_entry {
    struct keepalive_entry *next;
    struct keepalive_entry **pprev; /* NULL when not armed */
    uint64_t due_ms;
    keepalive_fire_cb fire;
};

struct keepalive_wheel {
    struct keepalive_entry *slots[KEEPALIVE_SLOTS];
    uint64_t cursor_ms; /* every slot before this time has been processed */
};

void keepalive_wheel_init(struct keepalive_wheel *w, uint64_t now_ms);
/* Arms (or re-arms) e to fire at due_ms. */
void keepalive_arm(struct keepalive_wheel *w, struct keepalive_entry *e, uint64_t due_ms,
                   keepalive_fire_cb fire);
/* Disarms e; harmless when not armed. */
void keepalive_cancel(struct keepalive_entry *e);
static inline bool keepalive_is_armed(const struct keepalive_entry *e)
{
    return e->pprev != NULL;
}
/* Fires every entry due at or before now_ms. A callback may arm or cancel any entry. */
void keepalive_advance(struct keepalive_wheel *w, uint64_t now_ms);

#endif
