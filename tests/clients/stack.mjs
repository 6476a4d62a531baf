// Starts turnpike-sim and turnpike on free ports for the SDK tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const binDir = process.env.TURNPIKE_BIN_DIR;
if (!binDir) throw new Error('TURNPIKE_BIN_DIR must point at build/bin');

function start(binary, args, env = {}) {
  const child = spawn(join(binDir, binary), args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${binary} did not start:\n${log}`)), 10000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/"msg":"listening".*"port":(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => reject(new Error(`${binary} exited ${code}:\n${log}`)));
  });
  return { child, port, log: () => log };
}

export async function startStack() {
  const dir = mkdtempSync(join(tmpdir(), 'turnpike-sdk-'));
  const sim = start('turnpike-sim', ['--listen', '127.0.0.1:0', '--api-key', 'sk-upstream']);
  const simPort = await sim.port;
  const config = `
listen: "127.0.0.1:0"
providers:
  - { name: sim-openai, api: openai, base_url: "http://127.0.0.1:${simPort}/v1", api_key_env: TP_SDK_KEY }
  - { name: sim-anthropic, api: anthropic, base_url: "http://127.0.0.1:${simPort}/v1", api_key_env: TP_SDK_KEY }
models:
  - name: gpt-4o-mini
    routes: [{ provider: sim-openai, upstream_model: gpt-4o-mini-2024-07-18, input_per_mtok: "0.15", output_per_mtok: "0.60" }]
  - name: gpt-5
    routes: [{ provider: sim-openai, input_per_mtok: "1.25", output_per_mtok: "10", priority_multiplier: "2" }]
  - name: gpt-flex
    routes: [{ provider: sim-openai, input_per_mtok: "1", output_per_mtok: "4", flex_input_per_mtok: "0.5", flex_output_per_mtok: "2" }]
  - name: text-embedding-3-small
    routes: [{ provider: sim-openai, input_per_mtok: "0.02", output_per_mtok: "0" }]
  - name: claude-sonnet
    routes: [{ provider: sim-anthropic, upstream_model: claude-sonnet-4-5, input_per_mtok: "3", output_per_mtok: "15" }]
  - name: claude-opus
    routes: [{ provider: sim-anthropic, upstream_model: claude-opus-4-6, input_per_mtok: "5", output_per_mtok: "25", fast_multiplier: "6" }]
`;
  const configPath = join(dir, 'turnpike.yaml');
  writeFileSync(configPath, config);
  const adminKey = 'sdk-test-admin-key';
  const gw = start('turnpike', ['serve', '--config', configPath, '--data-dir', join(dir, 'var')],
    { TP_SDK_KEY: 'sk-upstream', TURNPIKE_ADMIN_KEY: adminKey });
  const port = await gw.port;
  const baseURL = `http://127.0.0.1:${port}`;
  const admin = async (path, body) => {
    const res = await fetch(`${baseURL}/admin/v1${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status !== 201) throw new Error(`admin ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const account = await admin('/accounts', { name: 'sdk tests' });
  const { key } = await admin(`/accounts/${account.id}/keys`, { name: 'sdk' });
  return {
    baseURL,
    key,
    stop() {
      gw.child.kill('SIGKILL');
      sim.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
