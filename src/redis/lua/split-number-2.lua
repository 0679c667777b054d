--[[
  Gives a join to a split item its join number (queue/split-line.ts), on the item's own slot,
  unless the user is blocked (for the item or everywhere: K.blocked, as join-5.lua checks it) or
  the asking key is over the deployment's default key quota (FLOODGATE_DEFAULT_KEY_QUOTA, counted
  as join-5.lua counts it, per second per key name; a split item takes no quotas of its own).
  KEYS[1] ctr  KEYS[2] blocked
  ARGV[1] now (ms, the caller's clock)  ARGV[2] userId
  ARGV[3] source: the name of the key that asks ('' none, or not to count this attempt again)
  ARGV[4] defaultKeyQuota: joins per second per key name ('' none)
  Returns { number, 0 } (ctr jn after HINCRBY), { -1, 0 } for a blocked user, or { -7, ms until
  the quota's window ends } over the key quota.
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
return { redis.call('HINCRBY', K.ctr, 'jn', 1), 0 }
