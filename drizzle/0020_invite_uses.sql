-- Each invite's use, kept where Redis's data cannot take it: the ticket its first use made, until
-- a minute after the invite expires (it may last 7 days). The use was kept only in Redis under the
-- item (`{item}:inv:<nonce>`), and the item's secret outlives Redis's data (0016): after retention
-- removed an ended item's keys and the item was made again, or after a flush or a restart without
-- its AOF restored the item from Postgres, a used invite still verified and made a second ticket.
-- Keyed by the invite's item and nonce; the daemons' retention loop deletes expired rows. The
-- ticket id is a bearer capability that Postgres never holds (it keeps refs): it is sealed with a
-- key derived from the invite's own MAC (AES-256-GCM), so only a holder of the invite reads it.
CREATE TABLE IF NOT EXISTS invite_uses (
  item_id text NOT NULL,
  nonce text NOT NULL,
  ticket_sealed text NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (item_id, nonce)
);
CREATE INDEX IF NOT EXISTS invite_uses_expires_at ON invite_uses (expires_at);
