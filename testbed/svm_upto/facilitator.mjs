// The x402 facilitator for the `upto` scheme on Solana, with the real npm SDK (@x402/core's
// x402Facilitator + @x402/svm's UptoSvmScheme facilitator), served over HTTP the way the SDK's
// HTTPFacilitatorClient calls it: GET /supported, POST /verify, POST /settle ({x402Version,
// paymentPayload, paymentRequirements}). GET /settlements lists every /settle answer (for tests).
//
//   TESTBED_SVM_FEE_PAYER_KEY=<base58 64-byte keypair> node facilitator.mjs --rpc http://127.0.0.1:8899 \
//        [--network solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1] [--port 0]
//
// (the key may also be given as --fee-payer, visible to `ps`)
//
// Prints one JSON line {"listening": port, "feePayer": ...} when it serves.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { createKeyPairSignerFromBytes, getBase58Encoder } from '@solana/kit';
import { x402Facilitator } from '@x402/core/facilitator';
import { toFacilitatorSvmSigner } from '@x402/svm';
import { UptoSvmScheme } from '@x402/svm/upto/facilitator';

const { values: args } = parseArgs({
  options: {
    rpc: { type: 'string' },
    'fee-payer': { type: 'string' },
    network: { type: 'string', default: 'solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
args['fee-payer'] ??= process.env.TESTBED_SVM_FEE_PAYER_KEY;
if (!args.rpc || !args['fee-payer']) {
  console.error('need --rpc and --fee-payer (or $TESTBED_SVM_FEE_PAYER_KEY)');
  process.exit(2);
}

const signer = await createKeyPairSignerFromBytes(getBase58Encoder().encode(args['fee-payer']));
const svmSigner = toFacilitatorSvmSigner(signer, { defaultRpcUrl: args.rpc });
const facilitator = new x402Facilitator().register(args.network, new UptoSvmScheme(svmSigner));
const settlements = [];

const json = (res, status, body) => {
  const raw = Buffer.from(JSON.stringify(body, (_, v) => (typeof v === 'bigint' ? v.toString() : v)));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': raw.length });
  res.end(raw);
};

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === 'GET' && req.url === '/supported') return json(res, 200, facilitator.getSupported());
    if (req.method === 'GET' && req.url === '/settlements') return json(res, 200, settlements);
    if (req.method === 'GET' && req.url === '/health') return json(res, 200, { ok: true });
    if (req.method === 'POST' && (req.url === '/verify' || req.url === '/settle')) {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (req.url === '/verify') {
        return json(res, 200, await facilitator.verify(body.paymentPayload, body.paymentRequirements));
      }
      const result = await facilitator.settle(body.paymentPayload, body.paymentRequirements);
      settlements.push({ requirements: body.paymentRequirements, result });
      return json(res, 200, result);
    }
    return json(res, 404, { error: 'not found' });
  } catch (err) {
    console.error('facilitator error:', err);
    return json(res, 500, { error: String(err?.message ?? err) });
  }
});
server.keepAliveTimeout = 30_000;
server.listen(Number(args.port), args.host, () => {
  console.log(JSON.stringify({ listening: server.address().port, feePayer: signer.address }));
});
const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
