--[[
  Lets the cancel stream `cx` go of the entries the head of the line has passed: the item caches
  forget such cancels (a place behind the head needs none), so only a daemon reading the stream
  afresh would read them, and the stream would grow with every cancel of the sale.
  The caller (queue/item-cache.ts) read the stream up to and past `lastId` and saw every entry up
  to it at a line place no later than `bound`; it trims them if the item's head, as the caches
  count it (`served`, or the served-before of the last cut when lower: cancels inside the last
  cut's range are kept), is at `bound` or past it, and the entry at `lastId` is still the one it
  read (a Redis rolled back since holds an older head, or other entries).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] cx
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] lastId  ARGV[3] lastSeq  ARGV[4] lastN
    (the entry's `n`)  ARGV[5] bound
  Returns the entries trimmed, or -1 when the head is not past `bound` or the entry at `lastId`
    is not the one read. Sets ctr `cxt` to `lastN`: the cancels accounted for before the
    stream's first entry (a daemon reading afresh counts from there).
]]
-- @include _lib
local bound = tonumber(ARGV[5])
local head = tonumber(rcall('HGET', K.ctr, 'served') or '0')
local cuts = loadCuts()
local last = cuts[#cuts]
if last and type(last[5]) == 'number' and last[5] < head then head = last[5] end
if head < bound then return -1 end
local at = rcall('XRANGE', K.cx, ARGV[2], ARGV[2])
if #at == 0 or at[1][2][2] ~= ARGV[3] then return -1 end
local ms, sq = string.match(ARGV[2], '^(%d+)-(%d+)$')
local trimmed = rcall('XTRIM', K.cx, 'MINID', ms .. '-' .. fmt(tonumber(sq) + 1))
if tonumber(ARGV[4]) > tonumber(rcall('HGET', K.ctr, 'cxt') or '0') then rcall('HSET', K.ctr, 'cxt', ARGV[4]) end
return trimmed
