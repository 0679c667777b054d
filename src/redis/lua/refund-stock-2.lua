--[[
  Gives back the unit a ticket took, once (when Postgres refused the sale). With `forfeit`, the
  ticket's unit is dropped instead: Postgres had no unit for it, so the counter held one too many
  (a released reservation's unit returned twice: by the stock keeper's recount and by its release).
  KEYS[1] stock  KEYS[2] taken
  ARGV[1] seq  ARGV[2] '1' to forfeit the unit, else '0' / absent
  Returns 1 refunded (or forfeited), 0 nothing was taken.
]]
local shard = redis.call('HGET', KEYS[2], ARGV[1])
if not shard then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '1' then redis.call('HINCRBY', KEYS[1], shard, 1) end
return 1
