--[[
  Fences one sub-line of a split item at join number `upTo` and lists its first waiting tickets
  numbered up to it; the admitting daemon merges the K lists (queue/split-line.ts). After the
  fence no join numbered <= upTo enters this sub-line (split-join-5.lua answers -8 and the joiner
  takes a new number), so once all K sub-lines are fenced, the tickets numbered <= upTo are all
  known and none can appear later.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] wait  KEYS[5] stock
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] upTo  ARGV[3] max
  Returns { admitted (this sub-line's tickets in flight), bound, units (this sub-line's stock,
    -1 without one), seq1, num1, seq2, num2, ... }:
    first the returned tickets (retry, numbered jn − 2^50 from the join number their admission kept,
    or −2^50 without one: before the line, in join order among themselves), then up to `max` tickets
    of the line by number. The list holds every waiting ticket numbered <= bound (bound = upTo
    unless it stopped early). Entries no longer waiting (cancelled, cut) leave `wait` on the way
    (at most 1000 a call).
]]
-- @include _lib
local upTo, max = tonumber(ARGV[2]), tonumber(ARGV[3])
if upTo > tonumber(rcall('HGET', K.ctr, 'fence') or '0') then rcall('HSET', K.ctr, 'fence', fmt(upTo)) end
local units = -1
if rcall('EXISTS', K.stock) == 1 then
  units = unitsOnCounter()
end
local out = { tonumber(rcall('HGET', K.ctr, 'admitted') or '0'), upTo, units }
for _, s in ipairs(rcall('ZRANGE', K.retry, 0, max - 1)) do
  table.insert(out, tonumber(s))
  table.insert(out, tonumber(rcall('HGET', keyOf.x(tonumber(s)), 'jn') or '0') - 1125899906842624)
end
local cuts = loadCuts()
local listed, skips, from = 0, 0, '-inf'
while listed < max and skips < 1000 do
  local want = max - listed
  local got = rcall('ZRANGEBYSCORE', K.wait, from, fmt(upTo), 'WITHSCORES', 'LIMIT', 0, want)
  for i = 1, #got, 2 do
    local seq = tonumber(got[i])
    local record = getRecord(seq)
    if record and string.sub(record, 1, 1) == 'w' and not cutFor(cuts, seq) then
      table.insert(out, seq)
      table.insert(out, tonumber(got[i + 1]))
      listed = listed + 1
    else
      rcall('ZREM', K.wait, got[i])
      skips = skips + 1
    end
  end
  if #got < want * 2 then return out end
  from = '(' .. got[#got]
  out[2] = tonumber(got[#got])
end
return out
