-- umdq schema, version 2: a sweep's summary without a scan of its jobs.
-- GET /api/sweeps/ID?jobs=0 is polled by CLIs and dashboards; counting a sweep's jobs by state
-- read every job row. The counts are now kept in sweep_counts by triggers, in the transaction
-- that changes a job, and a sweep's first start and last end come from two indexes (min and max
-- of an indexed column are single lookups).

CREATE TABLE sweep_counts (
    sweep_id     INTEGER PRIMARY KEY REFERENCES sweeps(id),
    total        INTEGER NOT NULL DEFAULT 0,
    queued       INTEGER NOT NULL DEFAULT 0,
    running      INTEGER NOT NULL DEFAULT 0,
    succeeded    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    lost         INTEGER NOT NULL DEFAULT 0,
    preempted    INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0
);

INSERT INTO sweep_counts(sweep_id, total, queued, running, succeeded, failed, lost, preempted, cancelled)
SELECT s.id, count(j.id), total(j.state = 'QUEUED'), total(j.state = 'RUNNING'),
       total(j.state = 'SUCCEEDED'), total(j.state = 'FAILED'), total(j.state = 'LOST'),
       total(j.state = 'PREEMPTED'), total(j.state = 'CANCELLED')
FROM sweeps s LEFT JOIN jobs j ON j.sweep_id = s.id GROUP BY s.id;

CREATE TRIGGER sweep_counts_new AFTER INSERT ON sweeps BEGIN
    INSERT INTO sweep_counts(sweep_id) VALUES (NEW.id);
END;

CREATE TRIGGER sweep_counts_job_new AFTER INSERT ON jobs BEGIN
    UPDATE sweep_counts SET total = total + 1,
        queued = queued + (NEW.state = 'QUEUED'), running = running + (NEW.state = 'RUNNING'),
        succeeded = succeeded + (NEW.state = 'SUCCEEDED'), failed = failed + (NEW.state = 'FAILED'),
        lost = lost + (NEW.state = 'LOST'), preempted = preempted + (NEW.state = 'PREEMPTED'),
        cancelled = cancelled + (NEW.state = 'CANCELLED')
    WHERE sweep_id = NEW.sweep_id;
END;

CREATE TRIGGER sweep_counts_job_state AFTER UPDATE OF state, sweep_id ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.sweep_id IS NOT NEW.sweep_id BEGIN
    UPDATE sweep_counts SET total = total - 1,
        queued = queued - (OLD.state = 'QUEUED'), running = running - (OLD.state = 'RUNNING'),
        succeeded = succeeded - (OLD.state = 'SUCCEEDED'), failed = failed - (OLD.state = 'FAILED'),
        lost = lost - (OLD.state = 'LOST'), preempted = preempted - (OLD.state = 'PREEMPTED'),
        cancelled = cancelled - (OLD.state = 'CANCELLED')
    WHERE sweep_id = OLD.sweep_id;
    UPDATE sweep_counts SET total = total + 1,
        queued = queued + (NEW.state = 'QUEUED'), running = running + (NEW.state = 'RUNNING'),
        succeeded = succeeded + (NEW.state = 'SUCCEEDED'), failed = failed + (NEW.state = 'FAILED'),
        lost = lost + (NEW.state = 'LOST'), preempted = preempted + (NEW.state = 'PREEMPTED'),
        cancelled = cancelled + (NEW.state = 'CANCELLED')
    WHERE sweep_id = NEW.sweep_id;
END;

CREATE TRIGGER sweep_counts_job_gone AFTER DELETE ON jobs BEGIN
    UPDATE sweep_counts SET total = total - 1,
        queued = queued - (OLD.state = 'QUEUED'), running = running - (OLD.state = 'RUNNING'),
        succeeded = succeeded - (OLD.state = 'SUCCEEDED'), failed = failed - (OLD.state = 'FAILED'),
        lost = lost - (OLD.state = 'LOST'), preempted = preempted - (OLD.state = 'PREEMPTED'),
        cancelled = cancelled - (OLD.state = 'CANCELLED')
    WHERE sweep_id = OLD.sweep_id;
END;

CREATE TRIGGER sweep_counts_sweep_gone AFTER DELETE ON sweeps BEGIN
    DELETE FROM sweep_counts WHERE sweep_id = OLD.id;
END;

CREATE INDEX jobs_sweep_started ON jobs(sweep_id, started);
CREATE INDEX jobs_sweep_finished ON jobs(sweep_id, finished);
