#ifndef SHOAL_NODE_LOG_H
#define SHOAL_NODE_LOG_H

/*
 * Level-checked logging. Each event is one line: "LEVEL subsys: message key=value ...".
 * The macros test the level before formatting, so disabled lines cost one compare.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Bitmask of mosquitto's log_type names that we honour. */
enum log_type_bits {
    LOG_TYPE_ERROR = 1 << 0,
    LOG_TYPE_WARNING = 1 << 1,
    LOG_TYPE_NOTICE = 1 << 2,
    LOG_TYPE_INFORMATION = 1 << 3,
    LOG_TYPE_DEBUG = 1 << 4,
    LOG_TYPE_SUBSCRIBE = 1 << 5,
    LOG_TYPE_UNSUBSCRIBE = 1 << 6,
    LOG_TYPE_WEBSOCKETS = 1 << 7,
    LOG_TYPE_ALL = 0xff,
};

extern enum log_level log_level_current;

/* Sets the maximum level that is written. */
void log_set_level(enum log_level lvl);
/* Sets where lines go: dest_fd is 1 or 2, or -1 with path for a file (opened for append).
 * Returns 0 or a negative ERR_* / UV_E* code; on error the previous sink is kept. */
int log_set_dest(int dest_fd, const char *path);
/* Whether each line starts with a timestamp. */
void log_set_timestamp(bool on);
/* Closes a file sink, if any. */
void log_close(void);

void log_write(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies a peer-given string into out (size cap) escaping non-printables and truncating.
 * Returns out. */
const char *log_escape(char *out, size_t cap, const void *s, size_t len);

/* Token bucket for peer-triggerable lines: returns true when a line may be written now.
 * One static bucket per call site: at most 10 lines per second per site. */
struct log_bucket {
    uint64_t window_ms;
    uint32_t count;
};
bool log_ratelimit_ok(struct log_bucket *b);

#define log_at(lvl, subsys, ...)                                                                   \
    do {                                                                                           \
        if ((lvl) <= log_level_current)                                                            \
            log_write((lvl), (subsys), __VA_ARGS__);                                               \
    } while (0)

#define log_error(subsys, ...) log_at(LOG_LEVEL_ERROR, subsys, __VA_ARGS__)
#define log_warn(subsys, ...)  log_at(LOG_LEVEL_WARN, subsys, __VA_ARGS__)
#define log_info(subsys, ...)  log_at(LOG_LEVEL_INFO, subsys, __VA_ARGS__)
#define log_debug(subsys, ...) log_at(LOG_LEVEL_DEBUG, subsys, __VA_ARGS__)

#define log_ratelimited(lvl, subsys, ...)                                                          \
    do {                                                                                           \
        static struct log_bucket log__b;                                                           \
        if ((lvl) <= log_level_current && log_ratelimit_ok(&log__b))                               \
            log_write((lvl), (subsys), __VA_ARGS__);                                               \
    } while (0)

#endif
