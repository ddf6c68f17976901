/*
 * Timing wheel. Entries further away than one revolution stay in their slot and are skipped
 * until their time comes; with 1024 slots of 250 ms a revolution is over four minutes, so long
 * deadlines (session expiry) cost one skip per revolution.
 */
#include "node/keepalive.h"

#include <stddef.h>

static uint64_t slot_of(uint64_t t)
{
    return (t / KEEPALIVE_SLOT_MS) % KEEPALIVE_SLOTS;
}

void keepalive_wheel_init(struct keepalive_wheel *w, uint64_t now_ms)
{
    for (size_t i = 0; i < KEEPALIVE_SLOTS; i++)
        w->slots[i] = NULL;
    w->cursor_ms = now_ms - now_ms % KEEPALIVE_SLOT_MS;
}

void keepalive_cancel(struct keepalive_entry *e)
{
    if (!e->pprev)
        return;
    *e->pprev = e->next;
    if (e->next)
        e->next->pprev = e->pprev;
    e->next = NULL;
    e->pprev = NULL;
}

void keepalive_arm(struct keepalive_wheel *w, struct keepalive_entry *e, uint64_t due_ms,
                   keepalive_fire_cb fire)
{
    keepalive_cancel(e);
    if (due_ms < w->cursor_ms)
        due_ms = w->cursor_ms;
    e->due_ms = due_ms;
    e->fire = fire;
    struct keepalive_entry **head = &w->slots[slot_of(due_ms)];
    e->next = *head;
    if (e->next)
        e->next->pprev = &e->next;
    e->pprev = head;
    *head = e;
}

void keepalive_advance(struct keepalive_wheel *w, uint64_t now_ms)
{
    while (w->cursor_ms + KEEPALIVE_SLOT_MS <= now_ms) {
        struct keepalive_entry **head = &w->slots[slot_of(w->cursor_ms)];
        uint64_t slot_end = w->cursor_ms + KEEPALIVE_SLOT_MS;
        /* Detach the due entries first so callbacks may re-arm into this same slot. */
        struct keepalive_entry *due = NULL;
        struct keepalive_entry *e = *head;
        while (e) {
            struct keepalive_entry *next = e->next;
            if (e->due_ms < slot_end) {
                keepalive_cancel(e);
                e->next = due;
                due = e;
            }
            e = next;
        }
        while (due) {
            e = due;
            due = e->next;
            e->next = NULL;
            e->fire(e, now_ms);
        }
        w->cursor_ms = slot_end;
    }
}
