--[[
  Admits the given waiting tickets of one sub-line of a split item, each under a new lease: the
  ones the admitting daemon chose by merging every sub-line's list (split-peek-4.lua). A ticket
  no longer waiting (cancelled, cut, admitted in another round) is skipped.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] wait  KEYS[5] leases  KEYS[6] payloads
  ARGV[1] now (ms, the caller's clock)  ARGV[2] leaseMs  ARGV[3] leasePrefix (random)
  ARGV[4..] seqs
  Returns { n, seq1, record1, payload1, leaseId1, leaseExp1, seq2, ... }
]]
-- @include _lib
local now, leaseMs, leasePrefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local cuts = loadCuts()
local out = { 0 }
for i = 4, #ARGV do
  local seq = tonumber(ARGV[i])
  local inLine = rcall('ZREM', K.wait, ARGV[i]) + rcall('ZREM', K.retry, ARGV[i])
  local record = getRecord(seq)
  if inLine > 0 and record and string.sub(record, 1, 1) == 'w' and not cutFor(cuts, seq) then
    leaseTicket(out, seq, record, now, leasePrefix, leaseMs)
    out[1] = out[1] + 1
  end
end
return out
