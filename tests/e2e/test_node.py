"""Node.js apps, unchanged, through a real `receipts proxy` process: the real `openai` npm package and
plain `fetch`, on the Node that bootstrap provides (20, which ignores HTTPS_PROXY by itself), in a
shell set up by `eval "$(receipts env)"` alone. The preload that line puts in NODE_OPTIONS routes them;
without it they bypass the proxy, as the first test shows."""
import json
import os
import shutil
import subprocess

import pytest

from support.proc import BIN, ROOT, ProxyProcess, receipts_cli, wait_for

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="scripts/bootstrap --test installs Node")

# The app: the openai package's own API (non-streamed, then streamed with a pause between chunks), then
# a bare fetch. It prints what it saw: the X-Receipt-Id of each answer and the time to the first chunk.
APP = r"""
const { createRequire } = require('module');
const [root, base] = process.argv.slice(-2);
const m = createRequire(root + '/')('openai');
const OpenAI = m.OpenAI || m.default || m;
const messages = [{ role: 'user', content: 'hello there' }];
(async () => {
  const client = new OpenAI({ apiKey: 'sk-test-not-a-secret', baseURL: base + '/v1/free', maxRetries: 0 });
  const plain = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages }, { headers: { 'X-Call': 'node-openai' } }).withResponse();
  const t0 = performance.now();
  const stream = await client.chat.completions.create(
    { model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true }, chunk_delay: 0.4 },
    { headers: { 'X-Call': 'node-openai-stream' } });
  let ttfb = null, chunks = 0;
  for await (const chunk of stream) { if (ttfb === null) ttfb = performance.now() - t0; chunks++; }
  const r = await fetch(base + '/v1/free/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json', 'X-Call': 'node-fetch' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages }) });
  await r.json();
  console.log(JSON.stringify({ openai: plain.response.headers.get('x-receipt-id'), ttfb, chunks,
                               fetch: r.status, fetch_receipt: r.headers.get('x-receipt-id') }));
})().catch((e) => { console.error(e); process.exit(1); });
"""

CALLS = ("node-openai", "node-openai-stream", "node-fetch")


def _run(shell: str, env: dict) -> dict:
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"seen": json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def _shell(proxy) -> str:
    return f'eval "$({BIN / "receipts"} env --data {proxy.data} --listen-port {proxy.port})" && '


def _clean_env(proxy) -> dict:
    return {k: v for k, v in os.environ.items() if k not in {*proxy.client_env(), "NODE_OPTIONS"}}


def test_node_20_alone_bypasses_the_proxy(tmp_path, tls, upstream):
    # the finding this guards against: HTTPS_PROXY and NODE_USE_ENV_PROXY=1 are not enough on Node 20
    with ProxyProcess(tmp_path / "data", upstream_ca=tls["ca"]) as proxy:
        env = {**_clean_env(proxy), **proxy.client_env(), "NODE_USE_ENV_PROXY": "1",
               "NODE_EXTRA_CA_CERTS": tls["ca"], "APP": APP}
        seen = _run(f'exec node -e "$APP" {ROOT} {upstream}', env)["seen"]
    assert seen["fetch"] == 200 and seen["openai"] is None and seen["fetch_receipt"] is None


def test_the_openai_npm_package_and_fetch_are_recorded_through_the_pasted_line(tmp_path, tls, upstream):
    # direct first (trusting the upstream's CA), for the time to the first chunk without the proxy
    direct_env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and k != "NODE_OPTIONS"}
    direct = _run(f'exec node -e "$APP" {ROOT} {upstream}',
                  {**direct_env, "NODE_EXTRA_CA_CERTS": tls["ca"], "APP": APP})["seen"]
    with ProxyProcess(tmp_path / "data", "--seal-interval", "0.1", upstream_ca=tls["ca"]) as proxy:
        ran = _run(_shell(proxy) + f'exec node -e "$APP" {ROOT} {upstream}', {**_clean_env(proxy), "APP": APP})
        seen = ran["seen"]
        query = ("SELECT c.receipt_id, c.model, c.prompt_tokens, c.completion_tokens, c.stream, c.status, "
                 "json_extract_string(e.data, '$.headers.\"x-call\"') AS call "
                 "FROM calls c JOIN events e ON e.receipt_id = c.receipt_id AND e.type = 'request'")

        def recorded():
            out = receipts_cli("sql", "--json", query, data=proxy.data)
            rows = json.loads(out.stdout) if out.returncode == 0 else []
            return rows if len(rows) >= len(CALLS) else None

        rows = {r["call"]: r for r in wait_for(recorded, timeout=30)}
    assert "bypass" not in ran["stderr"]
    assert set(rows) == set(CALLS)
    assert seen["openai"] == rows["node-openai"]["receipt_id"]
    assert seen["fetch"] == 200 and seen["fetch_receipt"] == rows["node-fetch"]["receipt_id"]
    for name, r in rows.items():
        assert (r["model"], r["status"], r["stream"]) == ("gpt-4o-mini", 200, name.endswith("-stream")), r
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0, r
    # still streamed, not buffered: the first chunk comes well before the first 400 ms pause ends (a CI
    # run once saw 84 ms here against 8 ms direct, so the margin is the pause, not a tight latency bound;
    # tests/e2e/test_sdks.py holds the Python clients to 50 ms of direct on a warm connection)
    assert seen["chunks"] == direct["chunks"] > 2
    assert seen["ttfb"] < direct["ttfb"] + 250, (seen["ttfb"], direct["ttfb"])


def test_the_preload_says_so_when_it_cannot_route(tmp_path, tls, upstream):
    # a preload with no undici beside it or in the app: one line on stderr, not a silent bypass
    lonely = tmp_path / "preload.cjs"
    shutil.copy(ROOT / "receipts" / "node" / "preload.cjs", lonely)
    with ProxyProcess(tmp_path / "data", upstream_ca=tls["ca"]) as proxy:
        env = {**_clean_env(proxy), **proxy.client_env(), "NODE_EXTRA_CA_CERTS": tls["ca"], "APP": APP,
               "NODE_OPTIONS": f"--require {lonely}"}
        ran = subprocess.run(["bash", "-c", f'cd {tmp_path} && exec node -e "$APP" {ROOT} {upstream}'], env=env,
                             capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stderr.count("bypass the proxy") == 1 and "npm install undici@6" in ran.stderr
