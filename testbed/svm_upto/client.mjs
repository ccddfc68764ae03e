// A paid call with x402 `upto` on Solana, with the real npm SDK: @x402/fetch's wrapFetchWithPayment
// around an x402Client with @x402/svm's UptoSvmScheme client (it signs a payment-channel `open`
// transaction depositing the cap). The HTTP requests go through --proxy (an HTTP(S) proxy such as
// mitmproxy: undici's ProxyAgent, CONNECT for https) trusting --ca (a PEM file, e.g. the proxy's CA);
// the Solana JSON-RPC reads (mint, blockhash, slot) go straight to --rpc.
//
//   TESTBED_UPTO_PAYER_KEY=<base58 64-byte keypair> node client.mjs --url http://127.0.0.1:8080/v1/chat/completions \
//        --rpc http://127.0.0.1:8899 --mint <mint> [--max-amount N] [--proxy http://127.0.0.1:8081]
//        [--ca proxy-ca.pem] [--header 'X-Testbed-Charge: 3000'] [--body '{"model": ...}']
//
// Prints one JSON object: {status, headers, body (base64), exchanges: [{method, url, request_headers,
// status, response_headers}], error}. Headers are [name, value] pairs.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Agent, ProxyAgent, fetch as undiciFetch } from 'undici';
import { createKeyPairSignerFromBytes, getBase58Encoder } from '@solana/kit';
import { x402Client } from '@x402/core/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { UptoSvmScheme } from '@x402/svm/upto/client';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    keypair: { type: 'string' },
    rpc: { type: 'string' },
    mint: { type: 'string' },
    network: { type: 'string', default: 'solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1' },
    'max-amount': { type: 'string', default: '1000000' },
    method: { type: 'string', default: 'POST' },
    body: { type: 'string', default: '{"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello"}]}' },
    header: { type: 'string', multiple: true, default: [] },
    proxy: { type: 'string' },
    ca: { type: 'string' },
    insecure: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '60' },
  },
});
args.keypair ??= process.env.TESTBED_UPTO_PAYER_KEY;
for (const need of ['url', 'keypair', 'rpc', 'mint']) {
  if (!args[need]) {
    console.error(`need --${need}`);
    process.exit(2);
  }
}

const tls = {};
if (args.ca) tls.ca = fs.readFileSync(args.ca);
if (args.insecure) tls.rejectUnauthorized = false;
const timeoutMs = Number(args.timeout) * 1000;
const dispatcher = args.proxy
  ? new ProxyAgent({ uri: args.proxy, requestTls: tls, proxyTls: tls, headersTimeout: timeoutMs, bodyTimeout: timeoutMs })
  : new Agent({ connect: tls, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });

const exchanges = [];
// The SDK hands its fetch Request objects (Node's own class); they are re-issued with npm undici's
// fetch, whose dispatcher is the proxy, and every exchange is kept as sent and received.
async function recordingFetch(input, init) {
  const request = input instanceof Request ? input : new Request(input, init);
  const body = ['GET', 'HEAD'].includes(request.method) ? undefined : Buffer.from(await request.arrayBuffer());
  const requestHeaders = [...request.headers.entries()];
  const response = await undiciFetch(request.url, {
    method: request.method, headers: requestHeaders, body, dispatcher, redirect: 'manual',
  });
  const content = Buffer.from(await response.arrayBuffer());
  exchanges.push({
    method: request.method, url: request.url, request_headers: requestHeaders,
    status: response.status, response_headers: [...response.headers.entries()],
  });
  return new Response(content.length ? content : null, { status: response.status, headers: response.headers });
}

const signer = await createKeyPairSignerFromBytes(getBase58Encoder().encode(args.keypair));
const client = new x402Client();
client.register(args.network, new UptoSvmScheme(signer, { rpcUrl: args.rpc }));
// Our mint is no default stablecoin: opt in to it, with a cap per payment, as an app would.
client.setSpendControls({ allowedAssets: [{ network: args.network, asset: args.mint, maxAmountPerPayment: args['max-amount'] }] });
const paidFetch = wrapFetchWithPayment(recordingFetch, client);

const headers = { 'Content-Type': 'application/json' };
for (const h of args.header) {
  const at = h.indexOf(':');
  headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
}
const out = { status: null, headers: [], body: '', exchanges, error: null };
try {
  const response = await paidFetch(args.url, {
    method: args.method, headers, body: ['GET', 'HEAD'].includes(args.method) ? undefined : args.body,
  });
  out.status = response.status;
  out.headers = [...response.headers.entries()];
  out.body = Buffer.from(await response.arrayBuffer()).toString('base64');
} catch (err) {
  out.error = `${err?.name ?? 'Error'}: ${err?.message ?? err}${err?.cause ? ` (cause: ${err.cause?.message ?? err.cause})` : ''}`;
}
process.stdout.write(JSON.stringify(out) + '\n');
await dispatcher.close().catch(() => {});
process.exit(out.error ? 1 : 0);
