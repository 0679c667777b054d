--[[
  Lets the cancel stream `cx` go of entries the head of the line has passed: the item caches forget
  such cancels (a place behind the head needs none), so only a daemon reading the stream afresh
  would read them, and the stream would grow with every cancel of the sale.
  The caller (queue/item-cache.ts) read these entries and saw each at a line place no later than
  `bound`, outside the range of the item's last cut (whose seq it names: `cutSeq`, '' for none;
  cancels inside that range are kept, a watcher told of the cut must still know them). They are
  deleted if the item's head (`served`) is at `bound` or past it and the last cut is still that one
  (a Redis rolled back since holds an older head, or other cuts).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] cx
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] lastN (the highest `n` of the entries)
    ARGV[3] bound  ARGV[4] cutSeq  ARGV[5..] the entries' ids
  Returns the entries deleted, or -1 when the head is not past `bound` or the last cut is another.
    Sets ctr `cxt` to `lastN` if higher, but under the first entry left: the cancels a daemon
    counts as read without reading the stream.
]]
-- @include _lib
local head = tonumber(rcall('HGET', K.ctr, 'served') or '0')
if head < tonumber(ARGV[3]) then return -1 end
local cuts = loadCuts()
local last = cuts[#cuts]
if (last and fmt(last[1]) or '') ~= ARGV[4] then return -1 end
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
local deleted = rcall('XDEL', K.cx, unpack(ids))
-- `cxt` stays under the first entry left (one kept inside a cut's range, say): a daemon that has
-- not read that entry yet must still read it (it took the stream as read up to `cxt`).
local upTo = tonumber(ARGV[2])
local first = rcall('XRANGE', K.cx, '-', '+', 'COUNT', 1)[1]
if first then
  if first[2][3] == 'n' then
    local n = tonumber(first[2][4])
    if n - 1 < upTo then upTo = n - 1 end
  else
    -- An entry of a version before `n` (written during an upgrade): its count is not known, but
    -- one written after every entry deleted comes after them (the cancels' order is the stream's).
    -- Taken as unknown, `cxt` was never raised, and every daemon reading the stream afresh counted
    -- fewer cancels than the item's and placed nothing from its cache again (a review).
    local function ms(id) local a, b = string.match(id, '^(%d+)-(%d+)$') return tonumber(a), tonumber(b) end
    local fa, fb = ms(first[1])
    for _, id in ipairs(ids) do
      local a, b = ms(id)
      if a > fa or (a == fa and b > fb) then upTo = -1 break end
    end
  end
end
if upTo > tonumber(rcall('HGET', K.ctr, 'cxt') or '0') then rcall('HSET', K.ctr, 'cxt', upTo) end
return deleted
