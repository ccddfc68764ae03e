// A paid, OpenAI-compatible chat route behind the REAL mppx server (0.11.0), charging every call against an
// MPP `session` (the `tempo` method's TIP-1034 payment channel) on the chain behind `rpcUrl`.
//
//   MPP_SECRET_KEY=… TESTBED_PAYEE_KEY=0x… node server.mjs '{"rpcUrl": "http://127.0.0.1:…/server",
//       "currency": "0x20c0…", "price": "0.01", "suggestedDeposit": "0.03", "chainId": 4217,
//       "tls": {"cert": "…", "key": "…"}, "settleEveryUnits": 3, "realm": "127.0.0.1"}'
//
// Routes: POST /v1/chat/completions (paid: `mppx.session({amount: price, unitType: "request"})`), GET /healthz.
// Without a credential the answer is a 402 with `WWW-Authenticate: Payment … intent="session"`; with one, the
// SDK checks it (open: broadcasts the client's signed open transaction and reads the channel back; voucher:
// checks the signature and the cumulative amount; topUp: broadcasts; close: sends `close` on chain from the
// payee account), charges `price` per content request and answers with `Payment-Receipt`. Management posts
// (topUp, close, a bodyless voucher) get a 204 from the SDK without reaching the handler.
//
// The payee's key signs the server's own transactions (close, settle); `settleEveryUnits` turns on the SDK's
// settlement schedule (a `settle` transaction every that many charged calls).
// Prints `{"event": "listening", "url": …}` once, then one JSON line per request and per settlement.
import http from "node:http";
import https from "node:https";
import { readFileSync } from "node:fs";
import { Mppx, NodeListener, Request as MppxRequest, tempo } from "mppx/server";
import { createClient, http as httpTransport } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { tempo as tempoChain } from "viem/chains";
import { Agent, fetch as undiciFetch } from "undici";

const log = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function chatCompletion(req) {
  const messages = Array.isArray(req?.messages) ? req.messages : [];
  const last = messages.length ? String(messages[messages.length - 1]?.content ?? "") : "";
  const content = `echo: ${last}`;
  const words = (s) => (s.match(/\S+/g) || []).length;
  return {
    id: "chatcmpl-testbed-" + Math.random().toString(16).slice(2, 14),
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: typeof req?.model === "string" ? req.model : "testbed-echo-1",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
    usage: { prompt_tokens: words(last), completion_tokens: words(content), total_tokens: words(last) + words(content) },
  };
}

async function main() {
  const cfg = JSON.parse(process.argv[2] || "{}");
  const key = process.env.TESTBED_PAYEE_KEY;
  if (!key || !cfg.rpcUrl || !cfg.currency) throw new Error("need TESTBED_PAYEE_KEY and {rpcUrl, currency}");
  const account = privateKeyToAccount(key);
  const chain = { ...tempoChain, id: cfg.chainId ?? tempoChain.id };
  // the node is local: never through a proxy, whatever the environment says
  const direct = new Agent();
  const rpcFetch = (url, init) => undiciFetch(url, { ...init, dispatcher: direct });
  const client = createClient({ chain, transport: httpTransport(cfg.rpcUrl, { fetchFn: rpcFetch }), account });

  const settlements = [];
  const mppx = Mppx.create({
    methods: [
      tempo.session({
        account,
        currency: cfg.currency,
        chainId: chain.id,
        getClient: () => client,
        ...(cfg.suggestedDeposit ? { suggestedDeposit: cfg.suggestedDeposit } : {}),
        ...(cfg.settleEveryUnits ? { settlementSchedule: { units: cfg.settleEveryUnits } } : {}),
        onSessionSettlement(s) {
          const out = { event: "settlement", trigger: s.trigger, txHash: s.txHash, channelId: s.channelId,
                        amount: String(s.amount), delta: String(s.delta) };
          settlements.push(out);
          log(out);
        },
      }),
    ],
    realm: cfg.realm ?? "127.0.0.1",
    secretKey: process.env.MPP_SECRET_KEY,
  });
  const paid = mppx.session({ amount: cfg.price ?? "0.01", unitType: "request" });

  async function handle(request) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/healthz") return Response.json({ ok: true });
    if (request.method === "GET" && url.pathname === "/testbed/settlements") return Response.json(settlements);
    if (url.pathname !== "/v1/chat/completions") return Response.json({ error: "not found" }, { status: 404 });
    const text = request.method === "POST" ? await request.clone().text() : "";
    const result = await paid(request);
    if (result.status === 402) return result.challenge;
    let body = {};
    try {
      body = text ? JSON.parse(text) : {};
    } catch {}
    return result.withReceipt(Response.json(chatCompletion(body), { headers: { "x-request-id": "req_" + Date.now() } }));
  }

  const listener = async (req, res) => {
    let response;
    try {
      response = await handle(MppxRequest.fromNodeListener(req, res));
    } catch (err) {
      log({ event: "error", message: String(err?.message ?? err), stack: String(err?.stack ?? "") });
      response = Response.json({ error: String(err?.message ?? err) }, { status: 500 });
    }
    log({ event: "request", method: req.method, path: req.url, status: response.status });
    await NodeListener.sendResponse(res, response);
  };
  const server = cfg.tls
    ? https.createServer({ cert: readFileSync(cfg.tls.cert), key: readFileSync(cfg.tls.key) }, listener)
    : http.createServer(listener);
  server.keepAliveTimeout = 1000;
  server.listen(cfg.port ?? 0, "127.0.0.1", () => {
    const host = cfg.tls ? "localhost" : "127.0.0.1";
    log({ event: "listening", url: `${cfg.tls ? "https" : "http"}://${host}:${server.address().port}` });
  });
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  log({ event: "fatal", message: String(err?.message ?? err), stack: String(err?.stack ?? "") });
  process.exit(1);
});
