--[[
  Joins a user to one sub-line of a split item (queue/split-line.ts), or returns the ticket the
  user already holds there. A user's sub-line is fixed by their id, so this script alone knows
  whether they hold a ticket of the item.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] users  KEYS[4] wait  KEYS[5] payloads
  ARGV[1] now (ms, the caller's clock)
  ARGV[2] userId
  ARGV[3] num: the join number the caller took from the item's counter (ctr jn, on the item's slot)
  ARGV[4] payload JSON ('' for none)
  ARGV[5] source: the name of the key that asks ('' none; kept in the sub-line's src:<page>, as join-5.lua does)
  Returns { code, seq, record, num }
    code 0 created, 1 existing ticket (num = its join number while it waits in the line, else 0)
         -1 no such sub-line, -2 not open yet (then seq = opensAt), -3 closed, -4 sold out,
         -8 num is at or below the sub-line's fence (an admission round has looked past it):
            take a new number and join again (then seq = the fence)
  The sub-line's meta is a copy of the item's (epoch, rejoin, opensAt, closesAt) with its own
  cuts and flags (cut-8.lua on the sub-line).
]]
-- @include _lib
local now, userId, num = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local meta = rcall('HMGET', K.meta, 'epoch', 'closed', 'soldOut', 'opensAt', 'closesAt', 'rejoin')
if not meta[1] then return { -1, 0, '', 0 } end
local prev, held, won = heldTicket(userId, meta[6])
if prev then return { 1, prev, held, tonumber(rcall('ZSCORE', K.wait, fmt(prev)) or '0') } end
if meta[2] == '1' then return { -3, 0, '', 0 } end
if meta[3] == '1' then return { -4, 0, '', 0 } end
local opensAt = tonumber(meta[4] or '')
if opensAt and now < opensAt then return { -2, opensAt, '', 0 } end
if meta[5] and meta[5] ~= '' and now >= tonumber(meta[5]) then return { -3, 0, '', 0 } end
local fence = tonumber(rcall('HGET', K.ctr, 'fence') or '0')
if num <= fence then return { -8, fence, '', 0 } end
local seq = rcall('HINCRBY', K.ctr, 'seq', 1)
local record = 'w' .. fmt(math.max(0, now - tonumber(meta[1]))) .. '|' .. userId -- never before the epoch (join-5.lua)
rcall('HSET', keyOf.page(seq), fmt(seq), record)
rcall('HSET', K.users, userId, fmt(seq))
countWin(userId, won)
rcall('ZADD', K.wait, num, fmt(seq))
if ARGV[4] ~= '' then rcall('HSET', K.payloads, fmt(seq), ARGV[4]) end
if ARGV[5] ~= '' then rcall('HSET', keyOf.sourcePage(seq), fmt(seq), ARGV[5]) end
rcall('HINCRBY', K.ctr, 'waiting', 1)
return { 0, seq, record, num }
