/*
 * The redis backend: the shared, durable store of a cluster. One hiredis async connection on the
 * node's loop carries every request. Commands go out as they are issued and hiredis writes what
 * a loop pass produced in one go, so bursts are pipelined. Each step that must be atomic (owner
 * claim, fenced writes, quota-checked pushes) is one Lua script, loaded at every (re)connect and
 * run with EVALSHA. The cluster's member registry, adoption elections and parked messages use the
 * same connection and the same script machinery.
 *
 * hiredis 0.14 has no timers, so this file owns them: one for the connection (backoff, then one
 * deadline over resolve, connect and the AUTH/SELECT/SCRIPT LOAD handshake) and one for request
 * deadlines. Every live request sits in one list in deadline order; while the connection is down
 * it waits there unsent, still bound by the deadline it got when issued. A sent request left
 * unanswered means a broken connection: it fails with ERR_TIMEOUT and dropping the connection
 * fails the rest on the wire with ERR_IO. hiredis is never freed from inside its connect or
 * disconnect callbacks, and new connections start only from our timer.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "node/buf.h"
#include "node/err.h"
#include "node/log.h"
#include "store/store_int.h"

#define RDS_CONNECT_TIMEOUT_MS 2000
#define RDS_COMMAND_TIMEOUT_MS 3000
#define RDS_BACKOFF_MIN_MS     100
#define RDS_BACKOFF_MAX_MS     5000
#define RDS_WAITING_RETRY_MS   1000
/* A sent request unanswered for this long means the connection is broken, not just slow to
 * start: a request sent with little time left may time out on a healthy connection. */
#define RDS_STALL_MS     1000
#define RDS_DEFAULT_PORT 6379
#define RDS_SCAN_COUNT   "1000"
#define RDS_ARGV_MAX     12
#define RDS_SHA_LEN      40
/* Expiry times past the year 9999 mean "never": Redis would reject them as out of range. */
#define RDS_EXPIRY_MAX_S 253402300799ull

#define RDS_PREFIX        "shoal:v1:"
#define RDS_KEY_RETAINED  RDS_PREFIX "retained"
#define RDS_KEY_SESSIONS  RDS_PREFIX "sessions"
#define RDS_KEY_MEMBERS   RDS_PREFIX "members"
#define RDS_KEY_NODES     RDS_PREFIX "nodes"
#define RDS_KIND_MEMBER   "member:"
#define RDS_KIND_ADOPT    "adopt:"
#define RDS_KIND_PARKED   "parked:"
#define RDS_SUFFIX_OWNER  "owner"
#define RDS_SUFFIX_SESS   "sess"
#define RDS_SUFFIX_QUEUE  "q"
#define RDS_SUFFIX_QBYTES "qb"

/* ---- scripts ------------------------------------------------------------------------------ */

/*
 * Script results are small integers: 0 done, 1 refused (a newer epoch holds the client id, or
 * another node holds an adoption election), 2 no session, 3 over quota. Epochs are compared as
 * decimal strings so that no precision is lost in Lua's doubles; a claim (and an adopt) takes
 * the larger of (stored epoch + 1) and Redis' clock in microseconds, so epochs keep rising even
 * if the owner key were ever lost.
 */
enum rds_script {
    RDS_SCRIPT_CLAIM = 0,
    RDS_SCRIPT_RELEASE,
    RDS_SCRIPT_SAVE,
    RDS_SCRIPT_LOAD,
    RDS_SCRIPT_DELETE,
    RDS_SCRIPT_PUSH,
    RDS_SCRIPT_TRIM,
    RDS_SCRIPT_SCAN,
    RDS_SCRIPT_SCAN_OWNED,
    RDS_SCRIPT_ADOPT,
    RDS_SCRIPT_ADOPT_LOCK,
    RDS_SCRIPT_HEARTBEAT,
    RDS_SCRIPT_LEAVE,
    RDS_SCRIPT_MEMBERS,
    RDS_SCRIPT_PARK_TAKE,
    RDS_SCRIPT_GONE,
    RDS_N_SCRIPTS,
    RDS_SCRIPT_NONE = RDS_N_SCRIPTS,
};

#define RDS_LUA_STALE                                                                              \
    "local function stale(owner, e)\n"                                                             \
    "  local cur = redis.call('HGET', owner, 'epoch')\n"                                           \
    "  if not cur then return false end\n"                                                         \
    "  return #e < #cur or (#e == #cur and e < cur)\n"                                             \
    "end\n"

/* Claim and adopt make epochs the same way, so that both fence everything before them. */
#define RDS_LUA_NEXT_EPOCH                                                                         \
    "local function next_epoch(cur)\n"                                                             \
    "  local t = redis.call('TIME')\n"                                                             \
    "  local e = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                      \
    "  local c = tonumber(cur or '0')\n"                                                           \
    "  if e <= c then e = c + 1 end\n"                                                             \
    "  return string.format('%.0f', e)\n"                                                          \
    "end\n"

static const char *const rds_scripts[RDS_N_SCRIPTS] = {
    /* KEYS: owner. ARGV: node id. Returns {epoch} or {epoch, prev node, prev epoch}. */
    [RDS_SCRIPT_CLAIM] =
        RDS_LUA_NEXT_EPOCH "local prev = redis.call('HMGET', KEYS[1], 'node', 'epoch')\n"
                           "local es = next_epoch(prev[2])\n"
                           "redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', es)\n"
                           "if prev[1] then return {es, prev[1], prev[2]} end\n"
                           "return {es}\n",
    /* KEYS: owner. ARGV: epoch. */
    [RDS_SCRIPT_RELEASE] = RDS_LUA_STALE "if stale(KEYS[1], ARGV[1]) then return 1 end\n"
                                         "if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then\n"
                                         "  redis.call('HDEL', KEYS[1], 'node')\n"
                                         "end\n"
                                         "return 0\n",
    /* KEYS: owner, sess, q, qb, sessions index. ARGV: epoch, state, expiry (unix seconds, 0 =
     * never). */
    [RDS_SCRIPT_SAVE] = RDS_LUA_STALE "if stale(KEYS[1], ARGV[1]) then return 1 end\n"
                                      "redis.call('SET', KEYS[2], ARGV[2])\n"
                                      "redis.call('SADD', KEYS[5], KEYS[2])\n"
                                      "for i = 2, 4 do\n"
                                      "  if ARGV[3] == '0' then redis.call('PERSIST', KEYS[i])\n"
                                      "  else redis.call('EXPIREAT', KEYS[i], ARGV[3]) end\n"
                                      "end\n"
                                      "return 0\n",
    /* KEYS: sess, q. Returns nil or {state, {msg...}}. */
    [RDS_SCRIPT_LOAD] = "local st = redis.call('GET', KEYS[1])\n"
                        "if not st then return false end\n"
                        "return {st, redis.call('LRANGE', KEYS[2], 0, -1)}\n",
    /* KEYS: owner, sess, q, qb, sessions index. ARGV: epoch. */
    [RDS_SCRIPT_DELETE] = RDS_LUA_STALE "if stale(KEYS[1], ARGV[1]) then return 1 end\n"
                                        "redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])\n"
                                        "redis.call('SREM', KEYS[5], KEYS[2])\n"
                                        "return 0\n",
    /* KEYS: sess, q, qb. ARGV: msg, max count, max bytes (0 = no limit). The queue takes the
     * session's expiry, so that it goes when the session does. */
    [RDS_SCRIPT_PUSH] = "local ttl = redis.call('PTTL', KEYS[1])\n"
                        "if ttl == -2 then return 2 end\n"
                        "local n = redis.call('LLEN', KEYS[2])\n"
                        "local b = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
                        "local mc = tonumber(ARGV[2])\n"
                        "local mb = tonumber(ARGV[3])\n"
                        "local len = string.len(ARGV[1])\n"
                        "if (mc > 0 and n >= mc) or (mb > 0 and (len > mb or b > mb - len)) then\n"
                        "  return 3\n"
                        "end\n"
                        "redis.call('RPUSH', KEYS[2], ARGV[1])\n"
                        "redis.call('INCRBY', KEYS[3], len)\n"
                        "if ttl > 0 then\n"
                        "  redis.call('PEXPIRE', KEYS[2], ttl)\n"
                        "  redis.call('PEXPIRE', KEYS[3], ttl)\n"
                        "end\n"
                        "return 0\n",
    /* KEYS: owner, q, qb. ARGV: epoch, the ids (each a 4-byte big-endian length, then the
     * id), the number of entries to search beyond the ids' count. Removes each entry named
     * (store_entry_id's rule) among the first ones; a removed run at the head is one LTRIM,
     * others become empty strings (no entry is empty) and go in one LREM. */
    [RDS_SCRIPT_TRIM] =
        RDS_LUA_STALE "if stale(KEYS[1], ARGV[1]) then return 1 end\n"
                      "local want, left, a, i = {}, 0, ARGV[2], 1\n"
                      "while i + 3 <= #a do\n"
                      "  local b1, b2, b3, b4 = string.byte(a, i, i + 3)\n"
                      "  local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4\n"
                      "  local id = string.sub(a, i + 4, i + 3 + n)\n"
                      "  want[id] = (want[id] or 0) + 1\n"
                      "  left = left + 1\n"
                      "  i = i + 4 + n\n"
                      "end\n"
                      "local len = redis.call('LLEN', KEYS[2])\n"
                      "local limit = math.min(len, left + tonumber(ARGV[3]))\n"
                      "local pos, gone, bytes, head = 0, {}, 0, 0\n"
                      "while pos < limit and left > 0 do\n"
                      "  local last = math.min(pos + 2 * left + 16, limit) - 1\n"
                      "  local es = redis.call('LRANGE', KEYS[2], pos, last)\n"
                      "  for j = 1, #es do\n"
                      "    local e = es[j]\n"
                      "    local id = e\n"
                      "    if #e > 8 and string.byte(e, 1) == 0 then id = string.sub(e, 2, 9) end\n"
                      "    local w = want[id]\n"
                      "    if w then\n"
                      "      if w == 1 then want[id] = nil else want[id] = w - 1 end\n"
                      "      left = left - 1\n"
                      "      gone[#gone + 1] = pos + j - 1\n"
                      "      bytes = bytes + #e\n"
                      "      if head == pos + j - 1 then head = head + 1 end\n"
                      "      if left == 0 then break end\n"
                      "    end\n"
                      "  end\n"
                      "  pos = last + 1\n"
                      "end\n"
                      "if #gone == 0 then return 0 end\n"
                      "if #gone == len then\n"
                      "  redis.call('DEL', KEYS[2], KEYS[3])\n"
                      "  return 0\n"
                      "end\n"
                      "if head == #gone then\n"
                      "  redis.call('LTRIM', KEYS[2], head, -1)\n"
                      "else\n"
                      "  for _, p in ipairs(gone) do redis.call('LSET', KEYS[2], p, '') end\n"
                      "  redis.call('LREM', KEYS[2], #gone, '')\n"
                      "end\n"
                      "redis.call('DECRBY', KEYS[3], bytes)\n"
                      "return 0\n",
    /* KEYS: sessions index. ARGV: cursor. One batch of {cursor, {sess key, state, ...}}; index
     * entries whose session expired are dropped on the way. */
    [RDS_SCRIPT_SCAN] = "local r = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', 1000)\n"
                        "local out = {}\n"
                        "for _, k in ipairs(r[2]) do\n"
                        "  local v = redis.call('GET', k)\n"
                        "  if v then out[#out + 1] = k; out[#out + 1] = v\n"
                        "  else redis.call('SREM', KEYS[1], k) end\n"
                        "end\n"
                        "return {r[1], out}\n",
    /* KEYS: sessions index. ARGV: cursor, owner. Like scan, but only the sessions whose owner
     * entry (the sess key with "owner" for "sess") names owner. */
    [RDS_SCRIPT_SCAN_OWNED] =
        "local r = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', 1000)\n"
        "local out = {}\n"
        "for _, k in ipairs(r[2]) do\n"
        "  local v = redis.call('GET', k)\n"
        "  if not v then redis.call('SREM', KEYS[1], k)\n"
        "  elseif redis.call('HGET', string.sub(k, 1, -5) .. 'owner', 'node') == ARGV[2] then\n"
        "    out[#out + 1] = k; out[#out + 1] = v\n"
        "  end\n"
        "end\n"
        "return {r[1], out}\n",
    /* KEYS: owner. ARGV: dead node id, node id. A claim that only a dead owner's current entry
     * allows. Returns {epoch, dead node, its epoch}, or {1} / {1, owner, epoch} unchanged. */
    [RDS_SCRIPT_ADOPT] =
        RDS_LUA_NEXT_EPOCH "local prev = redis.call('HMGET', KEYS[1], 'node', 'epoch')\n"
                           "if prev[1] ~= ARGV[1] then\n"
                           "  if prev[1] then return {1, prev[1], prev[2]} end\n"
                           "  return {1}\n"
                           "end\n"
                           "local es = next_epoch(prev[2])\n"
                           "redis.call('HSET', KEYS[1], 'node', ARGV[2], 'epoch', es)\n"
                           "return {es, prev[1], prev[2]}\n",
    /* KEYS: adopt. ARGV: node id, ttl ms. 1 while another node holds it. */
    [RDS_SCRIPT_ADOPT_LOCK] = "local cur = redis.call('GET', KEYS[1])\n"
                              "if cur and cur ~= ARGV[1] then return 1 end\n"
                              "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
                              "return 0\n",
    /* KEYS: member, members index, nodes. ARGV: info, ttl ms, node id. */
    [RDS_SCRIPT_HEARTBEAT] = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
                             "redis.call('SADD', KEYS[2], KEYS[1])\n"
                             "redis.call('SADD', KEYS[3], ARGV[3])\n"
                             "return 0\n",
    /* KEYS: member, members index. */
    [RDS_SCRIPT_LEAVE] = "redis.call('DEL', KEYS[1])\n"
                         "redis.call('SREM', KEYS[2], KEYS[1])\n"
                         "return 0\n",
    /* KEYS: members index. Returns {member key, info, ...}; index entries whose member key
     * expired are dropped on the way. A cluster has few members: one reply holds them all. */
    [RDS_SCRIPT_MEMBERS] = "local out = {}\n"
                           "for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
                           "  local v = redis.call('GET', k)\n"
                           "  if v then out[#out + 1] = k; out[#out + 1] = v\n"
                           "  else redis.call('SREM', KEYS[1], k) end\n"
                           "end\n"
                           "return out\n",
    /* KEYS: nodes. ARGV: the member key prefix. The node ids recorded by a heartbeat whose
     * member key is gone, escaped into the key as cmd_tagged_key does. */
    [RDS_SCRIPT_GONE] =
        "local out = {}\n"
        "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
        "  local e = string.gsub(id, '[%%}]', {['%'] = '%25', ['}'] = '%7D'})\n"
        "  if redis.call('EXISTS', ARGV[1] .. '{' .. e .. '}') == 0 then out[#out + 1] = id end\n"
        "end\n"
        "return out\n",
    /* KEYS: parked. ARGV: max. Pops up to max messages from the head: {msg...}. */
    [RDS_SCRIPT_PARK_TAKE] = "local len = redis.call('LLEN', KEYS[1])\n"
                             "local n = tonumber(ARGV[1])\n"
                             "if n > len then n = len end\n"
                             "if n <= 0 then return {} end\n"
                             "local out = redis.call('LRANGE', KEYS[1], 0, n - 1)\n"
                             "if n == len then redis.call('DEL', KEYS[1])\n"
                             "else redis.call('LTRIM', KEYS[1], n, -1) end\n"
                             "return out\n",
};

enum rds_script_rc {
    RDS_RC_OK = 0,
    RDS_RC_STALE = 1,
    RDS_RC_NO_SESSION = 2,
    RDS_RC_QUOTA = 3,
};

/* ---- types -------------------------------------------------------------------------------- */

enum rds_op {
    RDS_OP_CLAIM = 0,
    RDS_OP_RELEASE,
    RDS_OP_SAVE,
    RDS_OP_LOAD,
    RDS_OP_DELETE,
    RDS_OP_PUSH,
    RDS_OP_TRIM,
    RDS_OP_RETAIN_SET,
    RDS_OP_RETAIN_LOAD,
    RDS_OP_SESSION_SCAN,
    RDS_OP_SCAN_OWNED,
    RDS_OP_ADOPT,
    RDS_OP_ADOPT_LOCK,
    RDS_OP_HEARTBEAT,
    RDS_OP_LEAVE,
    RDS_OP_MEMBERS,
    RDS_OP_PARK_PUSH,
    RDS_OP_PARK_TAKE,
    RDS_OP_GONE,
    RDS_OP_FORGET,
};

static const char *const rds_op_names[] = {
    "claim",      "release",     "save",         "load",       "delete", "push",       "trim",
    "retain_set", "retain_load", "session_scan", "scan_owned", "adopt",  "adopt_lock", "heartbeat",
    "leave",      "members",     "park_push",    "park_take",  "gone",   "forget",
};

enum rds_state {
    RDS_IDLE = 0,   /* no connection; the backoff timer starts the next attempt */
    RDS_RESOLVING,  /* waiting for getaddrinfo on the thread pool */
    RDS_CONNECTING, /* TCP connect in progress */
    RDS_HANDSHAKE,  /* AUTH, SELECT and SCRIPT LOAD sent, replies pending */
    RDS_UP,
};

struct rds_url {
    char *host; /* without IPv6 brackets */
    char *user; /* NULL: AUTH with the password alone */
    char *pass; /* NULL: no AUTH */
    int port;
    int db;
};

/* One retained message collected by a scan; field and value share one allocation. */
struct rds_pair {
    size_t seq; /* arrival order: of duplicates, the later one wins */
    size_t flen;
    size_t vlen;
    uint8_t data[]; /* field bytes, then value bytes */
};

struct rds_scan {
    char cursor[24];
    char *owner; /* scan_owned only */
    struct rds_pair **pairs;
    size_t n;
    size_t cap;
};

/* One request. Arguments are kept as offsets into data, which grows while they are built; the
 * argv handed to hiredis is made at send time, when an EVALSHA also learns its sha. */
struct rds_cmd {
    struct rds_cmd *next; /* live list, deadline order */
    struct rds_cmd *prev;
    struct store__req *r; /* NULL once completed while hiredis still holds this command */
    struct rds_scan *scan;
    uint64_t deadline_ms;
    uint64_t sent_ms;
    enum rds_op op;
    enum rds_script script;
    bool is_linked;
    bool is_sent;
    bool use_eval; /* the server lost its script cache: send the source */
    int argc;
    size_t off[RDS_ARGV_MAX];
    size_t len[RDS_ARGV_MAX];
    uint8_t *data;
    size_t used;
    size_t cap;
};

struct rds_store {
    uv_loop_t *loop;
    char *node_id;
    struct rds_url url;
    redisAsyncContext *ac; /* NULL when no connection is ours */
    enum rds_state state;
    uv_timer_t conn_timer;
    uv_timer_t cmd_timer;
    uv_getaddrinfo_t gai;
    int open_handles;
    bool is_resolving; /* gai is in use until its callback runs */
    bool is_refused;   /* the server rejected our credentials or database: fail fast */
    bool is_closing;
    bool is_outage_logged;
    uint64_t backoff_ms;
    uint64_t rand_state;
    unsigned hs_sent;
    unsigned hs_got;
    unsigned hs_id_step;   /* the handshake's CLIENT ID */
    unsigned hs_kill_step; /* its CLIENT KILL of the previous connection, or UINT_MAX */
    long long redis_id;    /* this connection's id at the server, 0 if unknown */
    long long hs_redis_id;
    char redis_addr[64]; /* and its address as the server names it: "ip:port", "[ip6]:port" */
    bool hs_failed;
    bool hs_refused;
    char sha[RDS_N_SCRIPTS][RDS_SHA_LEN + 1];
    struct rds_cmd *head; /* live requests, oldest deadline first */
    struct rds_cmd *tail;
};

#define RDS_FROM_FIELD(ptr, field)                                                                 \
    ((struct rds_store *)((char *)(ptr)-offsetof(struct rds_store, field)))

static void conn_backoff(struct rds_store *rs);
static void conn_retry_soon(struct rds_store *rs);
static void cmd_send(struct rds_store *rs, struct rds_cmd *c);

/* ---- URL ---------------------------------------------------------------------------------- */

static int url_fail(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        (void)snprintf(err, errlen, "redis URL: %s", what);
    return ERR_INVALID;
}

static int hex_val(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Copies [p, p+n) with %XX escapes decoded; NULL on a bad or NUL escape. */
static char *url_decode(const char *p, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] != '%') {
            out[j++] = p[i];
            continue;
        }
        hi = i + 2 < n ? hex_val(p[i + 1]) : -1;
        lo = i + 2 < n ? hex_val(p[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[j] = '\0';
    return out;
}

/* Parses a decimal in [min, max]; the whole of [p, p+n) must be digits. */
static bool parse_int(const char *p, size_t n, long min, long max, int *out)
{
    long v = 0;

    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

static bool host_char_ok(char ch, bool is_v6)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    if (is_v6)
        return ch == ':' || ch == '.' || ch == '%';
    return ch == '.' || ch == '-' || ch == '_';
}

static void url_free(struct rds_url *u)
{
    free(u->host);
    u->host = NULL;
    free(u->user);
    u->user = NULL;
    free(u->pass);
    u->pass = NULL;
}

/* USER:PASS or :PASS, percent-decoded. */
static int url_parse_userinfo(const char *p, size_t n, struct rds_url *u, char *err, size_t errlen)
{
    const char *colon = memchr(p, ':', n);

    if (!colon)
        return url_fail(err, errlen, "credentials must be USER:PASS or :PASS");
    if ((size_t)(colon - p) + 1 == n)
        return url_fail(err, errlen, "empty password");
    u->pass = url_decode(colon + 1, n - (size_t)(colon - p) - 1);
    if (colon > p)
        u->user = url_decode(p, (size_t)(colon - p));
    if (!u->pass || (colon > p && !u->user))
        return url_fail(err, errlen, "bad %-escape in credentials");
    return 0;
}

/* HOST[:PORT] or [V6][:PORT]. */
static int url_parse_hostport(const char *p, size_t n, struct rds_url *u, char *err, size_t errlen)
{
    const char *end = p + n;
    const char *h = p, *he, *port = NULL;
    bool is_v6 = n > 0 && p[0] == '[';

    if (is_v6) {
        h = p + 1;
        he = memchr(h, ']', (size_t)(end - h));
        if (!he)
            return url_fail(err, errlen, "unterminated [ in host");
        if (he + 1 < end && he[1] != ':')
            return url_fail(err, errlen, "unexpected characters after ]");
        if (he + 1 < end)
            port = he + 2;
    } else {
        he = memchr(h, ':', n);
        if (he)
            port = he + 1;
        else
            he = end;
    }
    if (he == h)
        return url_fail(err, errlen, "missing host");
    for (const char *q = h; q < he; q++) {
        if (!host_char_ok(*q, is_v6))
            return url_fail(err, errlen, "invalid character in host");
    }
    u->port = RDS_DEFAULT_PORT;
    if (port && !parse_int(port, (size_t)(end - port), 1, 65535, &u->port))
        return url_fail(err, errlen, "port must be a number from 1 to 65535");
    u->host = xstrndup(h, (size_t)(he - h));
    return 0;
}

/* redis://[USER:PASS@]HOST[:PORT][/DB]. The password never appears in err. */
static int url_parse(const char *url, struct rds_url *u, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    const char *p, *at, *slash;
    int rc;

    memset(u, 0, sizeof(*u));
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return url_fail(err, errlen, "must start with redis://");
    p = url + sizeof(scheme) - 1;
    /* Hosts and database numbers have no '@', so the last one ends the credentials even when
     * an unescaped password holds '@' or '/'. */
    at = strrchr(p, '@');
    if (at) {
        rc = url_parse_userinfo(p, (size_t)(at - p), u, err, errlen);
        if (rc < 0)
            goto out_fail;
        p = at + 1;
    }
    slash = strchr(p, '/');
    rc = url_parse_hostport(p, slash ? (size_t)(slash - p) : strlen(p), u, err, errlen);
    if (rc < 0)
        goto out_fail;
    if (slash && slash[1] && !parse_int(slash + 1, strlen(slash + 1), 0, 0x7fffffff, &u->db)) {
        rc = url_fail(err, errlen, "database must be a number");
        goto out_fail;
    }
    return 0;

out_fail:
    url_free(u);
    return rc;
}

/* ---- commands ----------------------------------------------------------------------------- */

static struct rds_cmd *cmd_new(struct store__req *r, enum rds_op op)
{
    struct rds_cmd *c = xcalloc(1, sizeof(*c));

    c->r = r;
    c->op = op;
    c->script = RDS_SCRIPT_NONE;
    c->cap = 256;
    c->data = xmalloc(c->cap);
    return c;
}

static void scan_free(struct rds_scan *sc)
{
    if (!sc)
        return;
    for (size_t i = 0; i < sc->n; i++)
        free(sc->pairs[i]);
    free(sc->pairs);
    free(sc->owner);
    free(sc);
}

static void cmd_free(struct rds_cmd *c)
{
    scan_free(c->scan);
    c->scan = NULL;
    free(c->data);
    c->data = NULL;
    free(c);
}

/* Appends bytes to the argument being built. */
static void cmd_put(struct rds_cmd *c, const void *p, size_t n)
{
    if (n > c->cap - c->used) {
        while (n > c->cap - c->used)
            c->cap *= 2;
        c->data = xrealloc(c->data, c->cap);
    }
    if (n)
        memcpy(c->data + c->used, p, n);
    c->used += n;
    c->len[c->argc - 1] += n;
}

static void cmd_arg_begin(struct rds_cmd *c)
{
    if (NEVER(c->argc >= RDS_ARGV_MAX))
        abort(); /* every command here has a fixed, small arity */
    c->off[c->argc] = c->used;
    c->len[c->argc] = 0;
    c->argc++;
}

static void cmd_arg(struct rds_cmd *c, const void *p, size_t n)
{
    cmd_arg_begin(c);
    cmd_put(c, p, n);
}

static void cmd_str(struct rds_cmd *c, const char *s)
{
    cmd_arg(c, s, strlen(s));
}

static void cmd_u64(struct rds_cmd *c, uint64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%" PRIu64, v);

    cmd_arg(c, b, (size_t)n);
}

/* shoal:v1:KIND{ID} or, with a suffix, shoal:v1:KIND{ID}:suffix. The braces make the id the
 * cluster hash tag, so all keys of one client id live in one slot, as a script needs. Redis
 * Cluster takes the tag up to the first '}', and hashes the whole key when the tag is empty, so
 * '}' (and '%', to keep the mapping one-to-one) are escaped as %7D and %25: the tag is then
 * always the whole id. */
static void cmd_tagged_key(struct rds_cmd *c, const char *kind, const char *id, const char *suffix)
{
    const char *run = id;

    cmd_arg_begin(c);
    cmd_put(c, RDS_PREFIX, sizeof(RDS_PREFIX) - 1);
    cmd_put(c, kind, strlen(kind));
    cmd_put(c, "{", 1);
    for (const char *p = id; *p; p++) {
        if (*p != '}' && *p != '%')
            continue;
        cmd_put(c, run, (size_t)(p - run));
        cmd_put(c, *p == '}' ? "%7D" : "%25", 3);
        run = p + 1;
    }
    cmd_put(c, run, strlen(run));
    cmd_put(c, "}", 1);
    if (suffix) {
        cmd_put(c, ":", 1);
        cmd_put(c, suffix, strlen(suffix));
    }
}

/* shoal:v1:{CID}:suffix: a key of one client id. */
static void cmd_key(struct rds_cmd *c, const char *client_id, const char *suffix)
{
    cmd_tagged_key(c, "", client_id, suffix);
}

/* EVALSHA <sha> <nkeys>: the first two are filled in at send time. */
static void cmd_script(struct rds_cmd *c, enum rds_script script, unsigned nkeys)
{
    c->script = script;
    cmd_arg(c, "", 0);
    cmd_arg(c, "", 0);
    cmd_u64(c, nkeys);
}

/* ---- the live list and the command timer -------------------------------------------------- */

static void on_cmd_timer(uv_timer_t *t);

static void cmd_link(struct rds_store *rs, struct rds_cmd *c)
{
    c->deadline_ms = uv_now(rs->loop) + RDS_COMMAND_TIMEOUT_MS;
    c->next = NULL;
    c->prev = rs->tail;
    if (rs->tail)
        rs->tail->next = c;
    else
        rs->head = c;
    rs->tail = c;
    c->is_linked = true;
    /* Deadlines only grow along the list, so only a new head needs the timer moved. */
    if (rs->head == c)
        (void)uv_timer_start(&rs->cmd_timer, on_cmd_timer, RDS_COMMAND_TIMEOUT_MS, 0);
}

static void cmd_unlink(struct rds_store *rs, struct rds_cmd *c)
{
    if (!c->is_linked)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        rs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        rs->tail = c->prev;
    c->next = NULL;
    c->prev = NULL;
    c->is_linked = false;
    /* A removed head leaves the timer early; it fires, finds nothing due and re-arms. */
    if (!rs->head)
        (void)uv_timer_stop(&rs->cmd_timer);
}

/* Completes the request and frees the command. Only for commands hiredis does not hold. */
static void cmd_finish(struct rds_store *rs, struct rds_cmd *c, int rc)
{
    cmd_unlink(rs, c);
    if (c->r)
        store__complete(c->r, rc);
    c->r = NULL;
    cmd_free(c);
}

/* Drops the connection, if any. hiredis then runs every pending reply callback with no reply:
 * at once, or, inside one of its callbacks, as soon as that returns. */
static void conn_drop(struct rds_store *rs)
{
    redisAsyncContext *ac = rs->ac;

    rs->ac = NULL;
    rs->state = RDS_IDLE;
    if (ac)
        redisAsyncFree(ac);
}

static void on_cmd_timer(uv_timer_t *t)
{
    struct rds_store *rs = RDS_FROM_FIELD(t, cmd_timer);
    uint64_t now = uv_now(rs->loop);
    bool is_broken = false;
    struct rds_cmd *c, *next;

    for (c = rs->head; c && c->deadline_ms <= now; c = next) {
        next = c->next;
        cmd_unlink(rs, c);
        store__complete(c->r, ERR_TIMEOUT);
        c->r = NULL;
        /* A sent one stays with hiredis, which hands it back with its reply or the end of
         * the connection; only then is it freed. */
        if (c->is_sent && now - c->sent_ms >= RDS_STALL_MS)
            is_broken = true;
        else if (!c->is_sent)
            cmd_free(c);
    }
    if (is_broken) {
        log_ratelimited(LOG_LEVEL_WARN, "store",
                        "redis command timed out, reconnecting host=%s port=%d timeout_ms=%d",
                        rs->url.host, rs->url.port, RDS_COMMAND_TIMEOUT_MS);
        rs->is_outage_logged = true;
        conn_drop(rs);
        conn_backoff(rs);
    }
    if (rs->head)
        (void)uv_timer_start(&rs->cmd_timer, on_cmd_timer,
                             rs->head->deadline_ms > now ? rs->head->deadline_ms - now : 0, 0);
}

/* Takes a built command: sends it now when the connection is up, or keeps it for the next
 * one. A server that refused our credentials fails it at once: waiting would not help. */
static int cmd_submit(struct rds_store *rs, struct rds_cmd *c)
{
    if (rs->is_refused && rs->state != RDS_UP) {
        store__complete(c->r, ERR_IO);
        c->r = NULL;
        cmd_free(c);
        return 0;
    }
    cmd_link(rs, c);
    if (rs->state == RDS_UP)
        cmd_send(rs, c);
    else if (rs->state == RDS_IDLE && uv_timer_get_due_in(&rs->conn_timer) > RDS_WAITING_RETRY_MS)
        conn_retry_soon(rs);
    return 0;
}

/* ---- replies ------------------------------------------------------------------------------ */

static bool reply_is_str(const redisReply *y)
{
    return y && (y->type == REDIS_REPLY_STRING || y->type == REDIS_REPLY_STATUS);
}

static bool reply_u64(const redisReply *y, uint64_t *out)
{
    uint64_t v = 0;

    if (!reply_is_str(y) || y->len == 0 || y->len > 20)
        return false;
    for (size_t i = 0; i < y->len; i++) {
        unsigned d = (unsigned)(y->str[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int reply_code(const redisReply *y)
{
    if (y->type != REDIS_REPLY_INTEGER)
        return ERR_IO;
    switch (y->integer) {
    case RDS_RC_OK:
        return 0;
    case RDS_RC_STALE:
        return ERR_EXISTS;
    case RDS_RC_NO_SESSION:
        return ERR_NOT_FOUND;
    case RDS_RC_QUOTA:
        return ERR_QUOTA;
    default:
        return ERR_IO;
    }
}

static int reply_claim(struct store__req *r, const redisReply *y)
{
    uint64_t epoch, prev_epoch = 0;
    char *prev = NULL;

    if (y->type != REDIS_REPLY_ARRAY || (y->elements != 1 && y->elements != 3))
        return ERR_IO;
    if (!reply_u64(y->element[0], &epoch))
        return ERR_IO;
    if (y->elements == 3) {
        if (!reply_is_str(y->element[1]) || !reply_u64(y->element[2], &prev_epoch))
            return ERR_IO;
        prev = xstrndup(y->element[1]->str, y->element[1]->len);
    }
    store__req_set_claim(r, epoch, prev, prev_epoch);
    free(prev);
    return 0;
}

static int reply_load(struct store__req *r, const redisReply *y)
{
    const redisReply *q;
    size_t total = 0;

    if (y->type == REDIS_REPLY_NIL)
        return ERR_NOT_FOUND;
    if (y->type != REDIS_REPLY_ARRAY || y->elements != 2 || !reply_is_str(y->element[0]) ||
        y->element[1]->type != REDIS_REPLY_ARRAY)
        return ERR_IO;
    q = y->element[1];
    for (size_t i = 0; i < q->elements; i++) {
        if (!reply_is_str(q->element[i]))
            return ERR_IO;
        total += q->element[i]->len;
    }
    store__req_set_state(r, (const uint8_t *)y->element[0]->str, y->element[0]->len);
    store__req_blobs_begin(r, q->elements, total);
    for (size_t i = 0; i < q->elements; i++)
        store__req_add_blob(r, (const uint8_t *)q->element[i]->str, q->element[i]->len);
    return 0;
}

/* An adopt: a claim's reply, or a refusal that starts with the integer 1 and may name the
 * current owner. */
static int reply_adopt(struct store__req *r, const redisReply *y)
{
    uint64_t prev_epoch = 0;
    char *prev = NULL;

    if (y->type != REDIS_REPLY_ARRAY || y->elements == 0)
        return ERR_IO;
    if (y->element[0]->type != REDIS_REPLY_INTEGER)
        return y->elements == 3 ? reply_claim(r, y) : ERR_IO;
    if (y->element[0]->integer != RDS_RC_STALE || (y->elements != 1 && y->elements != 3))
        return ERR_IO;
    if (y->elements == 3) {
        if (!reply_is_str(y->element[1]) || !reply_u64(y->element[2], &prev_epoch))
            return ERR_IO;
        prev = xstrndup(y->element[1]->str, y->element[1]->len);
    }
    store__req_set_claim(r, 0, prev, prev_epoch);
    free(prev);
    return ERR_EXISTS;
}

/* An array of strings, handed over as blobs in order (taken parked messages). */
static int reply_blobs(struct store__req *r, const redisReply *y)
{
    size_t total = 0;

    if (y->type != REDIS_REPLY_ARRAY)
        return ERR_IO;
    for (size_t i = 0; i < y->elements; i++) {
        if (!reply_is_str(y->element[i]))
            return ERR_IO;
        total += y->element[i]->len;
    }
    store__req_blobs_begin(r, y->elements, total);
    for (size_t i = 0; i < y->elements; i++)
        store__req_add_blob(r, (const uint8_t *)y->element[i]->str, y->element[i]->len);
    return 0;
}

static int pair_cmp(const void *a, const void *b)
{
    const struct rds_pair *x = *(struct rds_pair *const *)a;
    const struct rds_pair *y = *(struct rds_pair *const *)b;
    size_t n = x->flen < y->flen ? x->flen : y->flen;
    int d = n ? memcmp(x->data, y->data, n) : 0;

    if (d)
        return d;
    if (x->flen != y->flen)
        return x->flen < y->flen ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The id inside a key made by cmd_tagged_key(): between head (prefix, kind and '{') and tail
 * ('}' and any suffix), with '}' and '%' unescaped. Returns its length in out (at most len
 * bytes), or 0 when the key does not have that shape. */
static size_t key_tag_id(const uint8_t *k, size_t len, const char *head, const char *tail,
                         uint8_t *out)
{
    size_t h = strlen(head), t = strlen(tail), n = 0;

    if (len <= h + t || memcmp(k, head, h) != 0 || memcmp(k + len - t, tail, t) != 0)
        return 0;
    for (size_t i = h; i < len - t; i++) {
        if (k[i] == '%' && i + 2 < len - t && memcmp(k + i, "%7D", 3) == 0) {
            out[n++] = '}';
            i += 2;
        } else if (k[i] == '%' && i + 2 < len - t && memcmp(k + i, "%25", 3) == 0) {
            out[n++] = '%';
            i += 2;
        } else {
            out[n++] = k[i];
        }
    }
    return n;
}

/* The client id inside a session key, shoal:v1:{CID}:sess. */
static size_t sess_key_id(const uint8_t *k, size_t len, uint8_t *out)
{
    return key_tag_id(k, len, RDS_PREFIX "{", "}:" RDS_SUFFIX_SESS, out);
}

static size_t member_key_id(const uint8_t *k, size_t len, uint8_t *out)
{
    return key_tag_id(k, len, RDS_PREFIX RDS_KIND_MEMBER "{", "}", out);
}

/* {member key, info, ...} → (node id, info) pairs. */
static int reply_members(struct store__req *r, const redisReply *y)
{
    size_t total = 0;
    uint8_t *id;

    if (y->type != REDIS_REPLY_ARRAY || y->elements % 2 != 0)
        return ERR_IO;
    for (size_t i = 0; i < y->elements; i++) {
        if (!reply_is_str(y->element[i]))
            return ERR_IO;
        total += y->element[i]->len; /* an id is never longer than its key */
    }
    store__req_blobs_begin(r, y->elements, total);
    for (size_t i = 0; i < y->elements; i += 2) {
        const redisReply *k = y->element[i], *v = y->element[i + 1];
        id = xmalloc(k->len);
        /* A key of another shape gives an empty id, as a session scan does. */
        store__req_add_blob(r, id, member_key_id((const uint8_t *)k->str, k->len, id));
        store__req_add_blob(r, (const uint8_t *)v->str, v->len);
        free(id);
    }
    return 0;
}

/* HSCAN may return an entry more than once (when the hash is resized between calls): sort by
 * topic and keep the last copy seen of each. */
static void scan_deliver(struct store__req *r, struct rds_scan *sc, bool with_names)
{
    size_t n = 0, total = 0;

    if (sc->n)
        qsort(sc->pairs, sc->n, sizeof(struct rds_pair *), pair_cmp);
    for (size_t i = 0; i < sc->n; i++) {
        struct rds_pair *p = sc->pairs[i];
        const struct rds_pair *nx = i + 1 < sc->n ? sc->pairs[i + 1] : NULL;
        if (nx && nx->flen == p->flen && memcmp(nx->data, p->data, p->flen) == 0) {
            free(p);
            continue;
        }
        sc->pairs[n++] = p;
        total += p->vlen + (with_names ? p->flen : 0);
    }
    sc->n = n;
    if (!with_names) {
        store__req_blobs_begin(r, n, total);
        for (size_t i = 0; i < n; i++)
            store__req_add_blob(r, sc->pairs[i]->data + sc->pairs[i]->flen, sc->pairs[i]->vlen);
        return;
    }
    /* Sessions: (client id, state) pairs. */
    store__req_blobs_begin(r, 2 * n, total);
    for (size_t i = 0; i < n; i++) {
        struct rds_pair *p = sc->pairs[i];
        uint8_t *id = xmalloc(p->flen + 1);
        size_t idlen = sess_key_id(p->data, p->flen, id);
        store__req_add_blob(r, id, idlen);
        store__req_add_blob(r, p->data + p->flen, p->vlen);
        free(id);
    }
}

static void scan_add(struct rds_scan *sc, const redisReply *f, const redisReply *v)
{
    struct rds_pair *p = xmalloc(sizeof(*p) + f->len + v->len);

    p->seq = sc->n;
    p->flen = f->len;
    p->vlen = v->len;
    memcpy(p->data, f->str, f->len);
    memcpy(p->data + f->len, v->str, v->len);
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 1024;
        sc->pairs = xrealloc(sc->pairs, sc->cap * sizeof(struct rds_pair *));
    }
    sc->pairs[sc->n++] = p;
}

static void scan_build(struct rds_cmd *c)
{
    c->argc = 0;
    c->used = 0;
    if (c->op == RDS_OP_SESSION_SCAN || c->op == RDS_OP_SCAN_OWNED) {
        cmd_script(c, c->op == RDS_OP_SESSION_SCAN ? RDS_SCRIPT_SCAN : RDS_SCRIPT_SCAN_OWNED, 1);
        cmd_str(c, RDS_KEY_SESSIONS);
        cmd_str(c, c->scan->cursor);
        if (c->op == RDS_OP_SCAN_OWNED)
            cmd_str(c, c->scan->owner);
        return;
    }
    cmd_str(c, "HSCAN");
    cmd_str(c, RDS_KEY_RETAINED);
    cmd_str(c, c->scan->cursor);
    cmd_str(c, "COUNT");
    cmd_str(c, RDS_SCAN_COUNT);
}

/* One HSCAN reply: collects it, then either asks for the next batch (with a fresh deadline:
 * the bound is per round trip) or finishes. Returns 1 while the scan goes on. */
static int reply_scan(struct rds_store *rs, struct rds_cmd *c, const redisReply *y)
{
    const redisReply *cur, *kv;

    if (y->type != REDIS_REPLY_ARRAY || y->elements != 2)
        return ERR_IO;
    cur = y->element[0];
    kv = y->element[1];
    if (!reply_is_str(cur) || cur->len == 0 || cur->len >= sizeof(c->scan->cursor) ||
        kv->type != REDIS_REPLY_ARRAY || kv->elements % 2 != 0)
        return ERR_IO;
    for (size_t i = 0; i < kv->elements; i++) {
        if (!reply_is_str(kv->element[i]))
            return ERR_IO;
    }
    for (size_t i = 0; i < kv->elements; i += 2)
        scan_add(c->scan, kv->element[i], kv->element[i + 1]);
    if (cur->len == 1 && cur->str[0] == '0') {
        scan_deliver(c->r, c->scan, c->op != RDS_OP_RETAIN_LOAD);
        return 0;
    }
    memcpy(c->scan->cursor, cur->str, cur->len);
    c->scan->cursor[cur->len] = '\0';
    scan_build(c);
    cmd_unlink(rs, c);
    cmd_link(rs, c);
    cmd_send(rs, c);
    return 1;
}

static void log_reply_error(const struct rds_cmd *c, const redisReply *y)
{
    char esc[160];

    log_ratelimited(LOG_LEVEL_WARN, "store", "redis command failed op=%s err=\"%s\"",
                    rds_op_names[c->op], log_escape(esc, sizeof(esc), y->str, y->len));
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds_store *rs = ac->data;
    struct rds_cmd *c = privdata;
    const redisReply *y = reply;
    int rc;

    c->is_sent = false;
    if (!c->r) {
        cmd_free(c); /* completed already (timed out), or the store is closing */
        return;
    }
    if (!y) {
        cmd_finish(rs, c, ERR_IO); /* connection lost: it may or may not have been applied */
        return;
    }
    if (y->type == REDIS_REPLY_ERROR) {
        if (c->script != RDS_SCRIPT_NONE && !c->use_eval && ac == rs->ac &&
            strncmp(y->str, "NOSCRIPT", 8) == 0) {
            c->use_eval = true;
            cmd_send(rs, c);
            return;
        }
        log_reply_error(c, y);
        cmd_finish(rs, c, ERR_IO);
        return;
    }
    switch (c->op) {
    case RDS_OP_CLAIM:
        rc = reply_claim(c->r, y);
        break;
    case RDS_OP_LOAD:
        rc = reply_load(c->r, y);
        break;
    case RDS_OP_ADOPT:
        rc = reply_adopt(c->r, y);
        break;
    case RDS_OP_MEMBERS:
        rc = reply_members(c->r, y);
        break;
    case RDS_OP_PARK_TAKE:
    case RDS_OP_GONE:
        rc = reply_blobs(c->r, y);
        break;
    case RDS_OP_RETAIN_SET:
    case RDS_OP_PARK_PUSH:
    case RDS_OP_FORGET:
        rc = y->type == REDIS_REPLY_INTEGER ? 0 : ERR_IO;
        break;
    case RDS_OP_RETAIN_LOAD:
    case RDS_OP_SESSION_SCAN:
    case RDS_OP_SCAN_OWNED:
        rc = reply_scan(rs, c, y);
        if (rc > 0)
            return;
        break;
    default:
        rc = reply_code(y);
        break;
    }
    if (rc == ERR_IO)
        log_ratelimited(LOG_LEVEL_WARN, "store", "unexpected redis reply op=%s type=%d",
                        rds_op_names[c->op], y->type);
    cmd_finish(rs, c, rc);
}

static void cmd_send(struct rds_store *rs, struct rds_cmd *c)
{
    const char *argv[RDS_ARGV_MAX];
    size_t lens[RDS_ARGV_MAX];

    for (int i = 0; i < c->argc; i++) {
        argv[i] = (const char *)c->data + c->off[i];
        lens[i] = c->len[i];
    }
    if (c->script != RDS_SCRIPT_NONE) {
        argv[0] = c->use_eval ? "EVAL" : "EVALSHA";
        lens[0] = strlen(argv[0]);
        argv[1] = c->use_eval ? rds_scripts[c->script] : rs->sha[c->script];
        lens[1] = strlen(argv[1]);
    }
    if (!rs->ac || redisAsyncCommandArgv(rs->ac, on_reply, c, c->argc, argv, lens) != REDIS_OK) {
        cmd_finish(rs, c, ERR_IO);
        return;
    }
    c->is_sent = true;
    c->sent_ms = uv_now(rs->loop);
}

/* ---- connection --------------------------------------------------------------------------- */

static uint64_t rand_next(struct rds_store *rs)
{
    /* xorshift64: jitter only needs to keep nodes from reconnecting in step. */
    uint64_t x = rs->rand_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rs->rand_state = x;
    return x;
}

static void on_conn_timer(uv_timer_t *t);

static uint64_t jitter(struct rds_store *rs, uint64_t ms)
{
    return ms / 2 + rand_next(rs) % (ms / 2 + 1);
}

/* Schedules the next connection attempt: half the backoff plus up to half again at random,
 * the backoff doubling up to its cap. While requests wait, the next attempt comes within about
 * a second whatever the backoff, so that a server back from an outage is found before their
 * deadlines; an idle store keeps the long backoff. */
static void conn_backoff(struct rds_store *rs)
{
    uint64_t delay = jitter(rs, rs->backoff_ms);

    if (rs->head && delay > RDS_WAITING_RETRY_MS)
        delay = jitter(rs, RDS_WAITING_RETRY_MS);
    rs->state = RDS_IDLE;
    rs->backoff_ms =
        rs->backoff_ms * 2 > RDS_BACKOFF_MAX_MS ? RDS_BACKOFF_MAX_MS : rs->backoff_ms * 2;
    (void)uv_timer_start(&rs->conn_timer, on_conn_timer, delay, 0);
}

/* A request now waits while the next attempt is still far off: bring it closer. */
static void conn_retry_soon(struct rds_store *rs)
{
    (void)uv_timer_start(&rs->conn_timer, on_conn_timer, jitter(rs, RDS_WAITING_RETRY_MS), 0);
}

/* Logs the first failure of an outage at warn; the retries that follow only at debug. */
static void conn_log_failure(struct rds_store *rs, const char *what, const char *detail)
{
    char esc[160];

    log_escape(esc, sizeof(esc), detail ? detail : "", detail ? strlen(detail) : 0);
    if (!rs->is_outage_logged)
        log_warn("store", "redis unavailable: %s host=%s port=%d err=\"%s\"", what, rs->url.host,
                 rs->url.port, esc);
    else
        log_debug("store", "redis retry failed: %s host=%s port=%d err=\"%s\"", what, rs->url.host,
                  rs->url.port, esc);
    rs->is_outage_logged = true;
}

static void conn_up(struct rds_store *rs)
{
    struct rds_cmd *c, *next;

    rs->state = RDS_UP;
    rs->backoff_ms = RDS_BACKOFF_MIN_MS;
    rs->is_refused = false;
    (void)uv_timer_stop(&rs->conn_timer);
    log_info("store", "redis connected host=%s port=%d db=%d", rs->url.host, rs->url.port,
             rs->url.db);
    rs->is_outage_logged = false;
    /* Everything waiting goes out now, in the order it was issued. */
    for (c = rs->head; c && rs->state == RDS_UP; c = next) {
        next = c->next;
        if (!c->is_sent)
            cmd_send(rs, c);
    }
}

/* Which connection the next handshake kills: its id and address together, so that a server
 * restarted since, which numbers its clients from 1 again, is never asked to kill another. */
static void remember_conn(struct rds_store *rs)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    int port = 0;

    rs->redis_id = 0;
    if (rs->hs_redis_id <= 0 || getsockname(rs->ac->c.fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        (void)inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        (void)snprintf(rs->redis_addr, sizeof(rs->redis_addr), "%s:%d", ip, port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        (void)inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        (void)snprintf(rs->redis_addr, sizeof(rs->redis_addr), "[%s]:%d", ip, port);
    } else {
        return;
    }
    rs->redis_id = rs->hs_redis_id;
}

/* Errors that mean this server will not take us as configured: retrying will not help. */
static bool is_refusal(const char *msg)
{
    if (strncmp(msg, "WRONGPASS", 9) == 0 || strncmp(msg, "NOAUTH", 6) == 0 ||
        strncmp(msg, "NOPERM", 6) == 0)
        return true;
    return strncmp(msg, "ERR", 3) == 0 && (strstr(msg, "AUTH") || strstr(msg, "password") ||
                                           strstr(msg, "DB index") || strstr(msg, "SELECT"));
}

static void hs_failed(struct rds_store *rs)
{
    struct rds_cmd *c, *next;

    conn_drop(rs); /* deferred by hiredis until this reply callback returns */
    if (rs->hs_refused) {
        /* Requests waiting for this server would only time out: fail them now. */
        rs->is_refused = true;
        for (c = rs->head; c; c = next) {
            next = c->next;
            if (!c->is_sent)
                cmd_finish(rs, c, ERR_IO);
        }
    }
    conn_backoff(rs);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds_store *rs = privdata;
    const redisReply *y = reply;
    unsigned first_script = rs->hs_sent - RDS_N_SCRIPTS;
    unsigned step;

    if (!y || ac != rs->ac)
        return; /* the connection went away; its disconnect or the deadline handles that */
    step = rs->hs_got++;
    if (step == rs->hs_id_step || step == rs->hs_kill_step) {
        /* Best effort: a server without CLIENT ID (before 5.0), or a user not allowed CLIENT,
         * still serves; only a late request's outcome stays open a little longer. */
        if (step == rs->hs_id_step && y->type == REDIS_REPLY_INTEGER)
            rs->hs_redis_id = y->integer;
    } else if (y->type == REDIS_REPLY_ERROR) {
        if (!rs->hs_failed) {
            char esc[160];
            rs->hs_refused = is_refusal(y->str);
            log_escape(esc, sizeof(esc), y->str, y->len);
            if (rs->hs_refused && !rs->is_refused) {
                log_error("store", "redis refused the connection host=%s port=%d err=\"%s\"",
                          rs->url.host, rs->url.port, esc);
                rs->is_outage_logged = true;
            } else {
                conn_log_failure(rs, "handshake failed", y->str);
            }
        }
        rs->hs_failed = true;
    } else if (step >= first_script) {
        if (!reply_is_str(y) || y->len != RDS_SHA_LEN)
            rs->hs_failed = true;
        else
            memcpy(rs->sha[step - first_script], y->str, RDS_SHA_LEN + 1);
    }
    if (rs->hs_got < rs->hs_sent)
        return;
    if (rs->hs_failed) {
        hs_failed(rs);
    } else {
        remember_conn(rs);
        conn_up(rs);
    }
}

static int hs_send(struct rds_store *rs, int argc, const char **argv)
{
    return redisAsyncCommandArgv(rs->ac, on_handshake, rs, argc, argv, NULL) == REDIS_OK ? 0 : -1;
}

/* AUTH and SELECT come before anything else on every connection; the script cache may have
 * been flushed by a restart, so the scripts are loaded again too. The previous connection is
 * killed at the server: a request that failed on it (timed out, or on the wire when it broke)
 * is then either applied already or never will be, once the handshake is answered. Otherwise
 * a stalled server could apply it later, after requests made since on this connection. */
static void conn_handshake(struct rds_store *rs)
{
    char db[16], id[24];
    const char *argv[6];
    int rc = 0;

    rs->state = RDS_HANDSHAKE;
    rs->hs_sent = 0;
    rs->hs_got = 0;
    rs->hs_failed = false;
    rs->hs_refused = false;
    if (rs->url.pass) {
        argv[0] = "AUTH";
        argv[1] = rs->url.user ? rs->url.user : rs->url.pass;
        argv[2] = rs->url.pass;
        rc |= hs_send(rs, rs->url.user ? 3 : 2, argv);
        rs->hs_sent++;
    }
    (void)snprintf(db, sizeof(db), "%d", rs->url.db);
    argv[0] = "SELECT";
    argv[1] = db;
    rc |= hs_send(rs, 2, argv);
    rs->hs_sent++;
    argv[0] = "CLIENT";
    argv[1] = "ID";
    rs->hs_id_step = rs->hs_sent++;
    rs->hs_redis_id = 0;
    rc |= hs_send(rs, 2, argv);
    rs->hs_kill_step = UINT_MAX;
    if (rs->redis_id > 0) {
        (void)snprintf(id, sizeof(id), "%lld", rs->redis_id);
        argv[1] = "KILL";
        argv[2] = "ID";
        argv[3] = id;
        argv[4] = "ADDR";
        argv[5] = rs->redis_addr;
        rs->hs_kill_step = rs->hs_sent++;
        rc |= hs_send(rs, 6, argv);
    }
    for (int i = 0; i < RDS_N_SCRIPTS; i++) {
        argv[0] = "SCRIPT";
        argv[1] = "LOAD";
        argv[2] = rds_scripts[i];
        rc |= hs_send(rs, 3, argv);
        rs->hs_sent++;
    }
    if (rc < 0)
        rs->hs_failed = true; /* the connection is closing; its disconnect follows */
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct rds_store *rs = cac->data;

    if (cac != rs->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns. */
        conn_log_failure(rs, "cannot connect", cac->errstr);
        rs->ac = NULL;
        conn_backoff(rs);
        return;
    }
    conn_handshake(rs);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct rds_store *rs = cac->data;

    (void)status;
    if (cac != rs->ac)
        return; /* we dropped it ourselves */
    /* Its pending requests have already completed with ERR_IO; hiredis frees it on return. */
    conn_log_failure(rs, "connection lost", cac->errstr);
    rs->ac = NULL;
    conn_backoff(rs);
}

static void conn_open(struct rds_store *rs, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, rs->url.port);

    if (!ac) {
        conn_log_failure(rs, "cannot connect", "out of memory");
        goto out_retry;
    }
    if (ac->err) {
        conn_log_failure(rs, "cannot connect", ac->errstr);
        goto out_free;
    }
    ac->data = rs;
    if (redisLibuvAttach(ac, rs->loop) != REDIS_OK) {
        conn_log_failure(rs, "cannot connect", "event loop attach failed");
        goto out_free;
    }
    (void)redisAsyncSetConnectCallback(ac, on_connect);
    (void)redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rs->ac = ac;
    rs->state = RDS_CONNECTING;
    return;

out_free:
    redisAsyncFree(ac);
out_retry:
    conn_backoff(rs);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

/* One connection attempt: its deadline covers resolving, connecting and the handshake. */
static void conn_start(struct rds_store *rs)
{
    struct in6_addr a6;
    struct addrinfo hints;
    int rc;

    if (rs->is_resolving) {
        conn_backoff(rs); /* a timed-out lookup is still running on the thread pool */
        return;
    }
    (void)uv_timer_start(&rs->conn_timer, on_conn_timer, RDS_CONNECT_TIMEOUT_MS, 0);
    if (inet_pton(AF_INET, rs->url.host, &a6) == 1 || inet_pton(AF_INET6, rs->url.host, &a6) == 1) {
        conn_open(rs, rs->url.host);
        return;
    }
    /* hiredis would resolve names with a blocking getaddrinfo on the loop. */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = uv_getaddrinfo(rs->loop, &rs->gai, on_resolved, rs->url.host, NULL, &hints);
    if (rc < 0) {
        conn_log_failure(rs, "cannot resolve", uv_strerror(rc));
        conn_backoff(rs);
        return;
    }
    rs->is_resolving = true;
    rs->state = RDS_RESOLVING;
}

static void rs_maybe_free(struct rds_store *rs);

/* The first IPv4 address, else the first IPv6 one: "localhost" often lists ::1 first while
 * redis-server binds 127.0.0.1 only. */
static const struct addrinfo *pick_addr(const struct addrinfo *res)
{
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            return a;
    }
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET6)
            return a;
    }
    return NULL;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct rds_store *rs = RDS_FROM_FIELD(req, gai);
    const struct addrinfo *a = status == 0 ? pick_addr(res) : NULL;
    char ip[INET6_ADDRSTRLEN] = "";

    rs->is_resolving = false;
    if (rs->is_closing) {
        uv_freeaddrinfo(res);
        rs_maybe_free(rs);
        return;
    }
    if (rs->state != RDS_RESOLVING) {
        uv_freeaddrinfo(res); /* the attempt timed out meanwhile */
        return;
    }
    if (a && a->ai_family == AF_INET)
        status = uv_ip4_name((const struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
    else if (a)
        status = uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, ip, sizeof(ip));
    else if (status == 0)
        status = UV_EAI_NONAME;
    uv_freeaddrinfo(res);
    if (status < 0) {
        conn_log_failure(rs, "cannot resolve", uv_strerror(status));
        conn_backoff(rs);
        return;
    }
    conn_open(rs, ip);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct rds_store *rs = RDS_FROM_FIELD(t, conn_timer);

    switch (rs->state) {
    case RDS_IDLE:
        conn_start(rs);
        break;
    case RDS_RESOLVING:
    case RDS_CONNECTING:
    case RDS_HANDSHAKE:
        conn_log_failure(rs, "connect timed out", NULL);
        if (rs->state == RDS_RESOLVING)
            (void)uv_cancel((uv_req_t *)&rs->gai);
        conn_drop(rs);
        conn_backoff(rs);
        break;
    case RDS_UP:
        break;
    }
}

/* ---- backend ops -------------------------------------------------------------------------- */

static int rds_open(struct store *s, const char *url, const char *node_id, void **impl, char *err,
                    size_t errlen)
{
    struct rds_store *rs = xcalloc(1, sizeof(*rs));
    int rc = url_parse(url, &rs->url, err, errlen);

    if (rc < 0) {
        free(rs);
        return rc;
    }
    rs->loop = store__loop(s);
    rs->node_id = xstrdup(node_id);
    rs->backoff_ms = RDS_BACKOFF_MIN_MS;
    rs->rand_state = uv_hrtime() ^ (uint64_t)(uintptr_t)rs;
    if (rs->rand_state == 0)
        rs->rand_state = 0x9e3779b97f4a7c15ull;
    /* Timer init only links the handle into the loop; libuv cannot fail it. */
    if (NEVER(uv_timer_init(rs->loop, &rs->conn_timer) != 0 ||
              uv_timer_init(rs->loop, &rs->cmd_timer) != 0))
        abort();
    rs->open_handles = 2;
    /* Connect on the first loop pass: opening never blocks and never fails on a server that
     * is not up yet. */
    (void)uv_timer_start(&rs->conn_timer, on_conn_timer, 0, 0);
    *impl = rs;
    return 0;
}

static void rs_maybe_free(struct rds_store *rs)
{
    if (rs->open_handles > 0 || rs->is_resolving)
        return;
    url_free(&rs->url);
    free(rs->node_id);
    rs->node_id = NULL;
    free(rs);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct rds_store *rs = h->data;

    rs->open_handles--;
    rs_maybe_free(rs);
}

static void rds_close(void *impl)
{
    struct rds_store *rs = impl;
    struct rds_cmd *c, *next;

    rs->is_closing = true;
    /* store.c cancels every request once this returns: detach them all first, so the reply
     * callbacks that hiredis runs while the connection is freed only free our commands. */
    for (c = rs->head; c; c = next) {
        next = c->next;
        cmd_unlink(rs, c);
        c->r = NULL;
        if (!c->is_sent)
            cmd_free(c);
    }
    conn_drop(rs);
    if (rs->is_resolving)
        (void)uv_cancel((uv_req_t *)&rs->gai);
    rs->conn_timer.data = rs;
    rs->cmd_timer.data = rs;
    uv_close((uv_handle_t *)&rs->conn_timer, on_timer_closed);
    uv_close((uv_handle_t *)&rs->cmd_timer, on_timer_closed);
}

static bool rds_is_up(void *impl)
{
    const struct rds_store *rs = impl;

    return rs->state == RDS_UP;
}

static int rds_owner_claim(void *impl, struct store__req *r, const char *client_id)
{
    struct rds_store *rs = impl;
    struct rds_cmd *c = cmd_new(r, RDS_OP_CLAIM);

    cmd_script(c, RDS_SCRIPT_CLAIM, 1);
    cmd_key(c, client_id, RDS_SUFFIX_OWNER);
    cmd_str(c, rs->node_id);
    return cmd_submit(rs, c);
}

static int rds_owner_release(void *impl, struct store__req *r, const char *client_id,
                             uint64_t epoch)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_RELEASE);

    cmd_script(c, RDS_SCRIPT_RELEASE, 1);
    cmd_key(c, client_id, RDS_SUFFIX_OWNER);
    cmd_u64(c, epoch);
    return cmd_submit(impl, c);
}

/* Save and delete touch every key of a session, the sessions index, and are fenced by epoch. */
static void cmd_session_keys(struct rds_cmd *c, enum rds_script script, const char *client_id,
                             uint64_t epoch)
{
    cmd_script(c, script, 5);
    cmd_key(c, client_id, RDS_SUFFIX_OWNER);
    cmd_key(c, client_id, RDS_SUFFIX_SESS);
    cmd_key(c, client_id, RDS_SUFFIX_QUEUE);
    cmd_key(c, client_id, RDS_SUFFIX_QBYTES);
    cmd_str(c, RDS_KEY_SESSIONS);
    cmd_u64(c, epoch);
}

static int rds_session_save(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                            struct store_blob state, uint64_t expiry_s)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_SAVE);

    cmd_session_keys(c, RDS_SCRIPT_SAVE, client_id, epoch);
    cmd_arg(c, state.p, state.len);
    cmd_u64(c, expiry_s > RDS_EXPIRY_MAX_S ? 0 : expiry_s);
    return cmd_submit(impl, c);
}

static int rds_session_load(void *impl, struct store__req *r, const char *client_id)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_LOAD);

    cmd_script(c, RDS_SCRIPT_LOAD, 2);
    cmd_key(c, client_id, RDS_SUFFIX_SESS);
    cmd_key(c, client_id, RDS_SUFFIX_QUEUE);
    return cmd_submit(impl, c);
}

static int rds_session_delete(void *impl, struct store__req *r, const char *client_id,
                              uint64_t epoch)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_DELETE);

    cmd_session_keys(c, RDS_SCRIPT_DELETE, client_id, epoch);
    return cmd_submit(impl, c);
}

static int rds_queue_push(void *impl, struct store__req *r, const char *client_id,
                          struct store_blob msg, uint32_t max_count, uint64_t max_bytes)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_PUSH);

    cmd_script(c, RDS_SCRIPT_PUSH, 3);
    cmd_key(c, client_id, RDS_SUFFIX_SESS);
    cmd_key(c, client_id, RDS_SUFFIX_QUEUE);
    cmd_key(c, client_id, RDS_SUFFIX_QBYTES);
    cmd_arg(c, msg.p, msg.len);
    cmd_u64(c, max_count);
    cmd_u64(c, max_bytes);
    return cmd_submit(impl, c);
}

static int rds_queue_trim(void *impl, struct store__req *r, const char *client_id, uint64_t epoch,
                          const struct store_blob *ids, size_t n)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_TRIM);

    cmd_script(c, RDS_SCRIPT_TRIM, 3);
    cmd_key(c, client_id, RDS_SUFFIX_OWNER);
    cmd_key(c, client_id, RDS_SUFFIX_QUEUE);
    cmd_key(c, client_id, RDS_SUFFIX_QBYTES);
    cmd_u64(c, epoch);
    cmd_arg_begin(c);
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)ids[i].len;
        uint8_t be[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
        cmd_put(c, be, sizeof(be));
        cmd_put(c, ids[i].p, ids[i].len);
    }
    cmd_u64(c, STORE_TRIM_SLACK);
    return cmd_submit(impl, c);
}

static int rds_retain_set(void *impl, struct store__req *r, const char *topic,
                          struct store_blob msg)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_RETAIN_SET);

    cmd_str(c, msg.len ? "HSET" : "HDEL");
    cmd_str(c, RDS_KEY_RETAINED);
    cmd_str(c, topic);
    if (msg.len)
        cmd_arg(c, msg.p, msg.len);
    return cmd_submit(impl, c);
}

/* A multi-round-trip scan: retained messages by HSCAN in batches rather than one HGETALL (a
 * hash of 100k messages would otherwise come back as one reply that stalls Redis and this loop
 * while it is built and parsed), and sessions through their index set the same way, so a
 * start-up never walks the whole keyspace. */
static int scan_start(void *impl, struct store__req *r, enum rds_op op)
{
    struct rds_cmd *c = cmd_new(r, op);

    c->scan = xcalloc(1, sizeof(*c->scan));
    c->scan->cursor[0] = '0';
    scan_build(c);
    return cmd_submit(impl, c);
}

static int rds_retain_load(void *impl, struct store__req *r)
{
    return scan_start(impl, r, RDS_OP_RETAIN_LOAD);
}

static int rds_session_scan(void *impl, struct store__req *r)
{
    return scan_start(impl, r, RDS_OP_SESSION_SCAN);
}

/* ---- members, adoption and parked messages ------------------------------------------------ */

static int rds_member_heartbeat(void *impl, struct store__req *r, const char *node_id,
                                struct store_blob info, uint32_t ttl_ms)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_HEARTBEAT);

    cmd_script(c, RDS_SCRIPT_HEARTBEAT, 3);
    cmd_tagged_key(c, RDS_KIND_MEMBER, node_id, NULL);
    cmd_str(c, RDS_KEY_MEMBERS);
    cmd_str(c, RDS_KEY_NODES);
    cmd_arg(c, info.p, info.len);
    cmd_u64(c, ttl_ms);
    cmd_str(c, node_id);
    return cmd_submit(impl, c);
}

static int rds_member_leave(void *impl, struct store__req *r, const char *node_id)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_LEAVE);

    cmd_script(c, RDS_SCRIPT_LEAVE, 2);
    cmd_tagged_key(c, RDS_KIND_MEMBER, node_id, NULL);
    cmd_str(c, RDS_KEY_MEMBERS);
    return cmd_submit(impl, c);
}

static int rds_member_list(void *impl, struct store__req *r)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_MEMBERS);

    cmd_script(c, RDS_SCRIPT_MEMBERS, 1);
    cmd_str(c, RDS_KEY_MEMBERS);
    return cmd_submit(impl, c);
}

static int rds_member_gone(void *impl, struct store__req *r)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_GONE);

    cmd_script(c, RDS_SCRIPT_GONE, 1);
    cmd_str(c, RDS_KEY_NODES);
    cmd_str(c, RDS_PREFIX RDS_KIND_MEMBER);
    return cmd_submit(impl, c);
}

static int rds_member_forget(void *impl, struct store__req *r, const char *node_id)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_FORGET);

    cmd_str(c, "SREM");
    cmd_str(c, RDS_KEY_NODES);
    cmd_str(c, node_id);
    return cmd_submit(impl, c);
}

static int rds_session_scan_owned(void *impl, struct store__req *r, const char *owner)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_SCAN_OWNED);

    c->scan = xcalloc(1, sizeof(*c->scan));
    c->scan->cursor[0] = '0';
    c->scan->owner = xstrdup(owner);
    scan_build(c);
    return cmd_submit(impl, c);
}

static int rds_owner_adopt(void *impl, struct store__req *r, const char *client_id,
                           const char *dead_owner)
{
    struct rds_store *rs = impl;
    struct rds_cmd *c = cmd_new(r, RDS_OP_ADOPT);

    cmd_script(c, RDS_SCRIPT_ADOPT, 1);
    cmd_key(c, client_id, RDS_SUFFIX_OWNER);
    cmd_str(c, dead_owner);
    cmd_str(c, rs->node_id);
    return cmd_submit(rs, c);
}

static int rds_node_adopt_lock(void *impl, struct store__req *r, const char *dead_node,
                               uint32_t ttl_ms)
{
    struct rds_store *rs = impl;
    struct rds_cmd *c = cmd_new(r, RDS_OP_ADOPT_LOCK);

    cmd_script(c, RDS_SCRIPT_ADOPT_LOCK, 1);
    cmd_tagged_key(c, RDS_KIND_ADOPT, dead_node, NULL);
    cmd_str(c, rs->node_id);
    cmd_u64(c, ttl_ms);
    return cmd_submit(rs, c);
}

static int rds_park_push(void *impl, struct store__req *r, const char *dead_node,
                         struct store_blob msg)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_PARK_PUSH);

    cmd_str(c, "RPUSH");
    cmd_tagged_key(c, RDS_KIND_PARKED, dead_node, NULL);
    cmd_arg(c, msg.p, msg.len);
    return cmd_submit(impl, c);
}

static int rds_park_take(void *impl, struct store__req *r, const char *dead_node, size_t max)
{
    struct rds_cmd *c = cmd_new(r, RDS_OP_PARK_TAKE);

    cmd_script(c, RDS_SCRIPT_PARK_TAKE, 1);
    cmd_tagged_key(c, RDS_KIND_PARKED, dead_node, NULL);
    cmd_u64(c, max);
    return cmd_submit(impl, c);
}

const struct store__backend_ops store__redis_ops = {
    .name = "redis",
    .is_durable = true,
    .open = rds_open,
    .close = rds_close,
    .is_up = rds_is_up,
    .owner_claim = rds_owner_claim,
    .owner_release = rds_owner_release,
    .session_save = rds_session_save,
    .session_load = rds_session_load,
    .session_delete = rds_session_delete,
    .queue_push = rds_queue_push,
    .queue_trim = rds_queue_trim,
    .retain_set = rds_retain_set,
    .retain_load = rds_retain_load,
    .session_scan = rds_session_scan,
    .member_heartbeat = rds_member_heartbeat,
    .member_leave = rds_member_leave,
    .member_list = rds_member_list,
    .member_gone = rds_member_gone,
    .member_forget = rds_member_forget,
    .session_scan_owned = rds_session_scan_owned,
    .owner_adopt = rds_owner_adopt,
    .node_adopt_lock = rds_node_adopt_lock,
    .park_push = rds_park_push,
    .park_take = rds_park_take,
};
