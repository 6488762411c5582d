/* proto.h: the ZeroMQ messages between umdqd and umdq-worker (docs/protocol.md).
 *
 * Every message is one ZeroMQ frame holding one JSON object with "t" (type) and "v" (protocol
 * version). The daemon's ROUTER adds the worker's routing id in front; nothing else is framed. */
#ifndef UMDQ_PROTO_H
#define UMDQ_PROTO_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_MAX_MSG (4u << 20) /* bytes; larger frames are dropped as malformed */
#define PROTO_MAX_LOG_CHUNK (64u << 10)

#define PROTO_MAX_NAME 128 /* characters of a worker's name, host or device */

/* 1 when s is 1 to max printable ASCII characters (0x20 .. 0x7e, no control character): what a
 * worker's name, host and device must be, as they go into log lines, the database and the API. */
int proto_printable(const char *s, size_t max);

/* {"t": type, "v": 1}. Caller owns (cJSON_Delete). */
cJSON *proto_new(const char *type);
/* Compact text of msg. Caller frees. */
char *proto_print(const cJSON *msg);
/* Parse one frame: must be at most PROTO_MAX_MSG bytes of a JSON object with a string "t" and
 * "v" == 1. On success *out is owned by the caller and *type is borrowed from it. */
int proto_parse(const void *data, size_t len, cJSON **out, const char **type,
                char *err, size_t errlen);

/* Field readers that validate: 0 or UMDQ_EPROTO with a message naming the field. */
int proto_get_int(const cJSON *msg, const char *key, int64_t *out, char *err, size_t errlen);
int proto_get_str(const cJSON *msg, const char *key, const char **out, char *err, size_t errlen);

#endif
