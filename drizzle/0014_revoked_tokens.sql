-- Revoked admission tokens, by jti, until the token would have expired anyway. Redis's set of
-- them (read by every introspection) went with Redis's data: after a flush, a restart without
-- its AOF or a rollback, a token an operator had revoked introspected `active` again.
CREATE TABLE IF NOT EXISTS revoked_tokens (
  jti text PRIMARY KEY,
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz NOT NULL DEFAULT now()
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS revoked_tokens_expires_at ON revoked_tokens (expires_at);
