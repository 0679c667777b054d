--[[
  Gives back the unit a ticket took, once (when Postgres refused the sale). With `forfeit`, the
  ticket's unit is dropped instead: Postgres had no unit for it, so the counter held one too many
  (a released reservation's unit returned twice: by the stock keeper's recount and by its release).
  KEYS[1] stock  KEYS[2] taken
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] seq  ARGV[3] forfeit: '1' to drop the unit, else '0'
  Returns 1 refunded (or forfeited), 0 nothing was taken.
]]
-- @include _lib
local shard = rcall('HGET', K.taken, ARGV[2])
if not shard then return 0 end
rcall('HDEL', K.taken, ARGV[2])
if ARGV[3] ~= '1' then unitBack(shard) end
return 1
