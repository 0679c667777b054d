--[[
  Gives back the unit of a released reservation, once per order: to the stock counter (so the
  next waiting ticket is admitted) and to its buyer (the user's entry in `users` is cleared when it
  still names a succeeded ticket, so the user may join again; their old ticket stays succeeded).
  Postgres releases an order exactly once; the `returned` set makes a repeat of this call (a retry
  after a lost answer) harmless.
  KEYS[1] stock  KEYS[2] returned (set of order ids)  KEYS[3] users
  ARGV[1] base  ARGV[2] orderId  ARGV[3] userId
  Returns 1 given back, 0 already given back.
]]
-- @include _lib
local base, orderId, userId = ARGV[1], ARGV[2], ARGV[3]
if rcall('SADD', KEYS[2], orderId) == 0 then return 0 end
local k = rcall('HLEN', KEYS[1])
local shard = 's0'
if k > 0 then shard = 's' .. fmt(tonumber(orderId) % k) end
rcall('HINCRBY', KEYS[1], shard, 1)
local seq = tonumber(rcall('HGET', KEYS[3], userId) or '')
if seq then
  local record = getRecord(base, seq)
  if record and string.sub(record, 1, 1) == 's' then rcall('HDEL', KEYS[3], userId) end
end
return 1
