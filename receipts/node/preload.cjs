// Routes a Node app's fetch() through the receipts proxy with no code change, on Node versions that
// ignore HTTPS_PROXY. `receipts env` puts it in NODE_OPTIONS as `--require <this file>`.
//
// - Node >= 22.21 (and 24+) honour NODE_USE_ENV_PROXY=1 themselves: this file does nothing there.
// - Older Node: fetch() (and every SDK built on it, such as the openai and anthropic packages) goes
//   through the global undici dispatcher; this sets it to undici's EnvHttpProxyAgent, which reads
//   HTTPS_PROXY, HTTP_PROXY and NO_PROXY. undici comes from npm: the app's own copy, or the one
//   scripts/bootstrap installs beside this project.
// - If no undici is found, it says so on stderr, once: the app's calls would bypass the proxy.
'use strict';

(function routeThroughProxy() {
  const env = process.env;
  const proxy = env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy;
  if (!proxy) return;
  const [major, minor] = process.versions.node.split('.').map(Number);
  const native = (major === 22 && minor >= 21) || major >= 24;
  if (native && env.NODE_USE_ENV_PROXY === '1') return;
  let undici;
  try {
    undici = require(require.resolve('undici', { paths: [process.cwd(), __dirname] }));
  } catch (err) {
    process.stderr.write(
      `receipts: Node ${process.versions.node} ignores HTTPS_PROXY and undici was not found, so this ` +
      `app's calls bypass the proxy. Run \`npm install undici@6\` in the app (or scripts/bootstrap ` +
      `beside receipts), or use reverse mode: receipts proxy --reverse https://<upstream> (README, Node.js).\n`);
    return;
  }
  if (typeof undici.EnvHttpProxyAgent !== 'function') {
    process.stderr.write(`receipts: the undici found is too old for EnvHttpProxyAgent (undici >= 6.11 needed); ` +
                         `this app's calls bypass the proxy.\n`);
    return;
  }
  undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
})();
