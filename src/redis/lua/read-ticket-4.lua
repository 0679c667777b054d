--[[
  Reads one ticket consistently with the line around it.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] x (the ticket's hash of times and outcome)
  ARGV[1] base  ARGV[2] seq
  Returns { record|false, x as flat array, served, retry rank (-1 if not returned), cut JSON|'' }
]]
-- @include _lib
local seq = tonumber(ARGV[2])
local record = getRecord(ARGV[1], seq)
if not record then return { false } end
local cut = ''
if string.sub(record, 1, 1) == 'w' then
  local c = cutFor(loadCuts(KEYS[1]), seq)
  if c then cut = cjson.encode(c) end
end
local rank = rcall('ZRANK', KEYS[3], ARGV[2])
return { record, rcall('HGETALL', KEYS[4]), tonumber(rcall('HGET', KEYS[2], 'served') or '0'), rank or -1, cut }
