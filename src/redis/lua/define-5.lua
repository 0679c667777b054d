--[[
  Creates or replaces an item's definition, keeping its tickets and counters.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] gate  KEYS[4] stock  KEYS[5] taken
  ARGV[1] now (ms, the caller's clock)  ARGV[2] secret: a fresh one (hex; used only when the item is new)
  ARGV[3] definition: flat JSON object of meta fields (strings; '' clears a field)
  ARGV[4] gate: flat JSON object of gate fields ('' clears), or '' to keep the gate
  ARGV[5] reopen: '1' to reopen an item that was closed
  ARGV[6] epoch: the epoch (ms) join times count from, kept from the item's earlier life ('' or
    later than now: now); used only when the item is new
  ARGV[7] born: a fresh random token naming this life of the item (the daemons' caches of its
    tickets tell a re-created item from the one before by it; the secret may be the same)
  ARGV[8] drawSeed: the pre-queue's draw seed (hex; queue/draw.ts drawSeedOf: made from the
    item's secret and opensAt, so an item made again after a loss gets the same), kept when the
    definition has a pre-queue and the item has no seed yet, or has one for another draw time not
    drawn yet (a pre-queue moved before anyone joined: -5 below refuses the move after a join). So
    the seedHash shown commits to it from then on. In this script, not after it: a daemon killed
    between the two left a pre-queue with no seed (a seedHash of nothing shown, its tickets
    answered 404, every pull 500, nothing ever drawn).
  Returns { code, secret, epoch }: code 1 created, 2 replaced, -1 conflict (handler change with
    live tickets), -2 conflict (a pre-queue added to a line that has had tickets), -3 conflict (a
    pre-queue not drawn yet on a line a cut moved past tickets: it closed or sold out), -4 conflict
    (another `lines` than the existing item's), -5 conflict (a pre-queue not drawn yet removed, or
    its draw time `opensAt` moved, while tickets that joined for its draw wait: no cut ended them)
  A handler change (no live tickets) drops the old handler's stock counter and its sold-out end:
  a seckill item sold out and redefined as external answered every join 410 sold_out, and one
  with 2 units left admitted 2 tickets, ever (the counter capped admissions). A new handler with
  stock has its counter set after this (catalog's pushStock). A handler or configuration change
  drops the adaptive controller's published estimate (aLimit, aRate, aState…) and asks it to reset,
  and any daemon's mark that the old downstream is away (dsAway).
]]
local rcall = redis.call
local def = cjson.decode(ARGV[3])
local existing = rcall('HMGET', K.meta, 'handler', 'secret', 'epoch')
local code = 2
-- The pre-queue rules (catalog.ts says why), here as well as in the catalog's check before the
-- call: a join between that check and this call put a ticket in line that the draw would take
-- its place from.
if existing[1] and def.preFrom and def.preFrom ~= '' and rcall('HGET', K.meta, 'drawn') ~= '1' then
  local c = rcall('HMGET', K.ctr, 'seq', 'served')
  if not rcall('HGET', K.meta, 'preFrom') and tonumber(c[1] or '0') > 0 then return { -2, '', 0 } end
  if tonumber(c[2] or '0') > 0 then return { -3, '', 0 } end
end
-- And the other way: a pre-queue not drawn yet cannot go, nor its draw move, once tickets joined
-- for it (catalog.ts says why). Only while no cut has moved the head past them (nothing is
-- admitted before the draw): an item closed or sold out before its draw opens again without it.
if existing[1] and rcall('HGET', K.meta, 'preFrom') and rcall('HGET', K.meta, 'drawn') ~= '1'
  and ((def.preFrom or '') == '' or (def.opensAt or '') ~= (rcall('HGET', K.meta, 'opensAt') or '')) then
  local c = rcall('HMGET', K.ctr, 'seq', 'served')
  if tonumber(c[1] or '0') > 0 and tonumber(c[2] or '0') == 0 then return { -5, '', 0 } end
end
-- An item's lines never change (its ticket ids name their sub-line by it: queue/split-line.ts),
-- decided here too: two definitions of a new item at once both passed the catalog's check, and
-- the second re-split a line whose tickets the first had already taken (ids mapped to another
-- sub-line than their ticket's, tickets left on sub-lines no round visits).
if existing[1] and (rcall('HGET', K.meta, 'lines') or '') ~= (def.lines or '') then return { -4, '', 0 } end
if existing[1] then
  if existing[1] ~= def.handler then
    local live = rcall('HMGET', K.ctr, 'waiting', 'admitted')
    if tonumber(live[1] or '0') + tonumber(live[2] or '0') > 0 then return { -1, '', 0 } end
    rcall('DEL', K.stock, K.taken)
    -- Successes under the old handler are no wins under the new one (heldTicket, _lib.lua): an
    -- external item's answered ticket made its user's next coupon join their "last claim" (200).
    rcall('DEL', K.base .. 'wins')
    rcall('HSET', K.meta, 'winsFrom', rcall('HGET', K.ctr, 'seq') or '0')
    if rcall('HDEL', K.meta, 'soldOut') == 1 and not rcall('HGET', K.meta, 'closed') then rcall('HDEL', K.meta, 'endedAt') end
  end
  -- Another handler or another configuration (a webhook's url) is another downstream: the adaptive
  -- controller's estimate of the old one goes, and it starts again (aReset) if it drives the item.
  -- A seckill item redefined from a webhook kept the webhook's aLimit (4) and aRate for good: the
  -- controller never drives a self-limited handler, so nothing published over them.
  if existing[1] ~= def.handler or rcall('HGET', K.meta, 'config') ~= def.config then
    rcall('HDEL', K.gate, 'aLimit', 'aRate', 'aProbeStart', 'aBase', 'aP50', 'aP99', 'aState')
    rcall('HSET', K.gate, 'aReset', '1')
    -- And a daemon's mark that the old downstream does not answer (service/downstream-health.ts):
    -- the daemon that marked it takes the cleared mark as an answer, and the new one is tried at
    -- the gate's pace (marked again if it does not answer either).
    rcall('HDEL', K.gate, 'dsAway')
  end
else
  code = 1
  -- A kept epoch, so that the join times of the item's new tickets count on from its old ones'
  -- (a ticket id binds its seq, join time and user: a seq issued again is never the same id).
  local epoch = ARGV[6]
  if epoch == '' or not tonumber(epoch) or tonumber(epoch) > tonumber(ARGV[1]) then epoch = ARGV[1] end
  rcall('HSET', K.meta, 'secret', ARGV[2], 'epoch', epoch, 'born', ARGV[7])
  -- (A mark renewed by a daemon just after the item's delete is the old life's.)
  rcall('HDEL', K.gate, 'dsAway')
  rcall('HSETNX', K.ctr, 'seq', 0)
  rcall('HSETNX', K.ctr, 'served', 0)
end
-- Where admit-12.lua's abandonment clock starts (abandonSince), when abandonment is switched on or
-- shortened: once the longest poll interval a holder may have been told under the old setting has
-- passed (queue/views.ts pollCap: 30 s with it off, a third of it on). Polls are recorded only while
-- it is on, and a holder told 30 s who polled a moment before the change polls again 30 s later:
-- counted from the change, every holder of a line with a 5 s setting was expired 5 s after it.
local abandonWas = tonumber(rcall('HGET', K.meta, 'abandonAfterMs') or '')
local abandonNow = tonumber(def.abandonAfterMs or '')
if abandonNow then
  if not abandonWas or abandonNow < abandonWas then
    -- (A new item has no holders: from now.)
    local toldAtMost = code == 1 and 0 or abandonWas and math.max(1000, math.min(30000, math.floor(abandonWas / 3))) or 30000
    local from = tonumber(ARGV[1]) + toldAtMost
    if from > tonumber(rcall('HGET', K.meta, 'abandonSince') or '0') then rcall('HSET', K.meta, 'abandonSince', string.format('%d', from)) end
  end
else
  rcall('HDEL', K.meta, 'abandonSince')
end
-- Read before the definition's fields are written: the seed follows the draw time until the draw.
local seedFor = rcall('HMGET', K.meta, 'drawSeed', 'drawn', 'opensAt')
for k, v in pairs(def) do
  if v == '' then rcall('HDEL', K.meta, k) else rcall('HSET', K.meta, k, v) end
end
if def.preFrom and def.preFrom ~= '' and ARGV[8] ~= '' and (not seedFor[1] or (seedFor[2] ~= '1' and seedFor[3] ~= def.opensAt)) then
  rcall('HSET', K.meta, 'drawSeed', ARGV[8])
end
if ARGV[5] == '1' then
  rcall('HDEL', K.meta, 'closed')
  if not rcall('HGET', K.meta, 'soldOut') then rcall('HDEL', K.meta, 'endedAt') end
end
if ARGV[4] ~= '' then
  for k, v in pairs(cjson.decode(ARGV[4])) do
    if v == '' then rcall('HDEL', K.gate, k) else rcall('HSET', K.gate, k, v) end
  end
end
rcall('HINCRBY', K.meta, 'version', 1)
local m = rcall('HMGET', K.meta, 'secret', 'epoch')
return { code, m[1], tonumber(m[2]) }
