-- POST exactly <total> user.registered events, each to a unique recipient, then stop.
--
--   wrk -t T -c C -d 300s --timeout 30s -s bench/wrk/publish.lua URL -- <total> <key> <prefix> T
--
-- Thread i (1..T) sends its share of <total> events to <prefix>-<i>-<n>@bench.example,
-- n = 1, 2, ...; after its share it only sends GET /healthz (answered 200, never
-- an event) until every event it sent has an answer, then stops. The hub and the
-- bare app answer a publish with 202, or an error status, never 200. wrk calls the
-- first thread's request() once before the run to check the script; that call gets
-- a GET /healthz, so no event is lost to it.
--
-- wrk itself runs for the whole -d even when every thread has stopped, so each
-- thread prints "BENCH thread <i> done" when its events are all answered, and the
-- caller (bench/run.py) sends wrk SIGINT once every thread has. done() then prints
--   BENCH accepted=<202s> answered=<publish answers> duration_us=<run> requests=<all> ...

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local total = tonumber(args[1])
   local nthreads = tonumber(args[4])
   prefix = args[3]
   quota = math.floor(total / nthreads)
   if id <= total % nthreads then
      quota = quota + 1
   end
   sent = 0
   answered = 0
   accepted = 0
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. args[2],
   }
   health = wrk.format("GET", "/healthz")
   checked = id ~= 1
   if quota == 0 then
      io.write(string.format("BENCH thread %d done\n", id))
      io.flush()
      wrk.thread:stop()
   end
end

function request()
   if not checked or sent >= quota then
      checked = true
      return health
   end
   sent = sent + 1
   local user = string.format("%d-%d", id, sent)
   local body = string.format(
      '{"type":"user.registered","data":{"user_id":"%s","email":"%s-%s@bench.example",'
         .. '"name":"User %s"}}',
      user, prefix, user, user
   )
   return wrk.format("POST", "/v1/events", headers, body)
end

function response(status, headers, body)
   if status == 200 then
      return
   end
   answered = answered + 1
   if status == 202 then
      accepted = accepted + 1
   end
   if answered == quota then
      io.write(string.format("BENCH thread %d done\n", id))
      io.flush()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local accepted_all, answered_all = 0, 0
   for _, thread in ipairs(threads) do
      accepted_all = accepted_all + thread:get("accepted")
      answered_all = answered_all + thread:get("answered")
   end
   io.write(string.format(
      "BENCH accepted=%d answered=%d duration_us=%d requests=%d p50_us=%d p99_us=%d\n",
      accepted_all, answered_all, summary.duration, summary.requests,
      latency:percentile(50), latency:percentile(99)
   ))
end
