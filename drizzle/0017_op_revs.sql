-- Operators' writes (an item's definition, its gate, its close, its blocks; '*': the blocks of
-- every item) each take a revision from one sequence, kept here by scope. Redis keeps the revision
-- it last applied beside the data (an item's meta `opRev`, and the highest in a global zset): after
-- a rollback (AOF everysec losing its last second, a restored snapshot, a lagging replica promoted)
-- Redis's mark is behind this row and the daemon applies Postgres's state again (catalog/op-revs.ts).
CREATE SEQUENCE IF NOT EXISTS floodgate_op_rev_seq;
CREATE TABLE IF NOT EXISTS op_revs (
  scope text PRIMARY KEY,
  rev bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS op_revs_rev_idx ON op_revs (rev);
