#ifndef SHOAL_NODE_BUF_H
#define SHOAL_NODE_BUF_H

/*
 * Growable byte buffer with a read offset (consume from the front, append at the back) and
 * the allocation helpers every module uses. xmalloc and friends abort on exhaustion: they are
 * for control structures whose sizes we chose, never for peer-given sizes that were not first
 * checked against a configured limit.
 */

#include <stddef.h>
#include <stdint.h>

/* 32-bit offsets keep the struct at 24 bytes (it is embedded twice in every connection); a
 * buffer never holds more than one maximum-size MQTT packet plus a read's worth. */
struct buf {
    uint8_t *data;
    uint32_t off; /* first unread byte */
    uint32_t len; /* end of written bytes */
    uint32_t cap;
};

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Releases the storage and zeroes b. */
void buf_free(struct buf *b);
/* Makes room for n more bytes at the end and returns a pointer to them (not yet committed).
 * Compacts consumed bytes first when that is enough. */
uint8_t *buf_reserve(struct buf *b, size_t n);
/* Marks n reserved bytes as written. */
void buf_commit(struct buf *b, size_t n);
/* Appends n bytes. */
void buf_append(struct buf *b, const void *p, size_t n);
/* Drops n bytes from the front; when it empties, resets offsets to 0. */
void buf_consume(struct buf *b, size_t n);
/* Unread bytes. */
static inline size_t buf_used(const struct buf *b)
{
    return b->len - b->off;
}
static inline uint8_t *buf_head(const struct buf *b)
{
    return b->data + b->off;
}
/* Empties the buffer, keeping its storage. */
/* n-byte big-endian integers (n <= 8), for the stored formats. */
static inline void be_put(uint8_t *w, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        w[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t be_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static inline void buf_reset(struct buf *b)
{
    b->off = 0;
    b->len = 0;
}

#endif
