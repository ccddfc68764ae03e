// The REAL mppx client (0.11.0) paying an MPP `session`: `tempo.session.manager()` opens a TIP-1034 channel on
// the first paid call, signs one cumulative voucher per later call, tops the channel up when the deposit runs
// short, and closes it on request. A long-lived process driven by one JSON command per stdin line:
//
//   TESTBED_PAYER_KEY=0x… node client.mjs '{"rpcUrl": "http://127.0.0.1:…/client", "chainId": 4217,
//       "maxDeposit": "1", "topUpAmount": "0.02"}'
//   {"id": 1, "op": "fetch", "url": "http://…/v1/chat/completions", "body": {…}, "headers": {…}}
//   {"id": 2, "op": "close"}
//   {"id": 3, "op": "state"}
//   {"id": 4, "op": "exit"}
//
// Each command gets one JSON line back: {id, ok: true, …} or {id, ok: false, error, stack}. `fetch` answers
// {status, headers, body, receipt, channelId, cumulative, exchanges}; `close` answers {receipt, exchanges};
// `exchanges` are the HTTP round trips the SDK made for that command ({request: {method, url, headers, body},
// response: {status, headers}}, headers lower-cased), in order.
//
// The paid HTTP goes through Node's global fetch: HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply (on Node < 22.21 run
// with `--require receipts/node/preload.cjs`, as the test bed does) and NODE_EXTRA_CA_CERTS adds a CA. The
// JSON-RPC to the chain never goes through a proxy (its own undici Agent).
import readline from "node:readline";
import { tempo } from "mppx/client";
import { createClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { tempo as tempoChain } from "viem/chains";
import { Agent, fetch as undiciFetch } from "undici";

const json = (value) => JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
const write = (obj) => process.stdout.write(json(obj) + "\n");

const cfg = JSON.parse(process.argv[2] || "{}");
const key = process.env.TESTBED_PAYER_KEY;
if (!key || !cfg.rpcUrl) {
  write({ ok: false, error: "need TESTBED_PAYER_KEY and {rpcUrl}" });
  process.exit(1);
}
const account = privateKeyToAccount(key);
const chain = { ...tempoChain, id: cfg.chainId ?? tempoChain.id };
const direct = new Agent();
const rpcFetch = (url, init) => undiciFetch(url, { ...init, dispatcher: direct });
const client = createClient({ chain, transport: http(cfg.rpcUrl, { fetchFn: rpcFetch }), account });

let exchanges = [];
async function recordingFetch(input, init) {
  const request = input instanceof Request && init === undefined ? input : new Request(input, init);
  let body = null;
  if (request.body) {
    try {
      body = await request.clone().text();
    } catch {}
  }
  const headers = Object.fromEntries(request.headers.entries());
  const response = await fetch(request);
  exchanges.push({
    request: { method: request.method, url: request.url, headers, body },
    response: { status: response.status, headers: Object.fromEntries(response.headers.entries()) },
  });
  return response;
}

const manager = tempo.session.manager({
  account,
  client,
  fetch: recordingFetch,
  ...(cfg.maxDeposit ? { maxDeposit: cfg.maxDeposit } : {}),
  ...(cfg.topUpAmount ? { topUpAmount: cfg.topUpAmount } : {}),
});

const state = () => ({ channelId: manager.channelId ?? null, cumulative: manager.cumulative, opened: manager.opened,
                       state: manager.state });

async function run(cmd) {
  const start = exchanges.length;
  if (cmd.op === "fetch") {
    const response = await manager.fetch(cmd.url, {
      method: cmd.method ?? "POST",
      headers: { "content-type": "application/json", ...(cmd.headers || {}) },
      ...(cmd.method === "GET" ? {} : { body: JSON.stringify(cmd.body ?? { model: "testbed-echo-1",
        messages: [{ role: "user", content: "hello" }] }) }),
    });
    const text = await response.text();
    let body = text;
    try {
      body = JSON.parse(text);
    } catch {}
    return { status: response.status, headers: Object.fromEntries(response.headers.entries()), body,
             receipt: response.receipt ?? null, channelId: response.channelId, cumulative: response.cumulative,
             exchanges: exchanges.slice(start) };
  }
  if (cmd.op === "close") {
    const receipt = await manager.close();
    return { receipt: receipt ?? null, exchanges: exchanges.slice(start), ...state() };
  }
  if (cmd.op === "state") return state();
  if (cmd.op === "exit") {
    setImmediate(() => process.exit(0));
    return {};
  }
  throw new Error(`unknown op ${cmd.op}`);
}

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on("line", (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let cmd = {};
    try {
      cmd = JSON.parse(line);
      write({ id: cmd.id ?? null, ok: true, ...(await run(cmd)) });
    } catch (err) {
      write({ id: cmd.id ?? null, ok: false, error: String(err?.message ?? err), stack: String(err?.stack ?? ""),
              exchanges });
    }
  });
});
rl.on("close", () => queue.then(() => process.exit(0)));
write({ ok: true, ready: true, payer: account.address });
