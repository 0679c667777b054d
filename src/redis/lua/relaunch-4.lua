--[[
  Runs tickets held in doubt again (holdInDoubt in _lib): each gets a new lease, as an admission
  gives one, and leaves doubt; the caller queues a job for them, whose handler (idempotent: a
  webhook's Idempotency-Key is the ticket ref) brings their outcome. A ticket no longer in doubt
  is left alone, and so is one held with an outcome of its own for when nothing happened
  (x.ifNone: its user was blocked meanwhile): run again, it would serve the blocked user; it waits
  for its last run's outcome, then ends with that one (resolve-doubt-7.lua).
  KEYS[1] ctr  KEYS[2] doubt  KEYS[3] leases  KEYS[4] payloads
  ARGV[1] now (ms, the caller's clock)  ARGV[2] leaseMs  ARGV[3] leasePrefix (random)
  ARGV[4..] seqs
  Returns { seq1, record1, payload1, leaseId1, leaseExp1, seq2, ... }
]]
-- @include _lib
local now, leaseMs, leasePrefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 4, #ARGV do
  local seq = tonumber(ARGV[i])
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) == 'a' and rcall('HEXISTS', keyOf.x(seq), 'ifNone') == 0 and leaveDoubt(seq) then
    local leaseId = leasePrefix .. fmt(seq)
    local exp = now + leaseMs
    -- Run again after an earlier run whose outcome is unknown (extend-leases-3.lua tells its job so).
    rcall('HSET', keyOf.x(seq), 'prevLease', rcall('HGET', keyOf.x(seq), 'lease') or '?')
    rcall('HSET', keyOf.x(seq), 'lease', leaseId, 'leaseExp', fmt(exp), 'updatedAt', fmt(now))
    rcall('ZADD', K.leases, exp, fmt(seq))
    for _, v in ipairs({ seq, record, rcall('HGET', K.payloads, fmt(seq)) or '', leaseId, exp }) do table.insert(out, v) end
  end
end
return out
