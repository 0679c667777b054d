-- Operator blocks, by scope (an item id, or '*' for every item) and user. Redis's copies (each
-- item's `blocked` hash, the global set) went with Redis's data: after a flush or a restart
-- without its AOF, the restored items took every blocked user's joins again.
CREATE TABLE IF NOT EXISTS user_blocks (
  scope text NOT NULL,
  user_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, user_id)
);
