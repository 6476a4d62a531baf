// The official openai npm package through turnpike.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack } from './stack.mjs';

let stack;
let client;
before(async () => {
  stack = await startStack();
  client = new OpenAI({ apiKey: stack.key, baseURL: `${stack.baseURL}/v1`, maxRetries: 0 });
});
after(() => stack?.stop());

test('chat completion, non-stream', async () => {
  const c = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Say hello' }],
    max_tokens: 6,
  });
  assert.equal(c.object, 'chat.completion');
  assert.ok(c.choices[0].message.content.length > 0);
  assert.equal(c.usage.completion_tokens, 6);
  assert.equal(c.choices[0].finish_reason, 'length');
});

test('chat completion, stream: every chunk and the final usage arrive', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Count' }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: 9,
  });
  let contentChunks = 0;
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) contentChunks += 1;
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(contentChunks, 9);
  assert.equal(finish, 'length');
  assert.equal(usage?.completion_tokens, 9);
});

test('chat completion, stream helper collects the whole message', async () => {
  const runner = client.chat.completions.stream({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hi' }],
    max_tokens: 4,
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content.trim().split(/\s+/).length, 4);
  // Not asked for: no usage at all, as from the provider (not the null that asking for it
  // on the client's behalf puts in every chunk).
  assert.equal(final.usage, undefined);
});

test('a whole answer served by the flex tier (streamed upstream) parses as one', async () => {
  const c = await client.chat.completions.create({
    model: 'gpt-flex', max_tokens: 5, messages: [{ role: 'user', content: 'Hello' }],
    start_within: '00h-00m-05s', sim: { flex_429_rate: 0, flex_ttft_ms: 0 },
  });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.service_tier, 'flex');
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(c.choices[0].message.content.trim().split(/\s+/).length, 5);
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.equal(c.usage.completion_tokens, 5);
});

test('embeddings (the SDK asks for base64 and decodes it)', async () => {
  const e = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(e.data.length, 2);
  assert.equal(e.data[1].embedding.length, 8);
  assert.ok(Math.abs(e.data[0].embedding[0] - 0.01) < 1e-6);
});

test('priority processing is billed at its price where a route prices it', async () => {
  const c = await client.chat.completions.create({
    model: 'gpt-5', service_tier: 'priority', max_tokens: 4,
    messages: [{ role: 'user', content: 'Hello' }], sim: { input_tokens: 1000 },
  });
  assert.equal(c.service_tier, 'priority');
  const usage = await fetch(`${stack.baseURL}/api/usage?limit=1000`, {
    headers: { Authorization: `Bearer ${stack.key}` },
  }).then((r) => r.json());
  const row = usage.data.find((r) => r.request_id === c._request_id);
  assert.equal(row.price_multiplier, '2.00');
  // 1000 input at 1.25 USD and 4 output at 10 USD per million tokens, times 2.
  assert.equal(row.cost_usd, '0.00258');
  await assert.rejects(
    client.chat.completions.create({
      model: 'gpt-4o-mini', service_tier: 'priority', messages: [{ role: 'user', content: 'x' }],
    }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'option_not_priced');
});

test('models list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  // Not the models only Anthropic's API serves: this SDK could not call them.
  assert.deepEqual(ids, ['gpt-4o-mini', 'gpt-5', 'gpt-flex', 'text-embedding-3-small']);
});

test('models retrieve', async () => {
  const m = await client.models.retrieve('gpt-4o-mini');
  assert.equal(m.id, 'gpt-4o-mini');
  assert.equal(m.object, 'model');
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});

test('errors surface as typed SDK errors', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && /does not exist/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o-mini', messages: [], privacy_tier: 'public' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o-mini', messages: [], sim: { error_status: 503 } }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 502);
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o-mini', messages: [], sim: { error_status: 429 } }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
  const bare = new OpenAI({ apiKey: 'x', baseURL: `${stack.baseURL}/v1`, maxRetries: 0,
    defaultHeaders: { Authorization: null } });
  await assert.rejects(
    bare.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

test('a stream the upstream cuts short fails in the SDK, never looks complete', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini', messages: [], stream: true, sim: { output_tokens: 10, drop_after_chunks: 2 },
  });
  await assert.rejects(async () => { for await (const _ of stream) { /* drain */ } });
});
