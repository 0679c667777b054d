--[[
  Joins a user to an item's line, or returns the ticket the user already holds.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] users  KEYS[4] payloads  KEYS[5] blocked
  ARGV[1] now (ms, the caller's clock)
  ARGV[2] userId
  ARGV[3] payload JSON ('' for none)
  ARGV[4] source: the name of the key that asks ('' none)
  ARGV[5] defaultKeyQuota: joins per second per key name, for an item without a perKey quota ('' none)
  ARGV[6] memoryFull: '1' when Redis is near its memory limit: no new ticket (a held one is returned)
  ARGV[7] uncounted: '1' for the second call of one join (tickets.ts: a ticket a rollback brought
    back was ended first): its quotas were counted by the first
  Returns { code, seq, record, served[, overQuota, overWaitMs] }
    code  0 created, 1 existing ticket (live, or terminal where the handler forbids a new one; with
          the quota this attempt is over, if any, and ms until its window ends)
         -1 item not found, -2 not open yet (then seq = opensAt), -3 closed, -4 sold out,
         -5 queue full, -6 blocked (with a pre-queue, joins are accepted from opensAt - preFrom)
         -7 over a quota: then seq = ms until the quota's window ends, record = 'perUser'|'perKey'
         -8 Redis near its memory limit (ARGV[6])
         -9 the item's pre-queue is not drawn yet at or after opensAt (its draw not begun): the
            caller draws it (its size kept in Postgres first) and joins again
  Quotas (meta qUser / qKey = "limit:windowMs") count every attempt that reaches this script,
  refused and repeated ones included, in fixed windows (floor(now / windowMs)): one INCR per
  quota (keyOf.userQuota / keyOf.keyQuota), the counter expiring a second after its window. Over a
  quota, a user who holds a ticket is still given it (joins are idempotent per item and user: a
  repeat after a lost answer was refused 429, the ticket's id out of its holder's reach for the
  window); only a join that would make a ticket is refused.
]]
-- @include _lib
local now, userId, payload, source = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local meta = rcall('HMGET', K.meta, 'handler', 'opensAt', 'closesAt', 'closed', 'soldOut', 'capacity', 'rejoin', 'epoch', 'qUser', 'qKey', 'preFrom', 'drawN', 'drawPeek')
if not meta[1] then return { -1, 0, '', 0 } end

-- Returns ms until the window ends when this attempt is over the quota, else nil.
local function overQuota(spec, counterKey)
  local limit, win = string.match(spec, '^(%d+):(%d+)$')
  limit, win = tonumber(limit), tonumber(win)
  local w = math.floor(now / win)
  local k = counterKey(w)
  local n = rcall('INCR', k)
  if n == 1 then rcall('PEXPIRE', k, win + 1000) end
  if n > limit then return (w + 1) * win - now end
  return nil
end
-- Near the memory limit nothing is counted or written: a held ticket is returned and the ended
-- checks answer; any other join is refused (-8).
local memoryFull = ARGV[6] == '1'
local userWait, keyWait
if not memoryFull and ARGV[7] ~= '1' then
  local keySpec = meta[10] or ''
  if keySpec == '' and ARGV[5] ~= '' then keySpec = ARGV[5] .. ':1000' end
  userWait = meta[9] and meta[9] ~= '' and overQuota(meta[9], function(w) return keyOf.userQuota(userId, w) end) or nil
  keyWait = keySpec ~= '' and source ~= '' and overQuota(keySpec, function(w) return keyOf.keyQuota(source, w) end) or nil
end
if rcall('HEXISTS', K.blocked, userId) == 1 then return { -6, 0, '', 0 } end

-- (Over a quota: the quota and its wait go with the held ticket as 5th and 6th values, for a caller
-- that ends the ticket — one a Redis rollback brought back — and would join again: that join is refused.)
local over, overWait
if userWait and (not keyWait or userWait >= keyWait) then over, overWait = 'perUser', userWait elseif keyWait then over, overWait = 'perKey', keyWait end
local prev, held, won = heldTicket(userId, meta[7])
if prev then return { 1, prev, held, tonumber(rcall('HGET', K.ctr, 'served') or '0'), over or '', overWait or 0 } end
if over then return { -7, overWait, over, 0 } end

if meta[4] == '1' then return { -3, 0, '', 0 } end
if meta[5] == '1' then return { -4, 0, '', 0 } end
if memoryFull then return { -8, 0, '', 0 } end
local opensAt = tonumber(meta[2] or '')
local preFrom = tonumber(meta[11] or '')
-- (With a pre-queue, the 4th value: when its joins are taken, opensAt - preFrom.)
if opensAt and now < opensAt and not (preFrom and now >= opensAt - preFrom) then return { -2, opensAt, '', preFrom and (opensAt - preFrom) or '' } end
-- A join at or after opensAt waits for the draw to begin: only the draw fixes the pre-queue (seqs
-- 1..drawN), once its size is kept in Postgres. (The first such join fixed it here from the join
-- counter: after a Redis rollback past the draw, from the counter the rollback left, so that join
-- and the next took seqs inside the draw that the draw made again over its kept size then shuffled
-- in among the pre-queue's users — a review: joins told places 9, 10, 11 read 5, 15, 4 later.)
-- Once the draw has begun (N fixed, or its size being kept in Postgres: `drawPeek`), a join
-- stamped a moment before opensAt (a daemon's coalesced join sent after its draw began, or a clock
-- a few ms behind another's) is a join at the opening: its seq is past drawN, so it is not drawn
-- (stamped before opensAt it read "awaiting the draw", then was left out of it); while N is not
-- fixed yet, it waits for it as any join at the opening does.
-- (The mark counts only for this opensAt: one left by a draw tried at an opening the operator
-- moved later, while no ticket had joined, made every join before the new opening one at it, and
-- the first drew the pre-queue ten minutes early — a review.)
local peeked = meta[13] and opensAt and tonumber(meta[13]) >= opensAt
if preFrom and opensAt and now < opensAt and (meta[12] or peeked) then now = opensAt end
if meta[3] and meta[3] ~= '' and now >= tonumber(meta[3]) then return { -3, 0, '', 0 } end
if preFrom and opensAt and now >= opensAt and not meta[12] then return { -9, 0, '', 0 } end
local ctr = rcall('HMGET', K.ctr, 'waiting', 'admitted', 'served')
if meta[6] and meta[6] ~= '' then
  if (tonumber(ctr[1] or '0') + tonumber(ctr[2] or '0')) >= tonumber(meta[6]) then return { -5, 0, '', 0 } end
end

local seq = rcall('HINCRBY', K.ctr, 'seq', 1)
-- Never before the epoch: a daemon whose clock is a little behind the one that made the item (under
-- redis-time's step; or stepped back) would write a negative offset.
local record = 'w' .. fmt(math.max(0, now - tonumber(meta[8]))) .. '|' .. userId
rcall('HSET', keyOf.page(seq), fmt(seq), record)
rcall('HSET', K.users, userId, fmt(seq))
countWin(userId, won)
if payload ~= '' then rcall('HSET', K.payloads, fmt(seq), payload) end
if source ~= '' then rcall('HSET', keyOf.sourcePage(seq), fmt(seq), source) end
rcall('HINCRBY', K.ctr, 'waiting', 1)
return { 0, seq, record, tonumber(ctr[3] or '0') }
