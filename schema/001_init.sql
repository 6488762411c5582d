-- umdq schema, version 1. Applied in order by the daemon (PRAGMA user_version tracks the last).
-- Times are seconds since the epoch (REAL). States are upper-case text. A sweep's state is
-- derived from its jobs (docs/api.md), so it is not stored.

CREATE TABLE sweeps (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    spec         TEXT NOT NULL,              -- canonical JSON of the latest submitted spec
    created      REAL NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    retry_on_failure INTEGER NOT NULL DEFAULT 0,
    swept        TEXT NOT NULL DEFAULT '[]'  -- JSON array of the dotted keys that vary
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    sweep_id     INTEGER NOT NULL REFERENCES sweeps(id),
    idx          INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('umd', 'command')),
    config       TEXT NOT NULL,              -- canonical JSON, without the seed
    config_hash  TEXT NOT NULL,              -- SHA-256 hex of config
    seed         INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'QUEUED' CHECK (state IN
                 ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'LOST', 'PREEMPTED', 'CANCELLED')),
    attempts     INTEGER NOT NULL DEFAULT 0, -- attempts started so far (the current one is n = attempts)
    max_attempts INTEGER NOT NULL DEFAULT 3,
    priority     INTEGER NOT NULL DEFAULT 0,
    device       TEXT NOT NULL DEFAULT 'auto' CHECK (device IN ('auto', 'cpu', 'cuda')),
    stall_timeout REAL NOT NULL DEFAULT 0,   -- seconds without step progress (0 = off)
    created      REAL NOT NULL,
    queued       REAL NOT NULL,              -- when it last entered QUEUED (dispatch latency)
    started      REAL,                       -- first attempt start
    finished     REAL,                       -- reached a final state
    step         INTEGER NOT NULL DEFAULT 0, -- latest step reported
    UNIQUE (sweep_id, config_hash, seed)
);
CREATE INDEX jobs_queue ON jobs(state, priority DESC, id);
CREATE INDEX jobs_sweep ON jobs(sweep_id, idx);

CREATE TABLE attempts (
    job_id       INTEGER NOT NULL REFERENCES jobs(id),
    n            INTEGER NOT NULL,           -- 1, 2, ...
    worker_id    TEXT NOT NULL,
    lease_token  TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL DEFAULT 'RUNNING' CHECK (state IN
                 ('RUNNING', 'SUCCEEDED', 'FAILED', 'LOST', 'PREEMPTED', 'CANCELLED')),
    started      REAL NOT NULL,
    heartbeat    REAL NOT NULL,
    ended        REAL,
    exit_code    INTEGER,
    signal       INTEGER,
    error        TEXT,                       -- last 64 KiB of stderr, or the reason
    step         INTEGER NOT NULL DEFAULT 0,
    step_time    REAL,                       -- when step last advanced (stall detection)
    cancel_reason TEXT,                      -- why the daemon sent `cancel` ('stalled', 'cancelled')
    log_bytes    INTEGER NOT NULL DEFAULT 0, -- bytes of this attempt's output stored so far
    log_header   INTEGER NOT NULL DEFAULT 0, -- 1 once the "== attempt N on W ==" line is written
    PRIMARY KEY (job_id, n)
);
CREATE INDEX attempts_open ON attempts(worker_id) WHERE state = 'RUNNING';

CREATE TABLE metrics (
    job_id       INTEGER NOT NULL REFERENCES jobs(id),
    attempt      INTEGER NOT NULL,
    key          TEXT NOT NULL,
    step         INTEGER NOT NULL,
    value        REAL,
    PRIMARY KEY (job_id, attempt, key, step)
) WITHOUT ROWID;

CREATE TABLE results (
    job_id       INTEGER NOT NULL REFERENCES jobs(id),
    attempt      INTEGER NOT NULL,
    key          TEXT NOT NULL,
    value        REAL,
    text         TEXT,                       -- for non-numeric results (artifact names, feature net)
    PRIMARY KEY (job_id, attempt, key)
) WITHOUT ROWID;

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,           -- the worker's name, e.g. "host/cpu0"
    host         TEXT NOT NULL,
    device       TEXT NOT NULL,              -- "cpu", "cuda:0"
    backend      TEXT NOT NULL,              -- "cpu", "cuda"
    capabilities TEXT NOT NULL DEFAULT '{}',
    pid          INTEGER,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('IDLE', 'BUSY', 'DEAD', 'GONE')),
    jobs_done    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    time         REAL NOT NULL,
    job_id       INTEGER,
    kind         TEXT NOT NULL,
    detail       TEXT
);
CREATE INDEX events_job ON events(job_id, id);
