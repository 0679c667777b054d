--[[
  Ends every ticket still waiting, at once, without touching each (see "cuts" in _lib): used when
  an item is closed (waiting -> cancelled) or sells out (waiting -> rejected).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry
  ARGV[1] state char (c|r)  ARGV[2] reason  ARGV[3] meta flag to set ('closed'|'soldOut')  ARGV[4] now  ARGV[5] base
  Returns the number of tickets that ended.
]]
-- @include _lib
if rcall('EXISTS', KEYS[1]) == 0 then return -1 end
rcall('HSET', KEYS[1], ARGV[3], '1')
rcall('HSETNX', KEYS[1], 'endedAt', ARGV[4])
local seq = tonumber(rcall('HGET', KEYS[2], 'seq') or '0')
local waiting = tonumber(rcall('HGET', KEYS[2], 'waiting') or '0')
local cuts = loadCuts(KEYS[1])
local served = tonumber(rcall('HGET', KEYS[2], 'served') or '0')
if waiting > 0 then
  -- The ledger finds this cut's tickets among the seqs after the previous cut.
  rcall('XADD', ARGV[5] .. 'done', '*', 'from', fmt(lastCutSeq(cuts) + 1), 'to', fmt(seq))
  -- The 5th field (served before the cut) lets a daemon tell from its cached view alone which
  -- tickets this cut ended: those after it, up to seq, that had not left the line.
  table.insert(cuts, { seq, ARGV[1], ARGV[2], tonumber(ARGV[4]), served })
  rcall('HSET', KEYS[1], 'cuts', cjson.encode(cuts))
  rcall('HSET', KEYS[2], 'served', fmt(seq), 'waiting', 0)
  rcall('HINCRBY', KEYS[2], stateByChar[ARGV[1]], waiting)
  rcall('DEL', KEYS[3])
end
return waiting
