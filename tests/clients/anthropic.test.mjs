// The official @anthropic-ai/sdk npm package through turnpike.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { startStack } from './stack.mjs';

let stack;
let client;
before(async () => {
  stack = await startStack();
  client = new Anthropic({ apiKey: stack.key, baseURL: stack.baseURL, maxRetries: 0 });
});
after(() => stack?.stop());

test('messages, non-stream', async () => {
  const m = await client.messages.create({
    model: 'claude-sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'Hello' }],
  });
  assert.equal(m.type, 'message');
  assert.equal(m.content[0].type, 'text');
  assert.equal(m.usage.output_tokens, 5);
  assert.equal(m.stop_reason, 'max_tokens');
  assert.match(m._request_id, /^req_/);  // Turnpike's id, where the SDK looks for it
});

test('messages, stream: every event and cumulative usage arrive', async () => {
  const stream = await client.messages.create({
    model: 'claude-sonnet', max_tokens: 7, stream: true,
    messages: [{ role: 'user', content: 'Hello' }],
  });
  const types = [];
  let deltas = 0;
  let outputTokens = 0;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'content_block_delta') deltas += 1;
    if (event.type === 'message_delta') outputTokens = event.usage.output_tokens;
  }
  assert.equal(deltas, 7);
  assert.equal(outputTokens, 7);
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
});

test('messages.stream helper assembles the final message', async () => {
  const final = await client.messages.stream({
    model: 'claude-sonnet', max_tokens: 3, messages: [{ role: 'user', content: 'Hi' }],
  }).finalMessage();
  assert.equal(final.usage.output_tokens, 3);
  assert.equal(final.content[0].text.trim().split(/\s+/).length, 3);
});

test('fast mode is billed at its price where a route prices it, and refused elsewhere', async () => {
  const m = await client.messages.create({
    model: 'claude-opus', max_tokens: 4, speed: 'fast',
    messages: [{ role: 'user', content: 'Hello' }], sim: { input_tokens: 1000 },
  });
  assert.equal(m.usage.speed, 'fast');
  const usage = await fetch(`${stack.baseURL}/api/usage?limit=1000`, {
    headers: { Authorization: `Bearer ${stack.key}` },
  }).then((r) => r.json());
  const row = usage.data.find((r) => r.request_id === m._request_id);
  // 1000 input at 5 USD and 4 output at 25 USD per million tokens, times 6.
  assert.equal(row.cost_usd, '0.0306');
  await assert.rejects(
    client.messages.create({ model: 'claude-sonnet', max_tokens: 1, speed: 'fast', messages: [] }),
    (e) => e instanceof Anthropic.BadRequestError && e.status === 400 &&
      /has no route that prices speed .*fast.*fast_multiplier/.test(e.message));
});

test('messages.countTokens', async () => {
  const counted = await client.messages.countTokens({
    model: 'claude-sonnet', messages: [{ role: 'user', content: 'Hello there' }],
  });
  assert.ok(Number.isInteger(counted.input_tokens) && counted.input_tokens > 0);
});

test('models list and retrieve, in Anthropic\'s shapes', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.type, 'model');
    assert.equal(m.display_name, m.id);
    assert.ok(!Number.isNaN(Date.parse(m.created_at)));
    ids.push(m.id);
  }
  // Only what messages.create can be sent: models with a route on Anthropic's API.
  assert.deepEqual(ids, ['claude-sonnet', 'claude-opus']);
  // A page at a time, as the SDK follows them (after_id), and one page as asked.
  const paged = [];
  for await (const m of client.models.list({ limit: 1 })) paged.push(m.id);
  assert.deepEqual(paged, ids);
  const first = await client.models.list({ limit: 1 });
  assert.deepEqual(first.data.map((m) => m.id), ['claude-sonnet']);
  assert.equal(first.has_more, true);
  const m = await client.models.retrieve('claude-sonnet');
  assert.equal(m.id, 'claude-sonnet');
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof Anthropic.NotFoundError);
});

test('errors surface as typed SDK errors', async () => {
  await assert.rejects(
    client.messages.create({ model: 'nope', max_tokens: 1, messages: [] }),
    (e) => e instanceof Anthropic.NotFoundError && e.status === 404);
  await assert.rejects(
    client.messages.create({ model: 'claude-sonnet', max_tokens: 1, messages: [], sim: { error_status: 429 } }),
    (e) => e instanceof Anthropic.RateLimitError && e.status === 429);
  await assert.rejects(
    client.messages.create({ model: 'claude-sonnet', max_tokens: 1, messages: [], sim: { error_status: 500 } }),
    (e) => e instanceof Anthropic.InternalServerError && e.status === 502);
  await assert.rejects(
    client.messages.create({ model: 'gpt-4o-mini', max_tokens: 1, messages: [] }),
    (e) => e instanceof Anthropic.BadRequestError && e.status === 400);
});
