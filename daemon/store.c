/* store.c: the daemon's SQLite store: migrations, sweep submission, dispatch and the job state
 * machine, worker rows, the audit log and per-job log files (see store.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "embed.h"
#include "jsonx.h"
#include "store.h"
#include "umdq.h"
#include "util.h"

extern const umdq_embedded_file umdq_schema_files[];

/* Prepared statements, made on first use and kept for the store's life. */
enum {
    Q_SAVEPOINT, Q_RELEASE, Q_ROLLBACK_TO,
    Q_EVENT,
    Q_SWEEP_FIND, Q_SWEEP_INSERT, Q_SWEEP_UPDATE, Q_JOB_INSERT, Q_JOB_EXISTS,
    Q_CLAIM_PICK, Q_ATTEMPT_INSERT, Q_JOB_RUNNING,
    Q_LEASE, Q_ATTEMPT_INFO, Q_HEARTBEAT, Q_JOB_STEP, Q_METRIC_INSERT, Q_RESULT_INSERT,
    Q_LOG_STATE, Q_LOG_SET, Q_LOG_FILE_END, Q_ATTEMPT_END, Q_JOB_SET_FINAL, Q_JOB_SET_QUEUED, Q_WORKER_DONE,
    Q_ATTEMPT_DELETE, Q_JOB_UNCLAIM, Q_MARK_CANCEL,
    Q_JOB_STATE, Q_OPEN_ATTEMPT_OF, Q_JOB_REQUEUE, Q_SWEEP_JOBS_IN,
    Q_OPEN_ATTEMPTS, Q_WORKER_HELLO, Q_WORKER_SEEN, Q_WORKER_SEEN_STATE, Q_WORKERS_LIVE,
    Q_WORKER_DEAD, Q_METRICS_SEQ_SET,
    Q_COUNT
};

static const char *const sql_text[Q_COUNT] = {
    [Q_SAVEPOINT] = "SAVEPOINT op",
    [Q_RELEASE] = "RELEASE op",
    [Q_ROLLBACK_TO] = "ROLLBACK TO op",
    [Q_EVENT] = "INSERT INTO events(time, job_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
    [Q_SWEEP_FIND] = "SELECT id, swept FROM sweeps WHERE name = ?1",
    [Q_SWEEP_INSERT] = "INSERT INTO sweeps(name, spec, created, priority, max_attempts, "
                       "retry_on_failure, swept) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_SWEEP_UPDATE] = "UPDATE sweeps SET spec = ?2, priority = ?3, max_attempts = ?4, "
                       "retry_on_failure = ?5, swept = ?6 WHERE id = ?1",
    [Q_JOB_INSERT] = "INSERT OR IGNORE INTO jobs(sweep_id, idx, kind, config, config_hash, seed, "
                     "max_attempts, priority, device, stall_timeout, created, queued) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    [Q_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE sweep_id = ?1 AND config_hash = ?2 AND seed = ?3",
    [Q_CLAIM_PICK] = "SELECT id, attempts, sweep_id, seed, kind, config, stall_timeout, queued "
                     "FROM jobs WHERE state = 'QUEUED' AND kind IN (?1, ?2) "
                     "AND (kind = 'command' OR device = 'auto' OR device = ?3) "
                     "ORDER BY priority DESC, id LIMIT 1",
    [Q_ATTEMPT_INSERT] = "INSERT INTO attempts(job_id, n, worker_id, lease_token, started, heartbeat, "
                         "step_time) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
    [Q_JOB_RUNNING] = "UPDATE jobs SET state = 'RUNNING', attempts = ?2, "
                      "started = coalesce(started, ?3) WHERE id = ?1",
    [Q_LEASE] = "SELECT a.lease_token, a.state, j.attempts, a.step, a.cancel_reason, a.metrics_seq, "
                "a.log_bytes FROM attempts a JOIN jobs j "
                "ON j.id = a.job_id WHERE a.job_id = ?1 AND a.n = ?2",
    [Q_ATTEMPT_INFO] = "SELECT a.state, a.cancel_reason, a.worker_id, j.state, j.attempts, "
                       "j.max_attempts, j.stall_timeout, s.retry_on_failure "
                       "FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN sweeps s "
                       "ON s.id = j.sweep_id WHERE a.job_id = ?1 AND a.n = ?2",
    [Q_HEARTBEAT] = "UPDATE attempts SET heartbeat = ?3, "
                    "step_time = CASE WHEN ?4 > step THEN ?3 ELSE step_time END, "
                    "step = max(step, ?4) WHERE job_id = ?1 AND n = ?2",
    [Q_JOB_STEP] = "UPDATE jobs SET step = ?2 WHERE id = ?1 AND step != ?2",
    [Q_METRIC_INSERT] = "INSERT OR IGNORE INTO metrics(job_id, attempt, key, step, value) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_RESULT_INSERT] = "INSERT OR IGNORE INTO results(job_id, attempt, key, value, text) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_LOG_STATE] = "SELECT log_bytes, log_header, worker_id FROM attempts WHERE job_id = ?1 AND n = ?2",
    [Q_LOG_SET] = "UPDATE attempts SET log_bytes = ?3, log_header = ?4, log_end = ?5 WHERE job_id = ?1 AND n = ?2",
    [Q_LOG_FILE_END] = "SELECT max(log_end), total(log_end IS NULL AND log_header = 1) FROM attempts "
                       "WHERE job_id = ?1",
    [Q_ATTEMPT_END] = "UPDATE attempts SET state = ?3, ended = ?4, exit_code = ?5, signal = ?6, "
                      "error = ?7 WHERE job_id = ?1 AND n = ?2",
    [Q_JOB_SET_FINAL] = "UPDATE jobs SET state = ?2, finished = ?3 WHERE id = ?1",
    [Q_JOB_SET_QUEUED] = "UPDATE jobs SET state = 'QUEUED', queued = ?2, finished = NULL WHERE id = ?1",
    [Q_WORKER_DONE] = "UPDATE workers SET jobs_done = jobs_done + 1 WHERE id = ?1",
    [Q_ATTEMPT_DELETE] = "DELETE FROM attempts WHERE job_id = ?1 AND n = ?2",
    [Q_JOB_UNCLAIM] = "UPDATE jobs SET attempts = attempts - 1, "
                      "state = CASE WHEN state = 'RUNNING' THEN 'QUEUED' ELSE state END, "
                      "started = CASE WHEN attempts > 1 THEN started ELSE NULL END WHERE id = ?1",
    [Q_MARK_CANCEL] = "UPDATE attempts SET cancel_reason = ?3 WHERE job_id = ?1 AND n = ?2 "
                      "AND state = 'RUNNING'",
    [Q_JOB_STATE] = "SELECT state, attempts, stall_timeout FROM jobs WHERE id = ?1",
    [Q_OPEN_ATTEMPT_OF] = "SELECT n, lease_token, worker_id FROM attempts WHERE job_id = ?1 "
                          "AND state = 'RUNNING' ORDER BY n DESC LIMIT 1",
    [Q_JOB_REQUEUE] = "UPDATE jobs SET state = 'QUEUED', queued = ?2, finished = NULL, "
                      "max_attempts = attempts + (SELECT max_attempts FROM sweeps "
                      "WHERE sweeps.id = jobs.sweep_id) WHERE id = ?1",
    [Q_SWEEP_JOBS_IN] = "SELECT id FROM jobs WHERE sweep_id = ?1 AND state IN (?2, ?3, ?4, ?5) ORDER BY id",
    [Q_OPEN_ATTEMPTS] = "SELECT job_id, n, lease_token, worker_id FROM attempts WHERE state = 'RUNNING' "
                        "ORDER BY job_id",
    [Q_WORKER_HELLO] = "INSERT INTO workers(id, host, device, backend, capabilities, pid, first_seen, "
                       "last_seen, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) "
                       "ON CONFLICT(id) DO UPDATE SET host = excluded.host, device = excluded.device, "
                       "backend = excluded.backend, capabilities = excluded.capabilities, "
                       "pid = excluded.pid, last_seen = excluded.last_seen, state = excluded.state",
    [Q_WORKER_SEEN] = "UPDATE workers SET last_seen = ?2 WHERE id = ?1",
    [Q_WORKER_SEEN_STATE] = "UPDATE workers SET last_seen = ?2, state = ?3 WHERE id = ?1",
    [Q_WORKERS_LIVE] = "SELECT id FROM workers WHERE state IN ('IDLE', 'BUSY')",
    [Q_WORKER_DEAD] = "UPDATE workers SET state = 'DEAD' WHERE id = ?1",
    [Q_METRICS_SEQ_SET] = "UPDATE attempts SET metrics_seq = ?3 WHERE job_id = ?1 AND n = ?2",
};

struct store {
    sqlite3 *db;                 /* owned */
    char *log_dir;               /* owned; NULL = no log files */
    sqlite3_stmt *stmt[Q_COUNT]; /* owned, prepared lazily */
    int batch;                   /* inside store_batch_begin .. commit */
    int in_txn;                  /* a BEGIN IMMEDIATE is open */
    int dirty;                   /* the batch's transaction holds committed savepoints */
    int durable;                 /* the open transaction holds a state transition: sync at commit */
    int op_durable;              /* the mutation under way is one (it makes durable when it succeeds) */
    int wal;                     /* journal_mode is WAL (synchronous=NORMAL, see commit) */
    int migrations_applied;      /* at open */
};

#define SET_ERR(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); } while (0)

static int db_fail(store *s, int rc, char *err, size_t errlen, const char *what) {
    SET_ERR("database: %s: %s", what, sqlite3_errmsg(s->db));
    return rc == SQLITE_NOMEM ? UMDQ_ENOMEM : UMDQ_EIO;
}

static int exec_sql(store *s, const char *sql, char *err, size_t errlen) {
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        SET_ERR("database: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return rc == SQLITE_NOMEM ? UMDQ_ENOMEM : UMDQ_EIO;
    }
    return 0;
}

/* The statement for q, reset and with its bindings cleared; NULL (and err) on failure. */
static sqlite3_stmt *stmt(store *s, int q, char *err, size_t errlen) {
    sqlite3_stmt *st = s->stmt[q];
    if (!st) {
        if (sqlite3_prepare_v3(s->db, sql_text[q], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
            SET_ERR("database: prepare: %s", sqlite3_errmsg(s->db));
            return NULL;
        }
        s->stmt[q] = st;
    } else {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return st;
}

/* Run a statement that returns no rows. */
static int step_done(store *s, sqlite3_stmt *st, char *err, size_t errlen) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        SET_ERR("database: %s", sqlite3_errmsg(s->db));
        sqlite3_reset(st);
        return rc == SQLITE_NOMEM ? UMDQ_ENOMEM : UMDQ_EIO;
    }
    sqlite3_reset(st);
    return 0;
}

static int run_q(store *s, int q, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, q, err, errlen);
    if (!st) return UMDQ_EIO;
    return step_done(s, st, err, errlen);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

/* ---- transactions ------------------------------------------------------------------------------ */

/* Commit the open transaction. One that holds a state transition (a job or attempt changing
 * state, a sweep submitted) is on disk when this returns: the database runs with
 * synchronous=NORMAL in WAL mode, and the WAL is synced here after such a commit, which is what
 * synchronous=FULL would do (the level cannot change inside a transaction, and whether one holds a
 * transition is known only at its end). One that holds only reports (started, heartbeats, metrics,
 * results, log bytes, worker rows, events) is not synced: it survives a crash of umdqd and reaches
 * the disk with the next synced commit or checkpoint, so a power loss can take back only such
 * rows, never a state a message was sent about. Without WAL the database runs with FULL. */
static int commit(store *s, char *err, size_t errlen) {
    int durable = s->durable;
    s->durable = 0;
    int rc = exec_sql(s, "COMMIT", err, errlen);
    if (rc != 0 || !durable || !s->wal) return rc;
    sqlite3_file *wal = NULL;
    int r = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (r == SQLITE_OK && wal && wal->pMethods) r = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    else r = SQLITE_IOERR;
    if (r != SQLITE_OK) {
        SET_ERR("database: cannot sync the write-ahead log: %s", sqlite3_errstr(r));
        return UMDQ_EIO;
    }
    return 0;
}

/* Start one mutation: a transaction when none is open, then a savepoint. */
static int op_begin(store *s, char *err, size_t errlen) {
    int rc;
    if (!s->in_txn) {
        if ((rc = exec_sql(s, "BEGIN IMMEDIATE", err, errlen)) != 0) return rc;
        s->in_txn = 1;
    }
    if ((rc = run_q(s, Q_SAVEPOINT, err, errlen)) != 0) {
        if (!s->batch) {
            exec_sql(s, "ROLLBACK", NULL, 0);
            s->in_txn = 0;
        }
        return rc;
    }
    return 0;
}

/* Start a mutation that is a state transition: its transaction commits with synchronous=FULL. */
static int op_begin_durable(store *s, char *err, size_t errlen) {
    int rc = op_begin(s, err, errlen);
    if (rc == 0) s->op_durable = 1;
    return rc;
}

/* End a mutation: keep its writes when rc is 0, else undo them. Outside a batch, commit. */
static int op_end(store *s, int rc, char *err, size_t errlen) {
    if (rc == 0) {
        if (run_q(s, Q_RELEASE, err, errlen) != 0) rc = UMDQ_EIO;
    }
    /* a transition that did not happen (no job to claim, a stale lease) needs no sync */
    if (rc == 0 && s->op_durable) s->durable = 1;
    s->op_durable = 0;
    if (rc != 0) {
        run_q(s, Q_ROLLBACK_TO, NULL, 0);
        run_q(s, Q_RELEASE, NULL, 0);
    }
    if (!s->batch) {
        if (rc == 0) {
            int crc = commit(s, err, errlen);
            if (crc != 0) {
                exec_sql(s, "ROLLBACK", NULL, 0);
                rc = crc;
            }
        } else {
            exec_sql(s, "ROLLBACK", NULL, 0);
        }
        s->in_txn = 0;
        s->durable = 0;
    } else if (rc == 0) {
        s->dirty = 1;
    }
    return rc;
}

void store_batch_begin(store *s) {
    s->batch = 1;
    s->dirty = 0;
}

int store_batch_commit(store *s, char *err, size_t errlen) {
    int rc = 0;
    if (s->in_txn) {
        rc = commit(s, err, errlen);
        if (rc != 0) exec_sql(s, "ROLLBACK", NULL, 0);
    }
    s->in_txn = 0;
    s->batch = 0;
    s->dirty = 0;
    s->durable = 0;
    return rc;
}

void store_batch_abort(store *s) {
    if (s->in_txn) exec_sql(s, "ROLLBACK", NULL, 0);
    s->in_txn = 0;
    s->batch = 0;
    s->dirty = 0;
    s->durable = 0;
}

int store_batch_dirty(const store *s) { return s->dirty; }

/* ---- open and migrate -------------------------------------------------------------------------- */

/* The version number of a migration file "NNN_name.sql", or -1. */
static int migration_number(const char *name) {
    if (!name) return -1;
    int v = 0, digits = 0;
    while (*name >= '0' && *name <= '9' && digits < 6) v = v * 10 + (*name++ - '0'), digits++;
    if (digits == 0 || *name != '_') return -1;
    return v;
}

int store_known_version(void) {
    int v = 0;
    for (const umdq_embedded_file *f = umdq_schema_files; f->name; f++) {
        int n = migration_number(f->name);
        if (n > v) v = n;
    }
    return v;
}

static int user_version(sqlite3 *db) {
    sqlite3_stmt *st = NULL;
    int v = UMDQ_EIO;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_user_version(store *s) { return user_version(s->db); }

static int migrate(store *s, char *err, size_t errlen) {
    int have = user_version(s->db), known = store_known_version(), last = 0, rc;
    if (have < 0) {
        SET_ERR("database: cannot read its schema version: %s", sqlite3_errmsg(s->db));
        return UMDQ_EIO;
    }
    if (have > known) {
        SET_ERR("database schema version %d is newer than this umdqd knows (%d): use a newer umdq "
                "or another --home", have, known);
        return UMDQ_EFORMAT;
    }
    for (const umdq_embedded_file *f = umdq_schema_files; f->name; f++) {
        int n = migration_number(f->name);
        if (n <= last) {
            SET_ERR("schema: migration %s is out of order or misnamed (want NNN_name.sql)", f->name);
            return UMDQ_EFORMAT;
        }
        last = n;
        if (n <= have) continue;
        if ((rc = exec_sql(s, "BEGIN IMMEDIATE", err, errlen)) != 0) return rc;
        char *msg = NULL;
        if (sqlite3_exec(s->db, (const char *)f->data, NULL, NULL, &msg) != SQLITE_OK) {
            SET_ERR("schema: migration %s failed: %s", f->name, msg ? msg : "?");
            sqlite3_free(msg);
            exec_sql(s, "ROLLBACK", NULL, 0);
            return UMDQ_EIO;
        }
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", n);
        if ((rc = exec_sql(s, pragma, err, errlen)) != 0 || (rc = exec_sql(s, "COMMIT", err, errlen)) != 0) {
            exec_sql(s, "ROLLBACK", NULL, 0);
            return rc;
        }
        s->migrations_applied++;
    }
    return 0;
}

int store_migrations_applied(const store *s) { return s->migrations_applied; }

int store_open(const char *db_path, const char *log_dir, store **out, char *err, size_t errlen) {
    int rc = 0;
    store *s = calloc(1, sizeof *s); /* owned until handed to *out */
    *out = NULL;
    if (!s) return UMDQ_ENOMEM;
    if (log_dir && !(s->log_dir = strdup(log_dir))) {
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    if (sqlite3_open_v2(db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        SET_ERR("database %s: %s", db_path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        rc = UMDQ_EIO;
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    /* WAL persists in the file; a file system without shared memory may refuse it */
    sqlite3_stmt *jm = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &jm, NULL) == SQLITE_OK &&
        sqlite3_step(jm) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(jm, 0);
        s->wal = mode && sqlite3_stricmp(mode, "wal") == 0;
    }
    sqlite3_finalize(jm);
    /* with WAL, commit() syncs the transactions that hold state transitions itself */
    if ((rc = exec_sql(s, s->wal ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL", err, errlen)) != 0)
        goto fail;
    if ((rc = exec_sql(s, "PRAGMA foreign_keys = ON", err, errlen)) != 0) goto fail;
    if ((rc = migrate(s, err, errlen)) != 0) goto fail;
    *out = s;
    return 0;
fail:
    store_destroy(&s);
    return rc;
}

void store_destroy(store **sp) {
    if (!sp || !*sp) return;
    store *s = *sp;
    if (s->in_txn) exec_sql(s, "ROLLBACK", NULL, 0);
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(s->stmt[i]);
    if (s->db) sqlite3_close(s->db);
    free(s->log_dir);
    free(s);
    *sp = NULL;
}

struct sqlite3 *store_db(store *s) { return s->db; }

void store_checkpoint(store *s) {
    if (!s->in_txn) sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* ---- events ----------------------------------------------------------------------------------- */

static int event_add(store *s, int64_t job, const char *kind, const char *detail, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_EVENT, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_double(st, 1, now_s());
    if (job > 0) sqlite3_bind_int64(st, 2, job);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    bind_text(st, 4, detail);
    return step_done(s, st, err, errlen);
}

/* s as a JSON string literal (quoted and escaped, cut to 200 bytes) in buf. */
static const char *json_quote(const char *s, char *buf, size_t n) {
    char cut[201];
    snprintf(cut, sizeof cut, "%s", s ? s : "");
    cJSON *str = cJSON_CreateString(cut);
    char *text = str ? cJSON_PrintUnformatted(str) : NULL;
    snprintf(buf, n, "%s", text ? text : "\"\"");
    free(text);
    cJSON_Delete(str);
    return buf;
}

static int event_addf(store *s, int64_t job, const char *kind, char *err, size_t errlen,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int event_addf(store *s, int64_t job, const char *kind, char *err, size_t errlen,
                      const char *fmt, ...) {
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return event_add(s, job, kind, detail, err, errlen);
}

int store_event(store *s, int64_t job, const char *kind, const char *detail) {
    char err[256];
    int rc = op_begin(s, err, sizeof err);
    if (rc != 0) return rc;
    rc = event_add(s, job, kind, detail, err, sizeof err);
    return op_end(s, rc, err, sizeof err);
}

/* ---- sweeps ----------------------------------------------------------------------------------- */

/* How a job is dispatched: the device it needs and its stall timeout. Both are read from the
 * config only when its text names them, so a large sweep is not parsed twice. */
static void job_traits(const sweep_job *j, const char **device, double *stall) {
    int umd = strcmp(j->kind, "umd") == 0;
    *device = "auto";
    *stall = umd ? 1800.0 : 0.0;
    if (!strstr(j->config, "\"stall_timeout\":") && !(umd && strstr(j->config, "\"device\":"))) return;
    cJSON *cfg = cJSON_Parse(j->config);
    if (!cfg) return;
    const cJSON *st = json_path_get(cfg, "stall_timeout");
    if (cJSON_IsNumber(st) && st->valuedouble >= 0) *stall = st->valuedouble;
    if (umd) {
        const char *d = json_get_string(cfg, "train.device", "auto");
        if (strcmp(d, "cpu") == 0) *device = "cpu";
        else if (strcmp(d, "cuda") == 0) *device = "cuda";
    }
    cJSON_Delete(cfg);
}

/* The union of the old swept keys (JSON array text) and the new ones, as JSON text. Caller frees. */
static char *swept_union(const char *old_json, const sweep *sw) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    for (int i = 0; i < sw->nswept; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(sw->swept[i]));
    cJSON *old = old_json ? cJSON_Parse(old_json) : NULL;
    const cJSON *k;
    cJSON_ArrayForEach(k, old) {
        if (!cJSON_IsString(k)) continue;
        int seen = 0;
        for (int i = 0; i < sw->nswept && !seen; i++) seen = strcmp(sw->swept[i], k->valuestring) == 0;
        if (!seen) cJSON_AddItemToArray(arr, cJSON_CreateString(k->valuestring));
    }
    cJSON_Delete(old);
    char *text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return text;
}

static int submit_in_txn(store *s, const sweep *sw, store_submit_result *res, char *err, size_t errlen) {
    int rc = 0;
    char *swept = NULL; /* owned */
    double now = now_s();
    int64_t sweep_id = 0;
    sqlite3_stmt *st = stmt(s, Q_SWEEP_FIND, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_text(st, 1, sw->name, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        sweep_id = sqlite3_column_int64(st, 0);
        swept = swept_union((const char *)sqlite3_column_text(st, 1), sw);
    } else if (src == SQLITE_DONE) {
        swept = swept_union(NULL, sw);
    } else {
        rc = db_fail(s, src, err, errlen, "find sweep");
        goto fail;
    }
    sqlite3_reset(st);
    if (!swept) {
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    if (sweep_id) {
        if (!(st = stmt(s, Q_SWEEP_UPDATE, err, errlen))) { rc = UMDQ_EIO; goto fail; }
        sqlite3_bind_int64(st, 1, sweep_id);
        sqlite3_bind_text(st, 2, sw->spec, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, sw->priority);
        sqlite3_bind_int(st, 4, sw->max_attempts);
        sqlite3_bind_int(st, 5, sw->retry_on_failure != 0);
        sqlite3_bind_text(st, 6, swept, -1, SQLITE_STATIC);
        if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    } else {
        if (!(st = stmt(s, Q_SWEEP_INSERT, err, errlen))) { rc = UMDQ_EIO; goto fail; }
        sqlite3_bind_text(st, 1, sw->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sw->spec, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, now);
        sqlite3_bind_int(st, 4, sw->priority);
        sqlite3_bind_int(st, 5, sw->max_attempts);
        sqlite3_bind_int(st, 6, sw->retry_on_failure != 0);
        sqlite3_bind_text(st, 7, swept, -1, SQLITE_STATIC);
        if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
        sweep_id = sqlite3_last_insert_rowid(s->db);
    }
    sqlite3_stmt *ins = stmt(s, Q_JOB_INSERT, err, errlen);
    sqlite3_stmt *ev = stmt(s, Q_EVENT, err, errlen);
    if (!ins || !ev) { rc = UMDQ_EIO; goto fail; }
    /* bindings that are the same for every job */
    sqlite3_bind_int64(ins, 1, sweep_id);
    sqlite3_bind_int(ins, 7, sw->max_attempts > 0 ? sw->max_attempts : 1);
    sqlite3_bind_int(ins, 8, sw->priority);
    sqlite3_bind_double(ins, 11, now);
    sqlite3_bind_double(ev, 1, now);
    sqlite3_bind_text(ev, 3, "submitted", -1, SQLITE_STATIC);
    int added = 0;
    for (int i = 0; i < sw->njobs; i++) {
        const sweep_job *j = &sw->jobs[i];
        const char *device;
        double stall;
        job_traits(j, &device, &stall);
        sqlite3_bind_int(ins, 2, j->idx);
        sqlite3_bind_text(ins, 3, j->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, j->config, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 5, j->hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 6, j->seed);
        sqlite3_bind_text(ins, 9, device, -1, SQLITE_STATIC);
        sqlite3_bind_double(ins, 10, stall);
        int r = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (r != SQLITE_DONE) { rc = db_fail(s, r, err, errlen, "insert job"); goto fail; }
        if (sqlite3_changes(s->db) == 0) continue;
        added++;
        sqlite3_bind_int64(ev, 2, sqlite3_last_insert_rowid(s->db));
        r = sqlite3_step(ev);
        sqlite3_reset(ev);
        if (r != SQLITE_DONE) { rc = db_fail(s, r, err, errlen, "insert event"); goto fail; }
    }
    res->sweep_id = sweep_id;
    res->jobs = sw->njobs;
    res->added = added;
    res->existing = sw->njobs - added;
fail:
    if (st) sqlite3_reset(st);
    free(swept);
    return rc;
}

int store_submit(store *s, const sweep *sw, store_submit_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    if (!sw || !sw->name || !sw->spec || sw->njobs < 0) {
        SET_ERR("submit: incomplete sweep");
        return UMDQ_EINVAL;
    }
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = submit_in_txn(s, sw, res, err, errlen);
    /* the submit statements keep text bound by reference: drop the references before sw goes */
    if (s->stmt[Q_JOB_INSERT]) sqlite3_clear_bindings(s->stmt[Q_JOB_INSERT]);
    if (s->stmt[Q_SWEEP_INSERT]) sqlite3_clear_bindings(s->stmt[Q_SWEEP_INSERT]);
    if (s->stmt[Q_SWEEP_UPDATE]) sqlite3_clear_bindings(s->stmt[Q_SWEEP_UPDATE]);
    return op_end(s, rc, err, errlen);
}

int store_submit_preview(struct sqlite3 *db, const sweep *sw, int64_t *sweep_id, int *existing,
                         char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc = 0;
    *sweep_id = 0;
    *existing = 0;
    if (sqlite3_prepare_v2(db, "SELECT id FROM sweeps WHERE name = ?1", -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    sqlite3_bind_text(st, 1, sw->name, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) *sweep_id = sqlite3_column_int64(st, 0);
    else if (r != SQLITE_DONE) goto dberr;
    sqlite3_finalize(st);
    st = NULL;
    if (!*sweep_id) return 0;
    if (sqlite3_prepare_v2(db, sql_text[Q_JOB_EXISTS], -1, &st, NULL) != SQLITE_OK) goto dberr;
    for (int i = 0; i < sw->njobs; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *sweep_id);
        sqlite3_bind_text(st, 2, sw->jobs[i].hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, sw->jobs[i].seed);
        r = sqlite3_step(st);
        if (r == SQLITE_ROW) (*existing)++;
        else if (r != SQLITE_DONE) goto dberr;
    }
    sqlite3_finalize(st);
    return rc;
dberr:
    SET_ERR("database: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return UMDQ_EIO;
}

/* ---- dispatch ----------------------------------------------------------------------------------- */

void store_dispatch_clear(store_dispatch *d) {
    if (!d) return;
    free(d->config);
    memset(d, 0, sizeof *d);
}

static int claim_in_txn(store *s, const store_worker_fit *w, store_dispatch *d, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_CLAIM_PICK, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_text(st, 1, (w->kinds & STORE_KIND_UMD) ? "umd" : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, (w->kinds & STORE_KIND_COMMAND) ? "command" : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, w->backend ? w->backend : "", -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        sqlite3_reset(st);
        return UMDQ_ENOTFOUND;
    }
    if (r != SQLITE_ROW) {
        int rc = db_fail(s, r, err, errlen, "pick a job");
        sqlite3_reset(st);
        return rc;
    }
    double now = now_s();
    d->job = sqlite3_column_int64(st, 0);
    d->attempt = sqlite3_column_int64(st, 1) + 1;
    d->sweep = sqlite3_column_int64(st, 2);
    d->seed = sqlite3_column_int64(st, 3);
    snprintf(d->kind, sizeof d->kind, "%s", (const char *)sqlite3_column_text(st, 4));
    d->config = strdup((const char *)sqlite3_column_text(st, 5));
    d->stall_timeout = sqlite3_column_double(st, 6);
    d->waited = now - sqlite3_column_double(st, 7);
    if (d->waited < 0) d->waited = 0;
    sqlite3_reset(st);
    if (!d->config) return UMDQ_ENOMEM;
    if (random_hex(d->lease, STORE_LEASE_HEX) != 0) {
        SET_ERR("no random bytes for a lease");
        return UMDQ_EIO;
    }
    int rc;
    if (!(st = stmt(s, Q_ATTEMPT_INSERT, err, errlen))) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, d->job);
    sqlite3_bind_int64(st, 2, d->attempt);
    sqlite3_bind_text(st, 3, w->worker, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, d->lease, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 5, now);
    if ((rc = step_done(s, st, err, errlen)) != 0) return rc;
    if (!(st = stmt(s, Q_JOB_RUNNING, err, errlen))) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, d->job);
    sqlite3_bind_int64(st, 2, d->attempt);
    sqlite3_bind_double(st, 3, now);
    if ((rc = step_done(s, st, err, errlen)) != 0) return rc;
    char q[1300];
    return event_addf(s, d->job, "dispatched", err, errlen, "{\"attempt\":%lld,\"worker\":%s}",
                      (long long)d->attempt, json_quote(w->worker, q, sizeof q));
}

int store_claim(store *s, const store_worker_fit *w, store_dispatch *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!w || !w->worker || !w->kinds) return UMDQ_ENOTFOUND;
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = claim_in_txn(s, w, out, err, errlen);
    rc = op_end(s, rc, err, errlen);
    if (rc != 0) store_dispatch_clear(out);
    return rc;
}

/* ---- leases and reports ------------------------------------------------------------------------ */

/* 0 when the lease is current; *step, cancel_reason (16 bytes) and *marks (all may be NULL) get
 * the attempt's step, why the daemon asked to cancel it ("" when it did not) and its watermarks. */
static int lease_check_full(store *s, int64_t job, int64_t attempt, const char *lease, int64_t *step,
                            char *cancel_reason, store_marks *marks, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_LEASE, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    int r = sqlite3_step(st), rc;
    if (r == SQLITE_ROW) {
        const char *tok = (const char *)sqlite3_column_text(st, 0);
        const char *state = (const char *)sqlite3_column_text(st, 1);
        int64_t current = sqlite3_column_int64(st, 2);
        rc = (lease && tok && strcmp(tok, lease) == 0 && state && strcmp(state, "RUNNING") == 0 &&
              current == attempt) ? 0 : UMDQ_ESTALE;
        if (step) *step = sqlite3_column_int64(st, 3);
        if (cancel_reason) {
            const char *cr = (const char *)sqlite3_column_text(st, 4);
            snprintf(cancel_reason, 16, "%s", cr ? cr : "");
        }
        if (marks) {
            marks->metrics_seq = sqlite3_column_int64(st, 5);
            marks->log_bytes = sqlite3_column_int64(st, 6);
        }
    } else if (r == SQLITE_DONE) {
        rc = UMDQ_ESTALE;
    } else {
        rc = db_fail(s, r, err, errlen, "lease");
    }
    sqlite3_reset(st);
    if (rc == UMDQ_ESTALE)
        SET_ERR("stale lease for job %lld attempt %lld", (long long)job, (long long)attempt);
    return rc;
}

static int lease_check(store *s, int64_t job, int64_t attempt, const char *lease, char *err, size_t errlen) {
    return lease_check_full(s, job, attempt, lease, NULL, NULL, NULL, err, errlen);
}

int store_lease_check(store *s, int64_t job, int64_t attempt, const char *lease) {
    return lease_check(s, job, attempt, lease, NULL, 0);
}

int store_marks_get(store *s, int64_t job, int64_t attempt, const char *lease, store_marks *marks,
                    char *err, size_t errlen) {
    memset(marks, 0, sizeof *marks);
    return lease_check_full(s, job, attempt, lease, NULL, NULL, marks, err, errlen);
}

/* The log file of a job; 0 or UMDQ_EIO. The descriptor is appended to. */
static int log_open(store *s, int64_t job, int *fd, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%lld.log", s->log_dir, (long long)job);
    *fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (*fd < 0) {
        SET_ERR("log %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    return 0;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return UMDQ_EIO;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* The size of logs/JOB.log as of the last committed append, or -1 when not known (an attempt that
 * wrote to it before schema version 3 recorded no size). */
static int64_t log_committed_end(store *s, int64_t job) {
    sqlite3_stmt *st = stmt(s, Q_LOG_FILE_END, NULL, 0);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, job);
    int64_t end = -1;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_double(st, 1) == 0)
        end = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return end;
}

/* Append to the job's log: the attempt's header line when it is not written yet, then a gap mark
 * when the worker gave up bytes we lack (from > what is stored), then the part of data past what is
 * stored. A chunk that starts past what is stored while the worker still holds the bytes before it
 * (from <= stored) is not written: those bytes come again first (docs/protocol.md, "Watermarks").
 * Updates log_bytes / log_header. No bytes, no file. */
static int log_append(store *s, int64_t job, int64_t attempt, int64_t offset, int64_t from, const char *data,
                      size_t len, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_LOG_STATE, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        SET_ERR("no attempt %lld of job %lld", (long long)attempt, (long long)job);
        return UMDQ_ENOTFOUND;
    }
    int64_t have = sqlite3_column_int64(st, 0);
    int header = sqlite3_column_int(st, 1);
    char worker[256];
    snprintf(worker, sizeof worker, "%s", (const char *)sqlite3_column_text(st, 2));
    sqlite3_reset(st);
    int64_t end = offset + (int64_t)len;
    if (from > offset) from = offset;
    int64_t gap = from > have ? from - have : 0; /* bytes the worker gave up before we stored them */
    int64_t base = have + gap;                    /* where the next byte goes */
    int write_data = len > 0 && offset <= base && end > base;
    if (!gap && !write_data) return 0; /* a replay, nothing, or bytes that must wait for earlier ones */
    int fd = -1, rc;
    int64_t file_end = -1; /* the file's size after this append; -1: no file */
    if (!s->log_dir) goto record;
    if ((rc = log_open(s, job, &fd, err, errlen)) != 0) return rc;
    /* bytes past the last committed append were written by a turn that did not commit (a daemon
     * killed between the write and the commit, a failed commit): they will come again */
    int64_t committed = log_committed_end(s, job);
    struct stat fs;
    if (committed >= 0 && fstat(fd, &fs) == 0 && fs.st_size > committed && ftruncate(fd, committed) != 0) {
        SET_ERR("log of job %lld: %s", (long long)job, strerror(errno));
        close(fd);
        return UMDQ_EIO;
    }
    strbuf b;
    strbuf_init(&b);
    if (!header) {
        struct stat sb;
        char last = '\n';
        if (fstat(fd, &sb) == 0 && sb.st_size > 0 && pread(fd, &last, 1, sb.st_size - 1) != 1) last = '\n';
        strbuf_printf(&b, "%s== attempt %lld on %s ==\n", last == '\n' ? "" : "\n", (long long)attempt, worker);
    }
    if (gap) strbuf_printf(&b, "[umdqd: %lld bytes of output are missing here]\n", (long long)gap);
    if (write_data) strbuf_append(&b, data + (base - offset), (size_t)(end - base));
    rc = b.oom ? UMDQ_ENOMEM : (b.len ? write_all(fd, b.data, b.len) : 0);
    if (rc == UMDQ_EIO) SET_ERR("log of job %lld: %s", (long long)job, strerror(errno));
    if (rc == 0 && fstat(fd, &fs) == 0) file_end = fs.st_size;
    strbuf_free(&b);
    close(fd);
    if (rc != 0) return rc;
record:
    if (!(st = stmt(s, Q_LOG_SET, err, errlen))) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_int64(st, 3, write_data ? end : base);
    sqlite3_bind_int(st, 4, 1);
    if (file_end >= 0) sqlite3_bind_int64(st, 5, file_end);
    return step_done(s, st, err, errlen);
}

int store_started(store *s, int64_t job, int64_t attempt, const char *lease, int64_t pid,
                  char *err, size_t errlen) {
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = lease_check(s, job, attempt, lease, err, errlen)) != 0) goto fail;
    sqlite3_stmt *st = stmt(s, Q_HEARTBEAT, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_double(st, 3, now_s());
    sqlite3_bind_int64(st, 4, 0);
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    /* the job's log file and the attempt's header line wait for the first log bytes: an attempt
     * that prints nothing costs no file */
    rc = event_addf(s, job, "started", err, errlen, "{\"attempt\":%lld,\"pid\":%lld}",
                    (long long)attempt, (long long)pid);
fail:
    return op_end(s, rc, err, errlen);
}

int store_heartbeat(store *s, int64_t job, int64_t attempt, const char *lease, int64_t step,
                    int *advanced, char *cancel_reason, char *err, size_t errlen) {
    if (advanced) *advanced = 0;
    if (cancel_reason) cancel_reason[0] = 0;
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    int64_t old_step = 0;
    if ((rc = lease_check_full(s, job, attempt, lease, &old_step, cancel_reason, NULL, err, errlen)) != 0) goto fail;
    sqlite3_stmt *st = stmt(s, Q_HEARTBEAT, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_double(st, 3, now_s());
    sqlite3_bind_int64(st, 4, step);
    if (advanced) *advanced = step > old_step;
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    if (!(st = stmt(s, Q_JOB_STEP, err, errlen))) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, step);
    rc = step_done(s, st, err, errlen);
fail:
    return op_end(s, rc, err, errlen);
}

#define STORE_MAX_KEY 256

/* Move the attempt's metrics watermark for message seq (docs/protocol.md, "Watermarks"): the
 * worker no longer holds messages before from, so those not stored are given up (an event says
 * which); seq itself counts when it is the next one. *fresh is 0 for a message stored before. */
static int metrics_seq_advance(store *s, int64_t job, int64_t attempt, int64_t have, int64_t seq, int64_t from,
                               int *fresh, char *err, size_t errlen) {
    int64_t mark = have;
    int rc;
    *fresh = seq > have;
    if (from > seq) from = seq;
    if (from - 1 > mark) {
        if ((rc = event_addf(s, job, "metrics_gap", err, errlen, "{\"attempt\":%lld,\"first\":%lld,\"last\":%lld}",
                             (long long)attempt, (long long)(mark + 1), (long long)(from - 1))) != 0)
            return rc;
        mark = from - 1;
    }
    if (seq == mark + 1) mark = seq;
    if (mark == have) return 0;
    sqlite3_stmt *st = stmt(s, Q_METRICS_SEQ_SET, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_int64(st, 3, mark);
    return step_done(s, st, err, errlen);
}

int store_metrics(store *s, int64_t job, int64_t attempt, const char *lease, int64_t seq, int64_t from,
                  const cJSON *points, int *added, char *err, size_t errlen) {
    if (added) *added = 0;
    if (seq < 0) {
        SET_ERR("metrics: seq must not be negative");
        return UMDQ_EPROTO;
    }
    if (from <= 0) from = seq;
    /* a malformed message is not stored, but a numbered one still counts as delivered: otherwise
     * the attempt's watermark, and with it its `finished`, would wait for it for ever */
    int bad = 0, i = 0;
    const cJSON *p;
    if (!cJSON_IsArray(points)) {
        SET_ERR("metrics: points must be an array");
        bad = 1;
    }
    if (!bad) cJSON_ArrayForEach(p, points) {
        const cJSON *k = cJSON_GetArrayItem(p, 0), *st = cJSON_GetArrayItem(p, 1), *v = cJSON_GetArrayItem(p, 2);
        if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) != 3 || !cJSON_IsString(k) || !k->valuestring[0] ||
            strlen(k->valuestring) > STORE_MAX_KEY || !cJSON_IsNumber(st) || !(fabs(st->valuedouble) <= 9007199254740992.0) ||
            st->valuedouble != floor(st->valuedouble) || !(cJSON_IsNumber(v) || cJSON_IsNull(v))) {
            SET_ERR("metrics: point %d is not [key, integer step, number]", i);
            bad = 1;
            break;
        }
        i++;
    }
    if (bad && seq == 0) return UMDQ_EPROTO;
    char bad_err[160];
    if (bad) snprintf(bad_err, sizeof bad_err, "%s", err && errlen ? err : "metrics: malformed");
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    store_marks marks;
    if ((rc = lease_check_full(s, job, attempt, lease, NULL, NULL, &marks, err, errlen)) != 0) goto fail;
    int fresh = 1;
    if (seq > 0 && (rc = metrics_seq_advance(s, job, attempt, marks.metrics_seq, seq, from, &fresh, err, errlen)) != 0)
        goto fail;
    if (bad || !fresh) goto fail; /* rc 0: the watermark moved; nothing to insert */
    sqlite3_stmt *ins = stmt(s, Q_METRIC_INSERT, err, errlen);
    if (!ins) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(ins, 1, job);
    sqlite3_bind_int64(ins, 2, attempt);
    cJSON_ArrayForEach(p, points) {
        const cJSON *v = cJSON_GetArrayItem(p, 2);
        sqlite3_bind_text(ins, 3, cJSON_GetArrayItem(p, 0)->valuestring, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 4, (int64_t)cJSON_GetArrayItem(p, 1)->valuedouble);
        if (cJSON_IsNumber(v)) sqlite3_bind_double(ins, 5, v->valuedouble);
        else sqlite3_bind_null(ins, 5);
        int r = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (r != SQLITE_DONE) { rc = db_fail(s, r, err, errlen, "insert metric"); goto fail; }
        if (added) *added += sqlite3_changes(s->db);
    }
fail:
    if (s->stmt[Q_METRIC_INSERT]) sqlite3_clear_bindings(s->stmt[Q_METRIC_INSERT]);
    rc = op_end(s, rc, err, errlen);
    if (rc == 0 && bad) {
        SET_ERR("%s", bad_err);
        return UMDQ_EPROTO;
    }
    return rc;
}

/* Insert results (first write per key wins). Values: numbers (and booleans as 0/1) in value,
 * strings in text, anything else as its JSON text; null is skipped. */
static int results_insert(store *s, int64_t job, int64_t attempt, const cJSON *results, char *err, size_t errlen) {
    if (!results || cJSON_IsNull(results)) return 0;
    if (!cJSON_IsObject(results)) {
        SET_ERR("results must be an object");
        return UMDQ_EPROTO;
    }
    sqlite3_stmt *ins = stmt(s, Q_RESULT_INSERT, err, errlen);
    if (!ins) return UMDQ_EIO;
    const cJSON *r;
    int rc = 0;
    cJSON_ArrayForEach(r, results) {
        if (!r->string || !r->string[0] || strlen(r->string) > STORE_MAX_KEY || cJSON_IsNull(r)) continue;
        sqlite3_reset(ins);
        sqlite3_clear_bindings(ins);
        sqlite3_bind_int64(ins, 1, job);
        sqlite3_bind_int64(ins, 2, attempt);
        sqlite3_bind_text(ins, 3, r->string, -1, SQLITE_TRANSIENT);
        if (cJSON_IsNumber(r)) sqlite3_bind_double(ins, 4, r->valuedouble);
        else if (cJSON_IsBool(r)) sqlite3_bind_double(ins, 4, cJSON_IsTrue(r) ? 1.0 : 0.0);
        else if (cJSON_IsString(r)) sqlite3_bind_text(ins, 5, r->valuestring, -1, SQLITE_TRANSIENT);
        else {
            char *text = cJSON_PrintUnformatted(r);
            if (!text) return UMDQ_ENOMEM;
            sqlite3_bind_text(ins, 5, text, -1, SQLITE_TRANSIENT);
            free(text);
        }
        int x = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (x != SQLITE_DONE) {
            rc = db_fail(s, x, err, errlen, "insert result");
            break;
        }
    }
    return rc;
}

int store_results(store *s, int64_t job, int64_t attempt, const char *lease, const cJSON *results,
                  char *err, size_t errlen) {
    if (!cJSON_IsObject(results)) {
        SET_ERR("result: results must be an object");
        return UMDQ_EPROTO;
    }
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = lease_check(s, job, attempt, lease, err, errlen)) != 0) goto fail;
    rc = results_insert(s, job, attempt, results, err, errlen);
fail:
    return op_end(s, rc, err, errlen);
}

int store_log(store *s, int64_t job, int64_t attempt, const char *lease, int64_t offset, int64_t from,
              const char *data, size_t len, char *err, size_t errlen) {
    if (from < 0) from = offset;
    if (offset < 0 || (len > 0 && !data)) {
        SET_ERR("log: bad offset");
        return UMDQ_EPROTO;
    }
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = lease_check(s, job, attempt, lease, err, errlen)) != 0) goto fail;
    rc = log_append(s, job, attempt, offset, from, data, len, err, errlen);
fail:
    return op_end(s, rc, err, errlen);
}

/* ---- the end of an attempt ---------------------------------------------------------------------- */

typedef struct {
    char attempt_state[16];
    char cancel_reason[16];
    char worker[256];
    char job_state[16];
    int64_t attempts, max_attempts;
    double stall_timeout;
    int retry_on_failure;
} attempt_info;

static int attempt_info_get(store *s, int64_t job, int64_t attempt, attempt_info *ai, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_INFO, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW) {
        const char *cr = (const char *)sqlite3_column_text(st, 1);
        snprintf(ai->attempt_state, sizeof ai->attempt_state, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(ai->cancel_reason, sizeof ai->cancel_reason, "%s", cr ? cr : "");
        snprintf(ai->worker, sizeof ai->worker, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(ai->job_state, sizeof ai->job_state, "%s", (const char *)sqlite3_column_text(st, 3));
        ai->attempts = sqlite3_column_int64(st, 4);
        ai->max_attempts = sqlite3_column_int64(st, 5);
        ai->stall_timeout = sqlite3_column_double(st, 6);
        ai->retry_on_failure = sqlite3_column_int(st, 7);
    } else if (r == SQLITE_DONE) {
        SET_ERR("no attempt %lld of job %lld", (long long)attempt, (long long)job);
        rc = UMDQ_ENOTFOUND;
    } else {
        rc = db_fail(s, r, err, errlen, "attempt");
    }
    sqlite3_reset(st);
    return rc;
}

static int job_set_final(store *s, int64_t job, const char *state, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_JOB_SET_FINAL, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, now_s());
    return step_done(s, st, err, errlen);
}

static int job_set_queued(store *s, int64_t job, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_JOB_SET_QUEUED, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_double(st, 2, now_s());
    return step_done(s, st, err, errlen);
}

/* The job of a RUNNING attempt that ended with outcome (an attempt state) moves on. *state gets the
 * job's new state. Jobs not RUNNING (a user cancel) keep theirs. */
static int job_after_attempt(store *s, int64_t job, const attempt_info *ai, const char *outcome,
                             char *state, char *err, size_t errlen) {
    int rc;
    snprintf(state, 16, "%s", ai->job_state);
    if (strcmp(ai->job_state, "RUNNING") != 0) return 0;
    int budget = ai->attempts < ai->max_attempts, requeue;
    if (strcmp(outcome, "SUCCEEDED") == 0) requeue = 0;
    else if (strcmp(outcome, "FAILED") == 0) requeue = budget && ai->retry_on_failure;
    else requeue = budget; /* LOST, PREEMPTED, CANCELLED by the worker itself */
    if (requeue) {
        if ((rc = job_set_queued(s, job, err, errlen)) != 0) return rc;
        snprintf(state, 16, "QUEUED");
        return event_addf(s, job, "requeued", err, errlen, "{\"after\":\"%s\",\"attempts\":%lld,\"max_attempts\":%lld}",
                          outcome, (long long)ai->attempts, (long long)ai->max_attempts);
    }
    const char *final = strcmp(outcome, "SUCCEEDED") == 0 ? "SUCCEEDED" : "FAILED";
    if ((rc = job_set_final(s, job, final, err, errlen)) != 0) return rc;
    snprintf(state, 16, "%s", final);
    return 0;
}

static int attempt_end(store *s, int64_t job, int64_t attempt, const char *state, const int *exit_code,
                       const int *sig, const char *error, char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_END, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, now_s());
    if (exit_code) sqlite3_bind_int(st, 5, *exit_code);
    if (sig) sqlite3_bind_int(st, 6, *sig);
    if (error) {
        size_t n = strlen(error);
        const char *from = error;
        if (n > STORE_MAX_ERROR) { /* keep the tail, starting on a UTF-8 boundary */
            from = error + n - STORE_MAX_ERROR;
            while (*from && ((unsigned char)*from & 0xC0) == 0x80) from++;
        }
        sqlite3_bind_text(st, 7, from, -1, SQLITE_TRANSIENT);
    }
    return step_done(s, st, err, errlen);
}

static int finish_in_txn(store *s, int64_t job, int64_t attempt, const char *lease, const store_finish_report *r,
                         char *job_state, char *err, size_t errlen) {
    attempt_info ai;
    int rc;
    const char *astate;
    if (strcmp(r->status, "succeeded") == 0) astate = "SUCCEEDED";
    else if (strcmp(r->status, "failed") == 0) astate = "FAILED";
    else if (strcmp(r->status, "cancelled") == 0) astate = "CANCELLED";
    else if (strcmp(r->status, "preempted") == 0) astate = "PREEMPTED";
    else {
        SET_ERR("finished: unknown status \"%.40s\"", r->status);
        return UMDQ_EPROTO;
    }
    if ((rc = lease_check(s, job, attempt, lease, err, errlen)) != 0) return rc;
    if ((rc = attempt_info_get(s, job, attempt, &ai, err, errlen)) != 0) return rc;
    if ((rc = results_insert(s, job, attempt, r->results, err, errlen)) != 0) return rc;
    const char *error = r->error;
    char stalled[128];
    if (strcmp(ai.cancel_reason, "stalled") == 0 && strcmp(astate, "SUCCEEDED") != 0) {
        astate = "FAILED";
        snprintf(stalled, sizeof stalled, "stalled: no progress for %.0f s", ai.stall_timeout);
        error = stalled;
    }
    if ((rc = attempt_end(s, job, attempt, astate, r->has_exit_code ? &r->exit_code : NULL,
                          r->has_signal ? &r->signal : NULL, error, err, errlen)) != 0)
        return rc;
    sqlite3_stmt *st = stmt(s, Q_WORKER_DONE, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_text(st, 1, ai.worker, -1, SQLITE_TRANSIENT);
    if ((rc = step_done(s, st, err, errlen)) != 0) return rc;
    if (strcmp(astate, "SUCCEEDED") == 0 && strcmp(ai.job_state, "CANCELLED") == 0) {
        /* a user cancel that came too late: the attempt had completed before the cancel reached it,
         * so the job is done, with its results (docs/protocol.md, "Cancel") */
        if ((rc = job_set_final(s, job, "SUCCEEDED", err, errlen)) != 0) return rc;
        if ((rc = event_addf(s, job, "cancel_late", err, errlen, "{\"attempt\":%lld,\"job\":\"SUCCEEDED\"}",
                             (long long)attempt)) != 0)
            return rc;
        snprintf(job_state, 16, "SUCCEEDED");
    } else if ((rc = job_after_attempt(s, job, &ai, astate, job_state, err, errlen)) != 0) {
        return rc;
    }
    return event_addf(s, job, "finished", err, errlen, "{\"attempt\":%lld,\"status\":\"%s\",\"job\":\"%s\"}",
                      (long long)attempt, astate, job_state);
}

int store_finish(store *s, int64_t job, int64_t attempt, const char *lease, const store_finish_report *r,
                 char *job_state, char *err, size_t errlen) {
    char state[16] = "";
    if (!r || !r->status) {
        SET_ERR("finished: no status");
        return UMDQ_EPROTO;
    }
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = finish_in_txn(s, job, attempt, lease, r, state, err, errlen);
    rc = op_end(s, rc, err, errlen);
    if (job_state) snprintf(job_state, 16, "%s", rc == 0 ? state : "");
    return rc;
}

static int lost_in_txn(store *s, int64_t job, int64_t attempt, const char *why, char *state,
                       char *err, size_t errlen) {
    attempt_info ai;
    int rc;
    if ((rc = attempt_info_get(s, job, attempt, &ai, err, errlen)) != 0) return rc;
    if (strcmp(ai.attempt_state, "RUNNING") != 0) {
        SET_ERR("attempt %lld of job %lld is not open", (long long)attempt, (long long)job);
        return UMDQ_ESTALE;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "lost: %s", why ? why : "the worker is gone");
    if ((rc = attempt_end(s, job, attempt, "LOST", NULL, NULL, msg, err, errlen)) != 0) return rc;
    if ((rc = job_after_attempt(s, job, &ai, "LOST", state, err, errlen)) != 0) return rc;
    char q[1300];
    return event_addf(s, job, "lost", err, errlen, "{\"attempt\":%lld,\"worker\":%s,\"job\":\"%s\"}",
                      (long long)attempt, json_quote(ai.worker, q, sizeof q), state);
}

int store_lost(store *s, int64_t job, int64_t attempt, const char *why, char *job_state,
               char *err, size_t errlen) {
    char state[16] = "";
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = lost_in_txn(s, job, attempt, why, state, err, errlen);
    rc = op_end(s, rc, err, errlen);
    if (job_state) snprintf(job_state, 16, "%s", rc == 0 ? state : "");
    return rc;
}

int store_unclaim(store *s, int64_t job, int64_t attempt, const char *lease, char *err, size_t errlen) {
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = lease_check(s, job, attempt, lease, err, errlen)) != 0) goto fail;
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_DELETE, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    if (!(st = stmt(s, Q_JOB_UNCLAIM, err, errlen))) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    rc = event_addf(s, job, "busy", err, errlen, "{\"attempt\":%lld}", (long long)attempt);
fail:
    return op_end(s, rc, err, errlen);
}

int store_mark_cancel(store *s, int64_t job, int64_t attempt, const char *reason, char *err, size_t errlen) {
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    sqlite3_stmt *st = stmt(s, Q_MARK_CANCEL, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, attempt);
    bind_text(st, 3, reason);
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    if (sqlite3_changes(s->db) == 0) {
        SET_ERR("attempt %lld of job %lld is not open", (long long)attempt, (long long)job);
        rc = UMDQ_ESTALE;
        goto fail;
    }
    char q[1300];
    rc = event_addf(s, job, reason && strcmp(reason, "stalled") == 0 ? "stalled" : "cancel_sent", err, errlen,
                    "{\"attempt\":%lld,\"reason\":%s}", (long long)attempt, json_quote(reason, q, sizeof q));
fail:
    return op_end(s, rc, err, errlen);
}

/* ---- user actions ------------------------------------------------------------------------------- */

static int job_state_get(store *s, int64_t job, char state[16], char *err, size_t errlen) {
    sqlite3_stmt *st = stmt(s, Q_JOB_STATE, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW) snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
    else if (r == SQLITE_DONE) {
        SET_ERR("no job %lld", (long long)job);
        rc = UMDQ_ENOTFOUND;
    } else rc = db_fail(s, r, err, errlen, "job");
    sqlite3_reset(st);
    return rc;
}

int store_job_stall_timeout(store *s, int64_t job, double *seconds) {
    *seconds = 0;
    sqlite3_stmt *st = stmt(s, Q_JOB_STATE, NULL, 0);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) *seconds = sqlite3_column_double(st, 2);
    sqlite3_reset(st);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? UMDQ_ENOTFOUND : UMDQ_EIO;
}

/* The open attempt of a job, if any (open->job 0 when none). */
static int open_attempt_of(store *s, int64_t job, store_open_attempt *open, char *err, size_t errlen) {
    memset(open, 0, sizeof *open);
    sqlite3_stmt *st = stmt(s, Q_OPEN_ATTEMPT_OF, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW) {
        open->job = job;
        open->attempt = sqlite3_column_int64(st, 0);
        snprintf(open->lease, sizeof open->lease, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(open->worker, sizeof open->worker, "%s", (const char *)sqlite3_column_text(st, 2));
    } else if (r != SQLITE_DONE) rc = db_fail(s, r, err, errlen, "open attempt");
    sqlite3_reset(st);
    return rc;
}

static int cancel_in_txn(store *s, int64_t job, store_open_attempt *open, char *err, size_t errlen) {
    char state[16];
    int rc;
    memset(open, 0, sizeof *open);
    if ((rc = job_state_get(s, job, state, err, errlen)) != 0) return rc;
    if (strcmp(state, "QUEUED") != 0 && strcmp(state, "RUNNING") != 0) {
        SET_ERR("job %lld is already %s", (long long)job, state);
        return UMDQ_ESTATE;
    }
    if ((rc = job_set_final(s, job, "CANCELLED", err, errlen)) != 0) return rc;
    if ((rc = event_addf(s, job, "cancelled", err, errlen, "{\"was\":\"%s\"}", state)) != 0) return rc;
    if (strcmp(state, "RUNNING") != 0) return 0;
    if ((rc = open_attempt_of(s, job, open, err, errlen)) != 0) return rc;
    if (!open->job) return 0;
    sqlite3_stmt *st = stmt(s, Q_MARK_CANCEL, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, open->attempt);
    sqlite3_bind_text(st, 3, "cancelled", -1, SQLITE_STATIC);
    return step_done(s, st, err, errlen);
}

int store_job_cancel(store *s, int64_t job, store_open_attempt *open, char *err, size_t errlen) {
    store_open_attempt tmp;
    if (!open) open = &tmp;
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = cancel_in_txn(s, job, open, err, errlen);
    rc = op_end(s, rc, err, errlen);
    if (rc != 0) memset(open, 0, sizeof *open);
    return rc;
}

static int requeue_in_txn(store *s, int64_t job, char *err, size_t errlen) {
    char state[16];
    int rc;
    if ((rc = job_state_get(s, job, state, err, errlen)) != 0) return rc;
    if (strcmp(state, "QUEUED") == 0 || strcmp(state, "RUNNING") == 0) {
        SET_ERR("job %lld is %s", (long long)job, state);
        return UMDQ_ESTATE;
    }
    store_open_attempt open;
    if ((rc = open_attempt_of(s, job, &open, err, errlen)) != 0) return rc;
    if (open.job) { /* a cancelled attempt still stopping: close it, its report is now stale */
        if ((rc = attempt_end(s, job, open.attempt, "CANCELLED", NULL, NULL, "cancelled", err, errlen)) != 0)
            return rc;
    }
    sqlite3_stmt *st = stmt(s, Q_JOB_REQUEUE, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_double(st, 2, now_s());
    if ((rc = step_done(s, st, err, errlen)) != 0) return rc;
    return event_addf(s, job, "requeued", err, errlen, "{\"was\":\"%s\",\"by\":\"user\"}", state);
}

int store_job_requeue(store *s, int64_t job, char *err, size_t errlen) {
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    rc = requeue_in_txn(s, job, err, errlen);
    return op_end(s, rc, err, errlen);
}

/* The ids of the sweep's jobs in one of up to four states. *ids: caller frees. */
static int sweep_jobs_in(store *s, int64_t sweep, const char *const states[4], int64_t **ids, int *n,
                         char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st = stmt(s, Q_SWEEP_JOBS_IN, err, errlen);
    if (!st) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, sweep);
    for (int i = 0; i < 4; i++) sqlite3_bind_text(st, 2 + i, states[i], -1, SQLITE_STATIC);
    int cap = 0, r, rc = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *grown = realloc(*ids, (size_t)cap * sizeof **ids);
            if (!grown) { rc = UMDQ_ENOMEM; break; }
            *ids = grown;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    if (rc == 0 && r != SQLITE_DONE) rc = db_fail(s, r, err, errlen, "sweep jobs");
    sqlite3_reset(st);
    if (rc != 0) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

int store_sweep_cancel(store *s, int64_t sweep, int *cancelled, store_open_attempt **open, int *nopen,
                       char *err, size_t errlen) {
    static const char *const states[4] = {"QUEUED", "RUNNING", "", ""};
    int64_t *ids = NULL; /* owned */
    store_open_attempt *list = NULL; /* owned until handed to *open */
    int n = 0, nlist = 0;
    *cancelled = 0;
    *open = NULL;
    *nopen = 0;
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = sweep_jobs_in(s, sweep, states, &ids, &n, err, errlen)) != 0) goto fail;
    if (n > 0 && !(list = calloc((size_t)n, sizeof *list))) { rc = UMDQ_ENOMEM; goto fail; }
    for (int i = 0; i < n; i++) {
        if ((rc = cancel_in_txn(s, ids[i], &list[nlist], err, errlen)) != 0) goto fail;
        if (list[nlist].job) nlist++;
    }
fail:
    free(ids);
    rc = op_end(s, rc, err, errlen);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *cancelled = n;
    *open = list;
    *nopen = nlist;
    return 0;
}

int store_sweep_requeue(store *s, int64_t sweep, int *requeued, char *err, size_t errlen) {
    static const char *const states[4] = {"FAILED", "LOST", "PREEMPTED", "CANCELLED"};
    int64_t *ids = NULL; /* owned */
    int n = 0;
    *requeued = 0;
    int rc = op_begin_durable(s, err, errlen);
    if (rc != 0) return rc;
    if ((rc = sweep_jobs_in(s, sweep, states, &ids, &n, err, errlen)) != 0) goto fail;
    for (int i = 0; i < n && rc == 0; i++) rc = requeue_in_txn(s, ids[i], err, errlen);
fail:
    free(ids);
    rc = op_end(s, rc, err, errlen);
    if (rc == 0) *requeued = n;
    return rc;
}

/* ---- workers and housekeeping ------------------------------------------------------------------- */

int store_open_attempts(store *s, store_open_attempt **list, int *n, char *err, size_t errlen) {
    *list = NULL;
    *n = 0;
    sqlite3_stmt *st = stmt(s, Q_OPEN_ATTEMPTS, err, errlen);
    if (!st) return UMDQ_EIO;
    int cap = 0, r, rc = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            store_open_attempt *grown = realloc(*list, (size_t)cap * sizeof **list);
            if (!grown) { rc = UMDQ_ENOMEM; break; }
            *list = grown;
        }
        store_open_attempt *a = &(*list)[(*n)++];
        memset(a, 0, sizeof *a);
        a->job = sqlite3_column_int64(st, 0);
        a->attempt = sqlite3_column_int64(st, 1);
        snprintf(a->lease, sizeof a->lease, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(a->worker, sizeof a->worker, "%s", (const char *)sqlite3_column_text(st, 3));
    }
    if (rc == 0 && r != SQLITE_DONE) rc = db_fail(s, r, err, errlen, "open attempts");
    sqlite3_reset(st);
    if (rc != 0) {
        free(*list);
        *list = NULL;
        *n = 0;
    }
    return rc;
}

int store_worker_hello(store *s, const char *name, const char *host, const char *device, const char *backend,
                       const char *caps_json, int64_t pid, const char *state, char *err, size_t errlen) {
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    sqlite3_stmt *st = stmt(s, Q_WORKER_HELLO, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    bind_text(st, 1, name);
    bind_text(st, 2, host ? host : "");
    bind_text(st, 3, device ? device : "");
    bind_text(st, 4, backend ? backend : "");
    bind_text(st, 5, caps_json ? caps_json : "{}");
    sqlite3_bind_int64(st, 6, pid);
    sqlite3_bind_double(st, 7, now_s());
    bind_text(st, 8, state);
    if ((rc = step_done(s, st, err, errlen)) != 0) goto fail;
    char q[1300];
    rc = event_addf(s, 0, "worker_hello", err, errlen, "{\"worker\":%s,\"pid\":%lld}", json_quote(name, q, sizeof q),
                    (long long)pid);
fail:
    return op_end(s, rc, err, errlen);
}

int store_worker_seen(store *s, const char *name, const char *state, char *err, size_t errlen) {
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    sqlite3_stmt *st = stmt(s, state ? Q_WORKER_SEEN_STATE : Q_WORKER_SEEN, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    bind_text(st, 1, name);
    sqlite3_bind_double(st, 2, now_s());
    if (state) bind_text(st, 3, state);
    rc = step_done(s, st, err, errlen);
    char q[1300];
    if (rc == 0 && state && strcmp(state, "DEAD") == 0)
        rc = event_addf(s, 0, "worker_dead", err, errlen, "{\"worker\":%s}", json_quote(name, q, sizeof q));
fail:
    return op_end(s, rc, err, errlen);
}

int store_workers_dead_except(store *s, const char *const *live, int nlive, char *err, size_t errlen) {
    char **names = NULL; /* owned */
    int n = 0, cap = 0, r;
    int rc = op_begin(s, err, errlen);
    if (rc != 0) return rc;
    sqlite3_stmt *st = stmt(s, Q_WORKERS_LIVE, err, errlen);
    if (!st) { rc = UMDQ_EIO; goto fail; }
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        int alive = 0;
        for (int i = 0; i < nlive && !alive; i++) alive = strcmp(live[i], id) == 0;
        if (alive) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **grown = realloc(names, (size_t)cap * sizeof *names);
            if (!grown) { rc = UMDQ_ENOMEM; break; }
            names = grown;
        }
        if (!(names[n] = strdup(id))) { rc = UMDQ_ENOMEM; break; }
        n++;
    }
    if (rc == 0 && r != SQLITE_DONE) rc = db_fail(s, r, err, errlen, "workers");
    sqlite3_reset(st);
    for (int i = 0; i < n && rc == 0; i++) {
        if (!(st = stmt(s, Q_WORKER_DEAD, err, errlen))) { rc = UMDQ_EIO; break; }
        bind_text(st, 1, names[i]);
        char q[1300];
        if ((rc = step_done(s, st, err, errlen)) == 0)
            rc = event_addf(s, 0, "worker_dead", err, errlen, "{\"worker\":%s}", json_quote(names[i], q, sizeof q));
    }
fail:
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return op_end(s, rc, err, errlen);
}
