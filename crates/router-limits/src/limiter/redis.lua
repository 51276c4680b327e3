-- Every limit of one admission, checked and reserved all or nothing, in one
-- round trip. Redis runs a script atomically, so no other admission of any
-- replica interleaves with it.
--
-- KEYS[i]  the counter of limit i.
-- ARGV[1]  the mode: "admit", "peek" (what is left, changing nothing) or
--          "settle" (apply signed corrections).
-- ARGV[2]  the number of limits, n.
-- Then four arguments per limit i, from ARGV[3 + 4 * (i - 1)]:
--   kind    "r" rolling (GCRA) or "c" calendar (a counter per period);
--   limit   units per window (requests, tokens, or micro-USD for budgets);
--   span    rolling: the window in microseconds;
--           calendar: microseconds until the period ends;
--   amount  admit: the units to take; settle: the signed correction.
--
-- Rolling limits keep the GCRA theoretical arrival time ("tat") in
-- microseconds of Redis' own clock (TIME), so replicas whose clocks differ
-- still share one time base. A limit of L per window W admits a burst of
-- exactly L from empty and one more unit every W / L.
--
-- Admit answers {1, remaining_1, reset_1, ..., remaining_n, reset_n} (reset
-- in microseconds until the limit is whole again), or, when a limit refuses,
-- {0, i, remaining, retry_after, never_fits, ...} for every refusing limit;
-- then nothing was written. Peek answers like an admission that succeeded.
-- Settle answers {1}.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local mode = ARGV[1]
local n = tonumber(ARGV[2])

-- A tat is a double near 1.8e15, whose spacing is 0.25 us; a window's
-- arithmetic may land that far past its end. One microsecond of slack
-- absorbs it without admitting anything measurably early.
local SLACK = 1

local function arg(i, field)
  return ARGV[2 + 4 * (i - 1) + field]
end

local function store_tat(key, tat)
  -- Once tat has passed the limit is whole: the key can go, so Redis never
  -- holds more than the limits in use.
  local ttl = math.ceil((tat - now) / 1000) + 1000
  redis.call('SET', key, string.format('%.17g', tat), 'PX', ttl)
end

local function calendar_ttl(span)
  -- Kept a day past its period, so that a late settlement still finds it.
  return math.ceil(span / 1000000) + 86400
end

if mode == 'settle' then
  for i = 1, n do
    local kind, limit = arg(i, 1), tonumber(arg(i, 2))
    local span, delta = tonumber(arg(i, 3)), tonumber(arg(i, 4))
    if kind == 'r' then
      local interval = span / limit
      local tat = tonumber(redis.call('GET', KEYS[i]) or now)
      if tat < now then tat = now end
      if delta < 0 then
        -- Hand back what was reserved and not used, but never into the past.
        tat = math.max(now, tat + delta * interval)
        if tat > now then store_tat(KEYS[i], tat) else redis.call('DEL', KEYS[i]) end
      elseif delta > 0 then
        store_tat(KEYS[i], tat + delta * interval)
      end
    else
      if delta < 0 then
        local value = tonumber(redis.call('GET', KEYS[i]) or '0')
        local back = math.min(-delta, value)
        if back > 0 then redis.call('DECRBY', KEYS[i], back) end
      elseif delta > 0 then
        redis.call('INCRBY', KEYS[i], delta)
        redis.call('EXPIRE', KEYS[i], calendar_ttl(span))
      end
    end
  end
  return {1}
end

local admit = mode == 'admit'
local refusals = {}
local after = {}
for i = 1, n do
  local kind, limit = arg(i, 1), tonumber(arg(i, 2))
  local span = tonumber(arg(i, 3))
  local amount = admit and tonumber(arg(i, 4)) or 0
  if kind == 'r' then
    local interval = span / limit
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local next_tat = tat + amount * interval
    if amount > limit then
      local remaining = math.floor((span - (tat - now)) / interval + 1e-9)
      table.insert(refusals, i)
      table.insert(refusals, math.max(remaining, 0))
      table.insert(refusals, math.ceil(span))
      table.insert(refusals, 1)
    elseif next_tat - now > span + SLACK then
      local remaining = math.floor((span - (tat - now)) / interval + 1e-9)
      table.insert(refusals, i)
      table.insert(refusals, math.max(remaining, 0))
      table.insert(refusals, math.max(math.ceil(next_tat - now - span), 1))
      table.insert(refusals, 0)
    end
    after[i] = next_tat
  else
    local value = tonumber(redis.call('GET', KEYS[i]) or '0')
    if amount > limit then
      table.insert(refusals, i)
      table.insert(refusals, math.max(limit - value, 0))
      table.insert(refusals, math.ceil(span))
      table.insert(refusals, 1)
    elseif value + amount > limit then
      table.insert(refusals, i)
      table.insert(refusals, math.max(limit - value, 0))
      table.insert(refusals, math.max(math.ceil(span), 1))
      table.insert(refusals, 0)
    end
    after[i] = value + amount
  end
end

if #refusals > 0 then
  table.insert(refusals, 1, 0)
  return refusals
end

local answer = {1}
for i = 1, n do
  local kind, limit = arg(i, 1), tonumber(arg(i, 2))
  local span = tonumber(arg(i, 3))
  local amount = admit and tonumber(arg(i, 4)) or 0
  if kind == 'r' then
    local interval = span / limit
    if amount > 0 then store_tat(KEYS[i], after[i]) end
    local depth = after[i] - now
    table.insert(answer, math.max(math.floor((span - depth) / interval + 1e-9), 0))
    table.insert(answer, math.max(math.ceil(depth), 0))
  else
    if amount > 0 then
      redis.call('INCRBY', KEYS[i], amount)
      redis.call('EXPIRE', KEYS[i], calendar_ttl(span))
    end
    table.insert(answer, math.max(limit - after[i], 0))
    table.insert(answer, after[i] > 0 and math.ceil(span) or 0)
  end
end
return answer
