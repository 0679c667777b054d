--[[
  Gives back the unit a ticket took, once (when Postgres refused the sale). With `forfeit`, the
  ticket's unit is dropped instead: Postgres had no unit for it, so the counter held one too many
  (a released reservation's unit returned twice: by the stock keeper's recount and by its release).
  With `upTo`, the unit goes back only while the counter and the units other admitted tickets hold
  (the fewer of the tickets admitted but this one and the unit markers, as set-stock-4.lua counts
  them: it errs low) come to fewer than that (what Postgres has left: a run of a ticket whose order
  was released gives its unit back as far as Postgres has units, where the release's own give-back
  may have been held back by the same bound; counting the counter alone, a unit held by another
  ticket in flight was counted twice, one over Postgres).
  KEYS[1] stock  KEYS[2] taken  KEYS[3] ctr
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] seq  ARGV[3] forfeit: '1' to drop the unit, else '0'
  ARGV[4] upTo ('' none)
  Returns 1 refunded (or forfeited), 0 nothing was taken.
]]
-- @include _lib
local shard = rcall('HGET', K.taken, ARGV[2])
if not shard then return 0 end
rcall('HDEL', K.taken, ARGV[2])
local upTo = tonumber(ARGV[4])
local units = 0
if upTo then
  units = unitsOnCounter()
  local others = math.max(0, tonumber(rcall('HGET', K.ctr, 'admitted') or '0') - 1)
  units = units + math.min(others, rcall('HLEN', K.taken))
end
if ARGV[3] ~= '1' and (not upTo or units < upTo) then unitBack(shard) end
return 1
