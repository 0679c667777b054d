-- The effective gate: what admission obeys, from the gate hash's fields (strings; false or ''
-- = unset) and the daemon's in-flight cap for an auto gate its controller has not spoken for.
-- closed: nothing (0, 0). manual: the operator's rate and maxInFlight. auto: the controller's
-- limit (aLimit) and pace (aRate) under the operator's ceilings; before the controller has
-- spoken (and for handlers it never speaks for: seckill, coupon), `autoCap` under the operator's
-- maxInFlight (a ceiling set replaced the Postgres-pressure cap and the slow start outright).
-- Returns rate (per s) and maxInFlight, each nil for "no cap". queue/gate-rule.ts is the same
-- rule for what the daemon shows; test/redis-scripts.test.ts runs both over one table.
local function effectiveGate(mode, rate, maxInFlight, aLimit, aRate, autoCap)
  if mode == 'closed' then return 0, 0 end
  local r, m = tonumber(rate or ''), tonumber(maxInFlight or '')
  if mode ~= 'manual' then
    local limit, pace = tonumber(aLimit or ''), tonumber(aRate or '')
    local cap = tonumber(autoCap or '')
    if limit then m = math.min(m or limit, limit) elseif cap then m = math.min(m or cap, cap) end
    if pace then r = math.min(r or pace, pace) end
  end
  return r, m
end

-- The pace (GCRA at `rate` per s, burst tolerance max(1, rate * 0.1)): how many tickets may be
-- admitted now (math.huge without a rate), the function that records `taken` admissions in
-- K.gate (tatAt + tatOff), and in how many ms the pace lets the next ticket in (0: now; whole ms,
-- rounded up, so a caller that comes back then finds it allowed). Times are relative to
-- floor(now): see admit-12.lua's header.
local function paceNow(rate, tatAt, tatOff, now)
  if not rate or rate <= 0 then return math.huge, function() end, 0 end
  local interval, epoch, lag = 1000 / rate, math.floor(now), 0
  local burst = math.max(1, rate * 0.1)
  -- lag = tat - now, every term small: whole-ms differences are exact, offsets < 1 day.
  -- tatAt is the ms it was written in and tatOff how far ahead of that it was put; a pace kept at
  -- this rate never puts it more than one burst (+ the ms) ahead. More is owed to another pace and
  -- is let go: a slower rate the operator has since raised (0.01/s put the next admission 100 s
  -- ahead, and 1000/s then admitted nobody for those 100 s), or a daemon whose clock ran ahead
  -- (written "in the future": taken as written now).
  tatAt, tatOff = tonumber(tatAt or ''), tonumber(tatOff or '')
  if tatAt and tatOff then
    local off = math.min(tatOff, 1 + burst * interval)
    if tatAt > epoch then
      -- Written "in the future" (a daemon whose clock ran ahead): taken as written now, and kept
      -- so. Read as "written now" at every read, its lag never shrank: every daemon admitted
      -- nobody for as long as the skew lasted (60 s ahead: nothing for 60 s, at any rate).
      tatAt = epoch
      redis.call('HSET', K.gate, 'tatAt', string.format('%d', epoch), 'tatOff', string.format('%.17g', off))
    end
    lag = (tatAt - epoch) + off - (now - epoch)
  end
  -- A call that comes a little after the pace was due (the dispatcher's timer, its round trip) is
  -- credited with that lateness, up to `slack`: taken from `now`, each admission's lateness was
  -- lost, and a burst of one (under 10/s) ran slow by it (7/s admitted 6.46/s). The long-run rate
  -- is exact; any interval may see up to slack / interval (at most half) of a ticket more.
  local slack = math.min(0.5 * interval, 50)
  local credit = math.max(lag, -slack)
  lag = math.max(0, lag)
  -- One ticket is allowed once lag <= (burst - 1) * interval.
  local due = math.max(0, math.ceil(lag - (burst - 1) * interval))
  return math.floor(burst - lag / interval + 1e-9), function(taken)
    redis.call('HSET', K.gate, 'tatAt', string.format('%d', epoch), 'tatOff', string.format('%.17g', (now - epoch) + credit + taken * interval))
  end, due
end
