--[[
  The gate of a split item, around one admission round of queue/split-line.ts, on the item's slot.
  KEYS[1] gate  KEYS[2] ctr  KEYS[3] alock  KEYS[4] meta
  ARGV[1] now (ms, the caller's clock)  ARGV[2] op: lock | allow | commit
  ARGV[3] token: the round's random id  ARGV[4] want  ARGV[5] inFlight  ARGV[6] autoCap
  ARGV[7] taken  ARGV[8] lastNum  ARGV[9] version: the item's definition version the caller will
    run the round's tickets under ('' = any)
  lock: takes the item's admission lease (2 s) for the round; returns the join counter (ctr jn)
    to fence the sub-lines at, -1 while another round holds the lease, -2 (no lease taken) when
    the item was redefined since the caller read it (admit-12.lua's code 3), or -3 (none taken)
    while the item is closed: a close cut short left tickets waiting on sub-lines it had not
    reached yet, and rounds admitted them after the close (the catalog's check cuts them).
  allow: how many of `want` tickets the gate lets in now, `inFlight` being admitted already (the
    sum over the sub-lines, read under the lease: only settles can change it, downwards); when
    none, frees the lease, and answers -ms (at most -1) when the pace alone held them: the ms
    until it lets the next one in (admit-12.lua's code 2).
  commit: records `taken` admissions (the pace, ctr admissions) and the admission cursor (ctr an
    = the highest join number admitted, `lastNum`, never lowered), then frees the lease (if
    `token` holds it). Returns ctr admissions after (so the round's tickets were the item's
    admissions total − taken + 1 … total). Also with `taken` 0 and no lease, to move the cursor
    past numbers no waiting ticket holds any more (a cut, joins refused while the item was sold out).
  The rule (effectiveGate, paceNow) is admit-12.lua's, from _gate.lua.
]]
-- @include _gate
local now, op, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local function unlock()
  if redis.call('GET', K.alock) == token then redis.call('DEL', K.alock) end
end
if op == 'lock' then
  if ARGV[9] ~= '' and (tonumber(redis.call('HGET', K.meta, 'version') or '0') or 0) ~= tonumber(ARGV[9]) then return -2 end
  if redis.call('HGET', K.meta, 'closed') == '1' then return -3 end
  if not redis.call('SET', K.alock, token, 'NX', 'PX', 2000) then return -1 end
  return tonumber(redis.call('HGET', K.ctr, 'jn') or '0')
end
local gate = redis.call('HMGET', K.gate, 'mode', 'rate', 'maxInFlight', 'tatAt', 'aLimit', 'aRate', 'tatOff')
local rate, mif = effectiveGate(gate[1], gate[2], gate[3], gate[5], gate[6], ARGV[6])
local paced, recordPace, due = paceNow(rate, gate[4], gate[7], now)
if op == 'allow' then
  local allowed = tonumber(ARGV[4])
  if mif then allowed = math.min(allowed, mif - tonumber(ARGV[5])) end
  if allowed > 0 and paced <= 0 then
    unlock()
    return -math.max(1, due)
  end
  allowed = math.min(allowed, paced)
  if allowed <= 0 then
    unlock()
    return 0
  end
  return allowed
end
local taken = tonumber(ARGV[7])
local total = tonumber(redis.call('HGET', K.ctr, 'admissions') or '0')
if taken > 0 then
  total = redis.call('HINCRBY', K.ctr, 'admissions', taken)
  recordPace(taken)
end
if tonumber(ARGV[8]) > tonumber(redis.call('HGET', K.ctr, 'an') or '0') then redis.call('HSET', K.ctr, 'an', ARGV[8]) end
unlock()
return total
