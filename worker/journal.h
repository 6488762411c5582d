/* journal.h: what a worker sent about one attempt that the daemon has not yet said it stored
 * (docs/protocol.md, "Watermarks").
 *
 * The metrics messages of an attempt are numbered 1, 2, ...; its log messages carry byte ranges of
 * the attempt's output. The worker puts each message it sends into the attempt's journal, forgets
 * the entries a `stored` or `welcome` says the daemon has (metrics up to a number, log below a
 * byte), sends the rest again after every `welcome` and when a `stored` shows an entry unconfirmed
 * for a while, and destroys the journal when the attempt's `finished` is acknowledged (the daemon
 * applies a `finished` only once everything sent is stored).
 *
 * Memory is bounded: past the journal's limits (JOURNAL_METRICS_MAX bytes of points text,
 * JOURNAL_LOG_MAX bytes of log) the oldest entries are dropped. Messages carry "from", the oldest
 * number or byte the journal still holds, so the daemon gives up what was dropped (and marks the
 * gap in the log) instead of waiting for it. */
#ifndef UMDQ_WORKER_JOURNAL_H
#define UMDQ_WORKER_JOURNAL_H
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_METRICS_MAX (16u << 20) /* bytes of unconfirmed points text kept per attempt */
#define JOURNAL_LOG_MAX (8u << 20)      /* bytes of unconfirmed log kept per attempt */

typedef struct journal journal;

/* One message held by a journal. Borrowed: valid until the journal next changes. */
typedef struct {
    int is_log;       /* 0: a metrics message; 1: log bytes */
    int64_t seq;      /* metrics: its number (1, 2, ...) */
    int64_t offset;   /* log: the position of data[0] in the attempt's output */
    const char *data; /* metrics: the points as JSON text; log: the bytes (valid UTF-8, no NUL) */
    size_t len;       /* bytes of data */
} journal_entry;

/* A journal for attempt (job, attempt) with its lease (copied). *out is owned by the caller.
 * 0 or UMDQ_ENOMEM. */
int journal_new(int64_t job, int64_t attempt, const char *lease, journal **out);
void journal_destroy(journal **j); /* accepts NULL, NULLs the pointer */
/* Change the limits (bytes; 0 keeps JOURNAL_*_MAX), for tests. */
void journal_set_limits(journal *j, size_t metrics_max, size_t log_max);

int64_t journal_job(const journal *j);
int64_t journal_attempt(const journal *j);
const char *journal_lease(const journal *j); /* borrowed for the journal's life */

/* Hold a metrics message whose points are points_text (JSON text, taken: the journal frees it, also
 * on failure) and describe it in *out, to be sent now; it is numbered one past the previous one.
 * now: mono_ms(). 0 or UMDQ_ENOMEM. */
int journal_add_metrics(journal *j, char *points_text, int64_t now, journal_entry *out);
/* Hold len bytes of log at offset (data taken, NUL-terminated) and describe them in *out.
 * 0 or UMDQ_ENOMEM. */
int journal_add_log(journal *j, int64_t offset, char *data, size_t len, int64_t now, journal_entry *out);

int64_t journal_sent_seq(const journal *j); /* the number of the last metrics message, 0 before any */
int64_t journal_sent_log(const journal *j); /* the end of the log bytes added so far */
/* The oldest metrics number / log byte still held: what messages carry as "from". When nothing is
 * held, the next one to be sent. */
int64_t journal_from_seq(const journal *j);
int64_t journal_from_log(const journal *j);

/* The daemon stored metrics messages up to seq and log bytes below log: forget them. */
void journal_confirm(journal *j, int64_t seq, int64_t log);
/* 1 while something is held. */
int journal_unconfirmed(const journal *j);
/* 1 when the oldest entry held was last sent at least ms before now. */
int journal_overdue(const journal *j, int64_t now, int64_t ms);
/* Call send(ud, entry) for each entry held, oldest first (metrics, then log), and count them as
 * sent at now. */
void journal_resend(journal *j, int64_t now, void (*send)(void *ud, const journal *j, const journal_entry *e),
                    void *ud);
/* Entries and bytes dropped by the limits since the last call (to log it once); resets both. */
void journal_take_dropped(journal *j, int64_t *entries, int64_t *bytes);

#endif
