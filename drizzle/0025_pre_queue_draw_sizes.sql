-- A pre-queue draw's size N (queue/draw.ts: the tickets that joined before opensAt, seqs 1..N),
-- kept here before the draw is revealed or any place is shown. Redis fixes N from its join
-- counter, and a Redis rolled back past the draw (an AOF that lost its last second, a restored
-- snapshot, a lagging replica promoted) holds fewer of those tickets: drawn again with the same
-- seed over that smaller N, the shuffle differed and users were shown other places than before.
-- With this row the draw made again is over the N shown (seqs Redis lost are holes, skipped as
-- cancelled tickets are), so every surviving ticket keeps its place. One row per draw: the item
-- and the hash of the seed it was drawn with (the `seedHash` shown; another draw time of the item
-- is another seed). Retention deletes an archived item's rows (db/items-store.ts archive).
CREATE TABLE IF NOT EXISTS pre_queue_draws (
  item_id text NOT NULL,
  seed_hash text NOT NULL,
  size integer NOT NULL,
  recorded_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (item_id, seed_hash)
);
