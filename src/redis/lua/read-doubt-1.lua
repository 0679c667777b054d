--[[
  The tickets held in doubt since before `until` (holdInDoubt in _lib), oldest first, at most 500.
  KEYS[1] doubt
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] until (ms)
  Returns { seq1, record1, seq2, record2, ... }
]]
-- @include _lib
local out = {}
for _, s in ipairs(rcall('ZRANGEBYSCORE', K.doubt, '-inf', ARGV[2], 'LIMIT', 0, 500)) do
  local record = getRecord(tonumber(s))
  if record then
    table.insert(out, tonumber(s))
    table.insert(out, record)
  end
end
return out
