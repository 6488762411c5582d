-- umdq schema, version 3: what of an attempt's reports is stored (docs/protocol.md, "Watermarks").
-- A worker numbers the metrics messages of an attempt 1, 2, ...; metrics_seq is the highest n such
-- that messages 1..n are all stored (log_bytes, from version 1, is the log's counterpart). The
-- daemon tells the worker both, the worker sends again what they do not cover, and a `finished`
-- report is applied only once they cover what the worker says it sent.

ALTER TABLE attempts ADD COLUMN metrics_seq INTEGER NOT NULL DEFAULT 0;

-- The size of logs/JOB.log after the attempt's last stored bytes. Bytes past the largest log_end
-- of a job were written by a turn that did not commit (umdqd killed between the write and the
-- commit) and are cut before the next append, so that bytes sent again are not written twice.
-- NULL: not known (no log file, or bytes written before this version).
ALTER TABLE attempts ADD COLUMN log_end INTEGER;
