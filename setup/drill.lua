-- wrk script for setup/bench-db-restart.sh: a steady mix of the routes that need a database,
-- counting answers by kind. Stop wrk with SIGINT; it prints one line:
--   DRILL requests=N ok=N unavailable=N errors=N other=N first=T last=T
-- unavailable: 503 (the contract while a database is out of reach); errors: any other 5xx;
-- other: anything else that is not 2xx; first/last: unix seconds of the first and last answer
-- that was not 2xx (0 when none).
--   LOAD_TOKEN, LOAD_REFERENCE   an access token and a payment of its user

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, unavailable, errors, other, first, last, n = 0, 0, 0, 0, 0, 0, 0
  local bearer = { ["Authorization"] = "Bearer " .. os.getenv("LOAD_TOKEN"),
                   ["Content-Type"] = "application/json", ["Connection"] = "close" }
  mix = {
    wrk.format("POST", "/a/auth/me", bearer),
    wrk.format("GET", "/b/payments/" .. os.getenv("LOAD_REFERENCE"), bearer),
    wrk.format("POST", "/b/payments", bearer,
      '{"amount":"12.50","currency":"USD","paymentMethod":"CARD","customerPhone":"+254712345678"}'),
  }
end

function request()
  n = n + 1
  return mix[(n % #mix) + 1]
end

function delay()
  return 10
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    return
  end
  if status == 503 then
    unavailable = unavailable + 1
  elseif status >= 500 then
    errors = errors + 1
    if errors <= 3 then io.stderr:write(string.format("drill: %d %s\n", status, body)) end
  else
    other = other + 1
    if other <= 3 then io.stderr:write(string.format("drill: %d %s\n", status, body)) end
  end
  local now = os.time()
  if first == 0 then first = now end
  last = now
end

function done(summary, latency, requests)
  local t = { ok = 0, unavailable = 0, errors = 0, other = 0, first = 0, last = 0 }
  for _, thread in ipairs(threads) do
    for _, k in ipairs({ "ok", "unavailable", "errors", "other" }) do
      t[k] = t[k] + thread:get(k)
    end
    local f, l = thread:get("first"), thread:get("last")
    if f ~= 0 and (t.first == 0 or f < t.first) then t.first = f end
    if l > t.last then t.last = l end
  end
  local e = summary.errors
  io.write(string.format("DRILL requests=%d ok=%d unavailable=%d errors=%d other=%d first=%d last=%d\n",
    summary.requests, t.ok, t.unavailable, t.errors + e.connect + e.read + e.write + e.timeout,
    t.other, t.first, t.last))
end
