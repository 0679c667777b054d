--[[
  Acknowledges done-stream entries whose rows the outcome ledger committed, and lets their ended
  tickets' state leave Redis: the payload and the unit marker at once, the hash of times and
  outcome after `ttl` seconds. Only for an entry this call acknowledges: one that is gone (a flush
  since, or a rollback to before it was written) says its seqs may be other tickets' by now — the
  flood joins again from seq 1 after a loss — and their payloads, unit markers and leases are
  theirs. (A MULTI did it by seq alone: a new ticket's payload went, its job sold with none.)
  KEYS[1] done  KEYS[2] payloads  KEYS[3] taken
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] group  ARGV[3] ttl (s)
  ARGV[4..] per entry: id, its tickets' seqs ('1,2,3'; '' for none)
  Returns the number of entries acknowledged.
]]
-- @include _lib
local group, ttl = ARGV[2], tonumber(ARGV[3])
local acked = 0
for i = 4, #ARGV, 2 do
  local ok, n = pcall(rcall, 'XACK', K.done, group, ARGV[i])
  if ok and n == 1 then
    acked = acked + 1
    for s in string.gmatch(ARGV[i + 1], '%d+') do
      rcall('HDEL', K.payloads, s)
      rcall('HDEL', K.taken, s)
      rcall('EXPIRE', keyOf.x(tonumber(s)), ttl)
    end
  end
  rcall('XDEL', K.done, ARGV[i])
end
return acked
