--[[
  The tickets held in doubt since before `until` (holdInDoubt in _lib), oldest first, at most 500.
  An entry whose ticket is no longer admitted (ended by a script that did not know of doubt: an
  older daemon's, in a rolling upgrade) is dropped, so it cannot hold up the others.
  KEYS[1] doubt  KEYS[2] ctr
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] until (ms)
  Returns { seq1, record1, held1, seq2, record2, held2, ... }: held '1' when the ticket waits with
    an outcome of its own for when nothing happened (x.ifNone: its user was blocked), else ''
]]
-- @include _lib
local out = {}
for _, s in ipairs(rcall('ZRANGEBYSCORE', K.doubt, '-inf', ARGV[2], 'LIMIT', 0, 500)) do
  local record = getRecord(tonumber(s))
  if record and string.sub(record, 1, 1) == 'a' then
    table.insert(out, tonumber(s))
    table.insert(out, record)
    table.insert(out, rcall('HEXISTS', keyOf.x(tonumber(s)), 'ifNone') == 1 and '1' or '')
  else
    leaveDoubt(tonumber(s))
  end
end
return out
