// One paid call with the REAL npm x402 auth-capture client (@x402/evm 2.27.0, ./auth-capture/client) and
// @x402/fetch's wrapFetchWithPayment: the 402, the client's PAYMENT-SIGNATURE, the paid answer.
//
//   TESTBED_PAYER_KEY=0x… node pay.mjs '{"url": "https://…/v1/chat/completions", "body": {…},
//       "spendControls": {"allowedAssets": [{"network": "eip155:8453", "asset": "0x…", "maxAmountPerPayment": "1000000"}]}}'
//
// Goes through HTTPS_PROXY when it is set: on Node < 22.21 run it with
// `--require receipts/node/preload.cjs` (the test bed does), and trust the proxy's CA with NODE_EXTRA_CA_CERTS.
// Prints one JSON object on stdout: {status, body, exchanges: [{request: {method, url, headers},
// response: {status, headers}}], paymentRequired, paymentSignature, paymentResponse} (the three x402 headers
// base64-decoded), or {error, stack} with exit status 1.
import { x402Client, wrapFetchWithPayment } from "@x402/fetch";
import { AuthCaptureEvmScheme } from "@x402/evm/auth-capture/client";
import { privateKeyToAccount } from "viem/accounts";

const decode = (value) => (value ? JSON.parse(Buffer.from(value, "base64").toString("utf8")) : null);

async function main() {
  const args = JSON.parse(process.argv[2] || "{}");
  const key = process.env.TESTBED_PAYER_KEY;
  if (!key || !args.url) throw new Error("need TESTBED_PAYER_KEY and {url} in argv[2]");
  const account = privateKeyToAccount(key);
  const client = new x402Client();
  client.register("eip155:*", new AuthCaptureEvmScheme(account));
  // the SDK pays only its known default assets unless told: the test bed's token is listed here
  if (args.spendControls !== undefined) client.setSpendControls(args.spendControls);

  const exchanges = [];
  const recordingFetch = async (input, init) => {
    const request = input instanceof Request ? input : new Request(input, init);
    const headers = Object.fromEntries(request.headers.entries());
    const response = await fetch(request);
    exchanges.push({
      request: { method: request.method, url: request.url, headers },
      response: { status: response.status, headers: Object.fromEntries(response.headers.entries()) },
    });
    return response;
  };
  const paidFetch = wrapFetchWithPayment(recordingFetch, client);
  const response = await paidFetch(args.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(args.headers || {}) },
    body: JSON.stringify(args.body || { model: "testbed-echo-1", messages: [{ role: "user", content: "hi" }] }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  const first = exchanges[0]?.response.headers ?? {};
  const paid = exchanges.find((x) => x.request.headers["payment-signature"]);
  return {
    status: response.status,
    body,
    exchanges,
    paymentRequired: decode(first["payment-required"]),
    paymentSignature: decode(paid?.request.headers["payment-signature"]),
    paymentResponse: decode(response.headers.get("payment-response")),
  };
}

main().then(
  (out) => process.stdout.write(JSON.stringify(out) + "\n"),
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err?.message ?? err), stack: String(err?.stack ?? "") }) + "\n");
    process.exit(1);
  },
);
