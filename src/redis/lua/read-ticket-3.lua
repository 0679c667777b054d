--[[
  Reads one ticket consistently with the line around it.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] seq
  Returns { record|false, the ticket's keyOf.x hash (times, outcome) as a flat array, served,
    retry rank (-1 if not returned), cut JSON|'' }
]]
-- @include _lib
local seq = tonumber(ARGV[2])
local record = getRecord(seq)
if not record then return { false } end
local cut = ''
if string.sub(record, 1, 1) == 'w' then
  local c = cutFor(loadCuts(), seq)
  if c then cut = cjson.encode(c) end
end
local rank = rcall('ZRANK', K.retry, ARGV[2])
return { record, rcall('HGETALL', keyOf.x(seq)), tonumber(rcall('HGET', K.ctr, 'served') or '0'), rank or -1, cut }
