-- wrk script: a steady mixed load through the edge while instances change (scale, restart,
-- rolling updates). Reads and writes of both services, paced per connection.
--   LOAD_TOKEN      an access token
--   LOAD_REFERENCE  a payment reference of that token's user
--   LOAD_DELAY_MS   pause between two requests of one connection (default 20)
--   LOAD_CONNECTION "close" (the default) or "keep-alive"
--   LOAD_INSTANCE   0 (the default) or 1: two loads at once register different users
-- Stop wrk with SIGINT; it prints one line:
--   LOAD requests=N ok=N failed=N connect=N read=N write=N timeout=N
-- where failed counts every answer that is not 2xx (the first few go to stderr).
--
-- With "close" every request goes on a connection of its own: connect/read/write errors are
-- requests that failed on the way in. With "keep-alive" the connections are reused, as browsers
-- and SDKs do: a connection the edge closes while a request is on its way counts too (wrk does
-- not retry, and a client may not retry a POST).

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function init(args)
  ok, failed, n = 0, 0, 0
  pause = tonumber(os.getenv("LOAD_DELAY_MS") or "20")
  -- Registrations need an e-mail address and phone number no run has used: each thread of a
  -- run takes its own block of 2000 numbers, named by the second the run started and the load.
  instance = tonumber(os.getenv("LOAD_INSTANCE") or "0")
  seed = (os.time() % 5000) * 2 + instance
  local token = os.getenv("LOAD_TOKEN")
  local ref = os.getenv("LOAD_REFERENCE")
  local connection = os.getenv("LOAD_CONNECTION") or "close"
  bearer = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
             ["Connection"] = connection }
  plain = { ["Content-Type"] = "application/json", ["Connection"] = connection }
  bare = { ["Connection"] = connection }
  fixed = {
    wrk.format("GET", "/a/health", bare),
    wrk.format("POST", "/a/auth/me", bearer),
    wrk.format("GET", "/b/health", bare),
    wrk.format("GET", "/b/payments/" .. ref, bearer),
    wrk.format("GET", "/b/payments?limit=5", bearer),
    wrk.format("POST", "/b/payments", bearer,
      '{"amount":"12.50","currency":"USD","paymentMethod":"CARD","customerPhone":"+254712345678"}'),
  }
end

function request()
  n = n + 1
  -- Every 16th request is the auth service's write (bcrypt makes it the costly one).
  if n % 16 == 0 then
    local k = (seed * 4 + id) * 2000 + (n / 16) % 2000
    local body = string.format(
      '{"email":"load-%d-%d-%d-%d@example.com","phone":"+2547%08d","password":"load-password"}',
      os.time(), instance, id, n, k)
    return wrk.format("POST", "/a/auth/register", plain, body)
  end
  return fixed[(n % #fixed) + 1]
end

function delay()
  return pause
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    failed = failed + 1
    if failed <= 5 then
      io.stderr:write(string.format("load: %d %s\n", status, body))
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_failed = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_failed = total_failed + thread:get("failed")
  end
  local e = summary.errors
  io.write(string.format("LOAD requests=%d ok=%d failed=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, total_ok, total_failed, e.connect, e.read, e.write, e.timeout))
end
