--[[
  Ends tickets held in doubt (holdInDoubt in _lib: a cut item's tickets whose sale may have
  committed) with Postgres's word: the sale it holds for the ticket, or none, and then the
  outcome it was held with (x.ifNone: rejected blocked) or the cut's (rejected sold_out, cancelled
  item_closed). A ticket no longer in doubt (its job settled
  it meanwhile, or another daemon resolved it) is left alone.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] doubt  KEYS[4] payloads  KEYS[5] stock  KEYS[6] taken  KEYS[7] done
  ARGV[1] now (ms, the caller's clock)
  ARGV[2..] per ticket two values: seq, outcome JSON ('' = Postgres holds no sale for it): its
    sale's (succeeded), or another end (rejected, reservation_released: its order was released)
  Returns the number of tickets ended.
]]
-- @include _lib
local now = tonumber(ARGV[1])
local cuts = loadCuts()
local ended = 0
local charOf = {}
for c, status in pairs(stateByChar) do charOf[status] = c end
for i = 2, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) == 'a' and leaveDoubt(seq) then
    if ARGV[i + 1] ~= '' then
      local status = cjson.decode(ARGV[i + 1]).status
      finish(seq, record, 'admitted', charOf[status], status, ARGV[i + 1], now)
    else
      local ifNone = rcall('HGET', keyOf.x(seq), 'ifNone')
      if ifNone then
        local status = cjson.decode(ifNone).status
        finish(seq, record, 'admitted', charOf[status], status, ifNone, now)
      else
        local cut = cutFor(cuts, seq) or { 0, 'r', 'sold_out' }
        finish(seq, record, 'admitted', cut[2], stateByChar[cut[2]], cjson.encode({ status = stateByChar[cut[2]], reason = cut[3] }), now)
      end
    end
    rcall('HDEL', keyOf.x(seq), 'lease', 'leaseExp')
    ended = ended + 1
  end
end
return ended
