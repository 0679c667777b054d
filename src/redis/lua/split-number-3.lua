--[[
  Gives a join to a split item its join number (queue/split-line.ts), on the item's own slot,
  unless the user is blocked (for the item or everywhere: K.blocked, as join-5.lua checks it) or
  the asking key is over the deployment's default key quota (FLOODGATE_DEFAULT_KEY_QUOTA, counted
  as join-5.lua counts it, per second per key name; a split item takes no quotas of its own).
  No number while the item takes no new user — closed, before its opensAt or from its closesAt —
  as its meta says (sold out is left to the sub-line: a restock moves the line's numbers past those
  refused meanwhile, split-line.ts setStock, and a restock mid-cut clears the sub-lines' flags one
  by one): { 0, 0 }, with which split-join-5.lua answers the user's own ticket
  or the refusal (a number 0 is at or below every fence: should the sub-line take the join after
  all, its meta a moment behind the item's, it asks for a number again). Numbers taken by joins
  that were then refused are places nobody holds: each later joiner was told them as people ahead
  (a review: 100 joins refused before a restocked item's opening, and its first joiner after it
  was told place 101 and an ETA for a hundred, then admitted at once).
  KEYS[1] ctr  KEYS[2] blocked  KEYS[3] meta
  ARGV[1] now (ms, the caller's clock)  ARGV[2] userId
  ARGV[3] source: the name of the key that asks ('' none, or not to count this attempt again)
  ARGV[4] defaultKeyQuota: joins per second per key name ('' none)
  Returns { number, 0 } (ctr jn after HINCRBY), { 0, 0 } while the item takes no new user, { -1, 0 }
  for a blocked user, or { -7, ms until the quota's window ends } over the key quota.
]]
local now = tonumber(ARGV[1])
if ARGV[3] ~= '' and ARGV[4] ~= '' then
  local w = math.floor(now / 1000)
  local k = keyOf.keyQuota(ARGV[3], w)
  local n = redis.call('INCR', k)
  if n == 1 then redis.call('PEXPIRE', k, 2000) end
  if n > tonumber(ARGV[4]) then return { -7, (w + 1) * 1000 - now } end
end
if redis.call('HEXISTS', K.blocked, ARGV[2]) == 1 then return { -1, 0 } end
local m = redis.call('HMGET', K.meta, 'closed', 'opensAt', 'closesAt')
local opensAt, closesAt = tonumber(m[2] or ''), tonumber(m[3] or '')
if m[1] == '1' or (opensAt and now < opensAt) or (closesAt and now >= closesAt) then return { 0, 0 } end
return { redis.call('HINCRBY', K.ctr, 'jn', 1), 0 }
