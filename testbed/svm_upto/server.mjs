// A paid resource server for x402 `upto` on Solana, with the real npm SDK: express + @x402/express's
// paymentMiddleware + @x402/svm's UptoSvmScheme server. Each call authorizes up to --cap atomic units
// and is charged its actual price below that: the handler names it with the SDK's
// setSettlementOverrides(res, {amount}) (the `Settlement-Overrides` response header the middleware
// reads, then strips), and the facilitator claims exactly that amount from the payment channel.
//
// The charge of a call: the request header `X-Testbed-Charge` (atomic units) if sent, else --charge.
// The receiver authorizer (the key that signs the channel vouchers) is this server's own
// (--authorizer), so the facilitator needs no caller authentication.
//
//   node server.mjs --facilitator http://127.0.0.1:4020 --rpc http://127.0.0.1:8899 --mint <mint> \
//        --pay-to <owner> [--cap 10000] [--charge 3000] \
//        [--memo text] [--token-program Tokenkeg...] [--tls-cert f --tls-key f] [--port 0]
//
// The authorizer's keypair (base58 of its 64 bytes) comes from $TESTBED_UPTO_AUTHORIZER_KEY (or --authorizer,
// visible to `ps`). Prints one JSON line {"listening": port, "authorizer": address} when it serves.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';
import express from 'express';
import { createKeyPairSignerFromBytes, getBase58Encoder } from '@solana/kit';
import { HTTPFacilitatorClient } from '@x402/core/server';
import { paymentMiddleware, setSettlementOverrides, x402ResourceServer } from '@x402/express';
import { UptoSvmScheme } from '@x402/svm/upto/server';

const { values: args } = parseArgs({
  options: {
    facilitator: { type: 'string' },
    rpc: { type: 'string' },
    mint: { type: 'string' },
    'pay-to': { type: 'string' },
    authorizer: { type: 'string' },
    network: { type: 'string', default: 'solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1' },
    cap: { type: 'string', default: '10000' },
    charge: { type: 'string', default: '3000' },
    memo: { type: 'string' },
    'token-program': { type: 'string', default: 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA' },
    'max-timeout': { type: 'string', default: '300' },
    path: { type: 'string', default: '/v1/chat/completions' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
args.authorizer ??= process.env.TESTBED_UPTO_AUTHORIZER_KEY;
for (const need of ['facilitator', 'rpc', 'mint', 'pay-to', 'authorizer']) {
  if (!args[need]) {
    console.error(`need --${need}`);
    process.exit(2);
  }
}

const authorizer = await createKeyPairSignerFromBytes(getBase58Encoder().encode(args.authorizer));
const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: args.facilitator })).register(
  args.network,
  new UptoSvmScheme({ receiverAuthorizerSigner: authorizer, rpcUrl: args.rpc }),
);
const extra = { tokenProgram: args['token-program'] };
if (args.memo) extra.memo = args.memo;
const routes = {
  [`POST ${args.path}`]: {
    accepts: {
      scheme: 'upto',
      network: args.network,
      payTo: args['pay-to'],
      price: { amount: args.cap, asset: args.mint, extra },
      maxTimeoutSeconds: Number(args['max-timeout']),
    },
    description: 'testbed chat completion, metered (x402 upto on Solana)',
    mimeType: 'application/json',
  },
};

const app = express();
app.use(express.json());
app.use(paymentMiddleware(routes, resourceServer));
app.post(args.path, (req, res) => {
  const charge = String(req.get('x-testbed-charge') ?? args.charge);
  if (!/^\d+$/.test(charge)) return res.status(400).json({ error: 'X-Testbed-Charge must be atomic units' });
  setSettlementOverrides(res, { amount: charge });
  const prompt = req.body?.messages?.at?.(-1)?.content ?? '';
  res.json({
    id: `chatcmpl-upto-${Date.now()}`,
    object: 'chat.completion',
    model: req.body?.model ?? 'testbed-echo-1',
    choices: [{ index: 0, message: { role: 'assistant', content: `echo: ${prompt}` }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
    x_testbed: { cap: args.cap, charge },
  });
});
app.get('/health', (_req, res) => res.json({ ok: true }));

const server = args['tls-cert']
  ? https.createServer({ cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) }, app)
  : http.createServer(app);
server.keepAliveTimeout = 30_000;
server.listen(Number(args.port), args.host, () => {
  console.log(JSON.stringify({ listening: server.address().port, authorizer: authorizer.address }));
});
const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
