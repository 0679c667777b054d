-- When a token signing key starts signing. A rotated-in key is listed in the JWKS at once but
-- signs only once every JWKS a shop fetched before it (Cache-Control max-age 60) has expired:
-- it signed within ~2 s before, and a shop verifying offline refused every new token until its
-- cached JWKS ran out. NULL: at once (the first key, and keys made before this column).
ALTER TABLE "token_keys" ADD COLUMN IF NOT EXISTS "signs_from" timestamptz;
