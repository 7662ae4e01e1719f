// Drives nanogpt-proxy with the official openai npm SDK the way Roo Code's "OpenAI
// Compatible" provider does, and prints what a client sees as one JSON object on stdout.
// Used by openai_node_test.go:
//
//   node openai_sdk.mjs <scenario> <baseURL> <body.json> [clientOptions.json]
//
// scenarios: stream (create with stream:true, chunks assembled by hand as Roo Code does),
// helper (chat.completions.stream + finalChatCompletion), json (non-streaming), error
// (the request must fail; prints the SDK's error).
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';

const [scenario, baseURL, bodyPath, optionsJSON] = process.argv.slice(2);
const body = JSON.parse(readFileSync(bodyPath, 'utf8'));
const client = new OpenAI({
  baseURL,
  apiKey: 'not-provided',
  defaultHeaders: {
    'HTTP-Referer': 'https://github.com/RooVetGit/Roo-Cline',
    'X-Title': 'Roo Code',
    'User-Agent': 'RooCode/3.25.4',
  },
  ...(optionsJSON ? JSON.parse(optionsJSON) : {}),
});

const proxyHeaders = (h) => ({
  request_id: h.get('x-request-id'),
  role: h.get('x-proxy-role'),
  model: h.get('x-proxy-model'),
  backend: h.get('x-proxy-backend'),
  content_type: h.get('content-type'),
});

async function stream() {
  const { data, response } = await client.chat.completions.create(body).withResponse();
  const out = { headers: proxyHeaders(response.headers), chunks: [], content: '', reasoning_content: '',
    tool_calls: [], finish_reason: null, usage: null };
  for await (const chunk of data) {
    out.chunks.push(chunk);
    if (chunk.usage) out.usage = chunk.usage;
    const choice = chunk.choices?.[0];
    if (!choice) continue;
    const d = choice.delta ?? {};
    if (d.content) out.content += d.content;
    if (d.reasoning_content) out.reasoning_content += d.reasoning_content;
    for (const tc of d.tool_calls ?? []) {
      // Roo Code: the first delta of a call carries its id; later ones only add arguments.
      let call = out.tool_calls[tc.index];
      if (!call) call = out.tool_calls[tc.index] = { id: '', name: '', arguments: '', deltas: 0 };
      call.deltas++;
      if (tc.id) call.id = tc.id;
      if (tc.function?.name) call.name = tc.function.name;
      if (tc.function?.arguments) call.arguments += tc.function.arguments;
    }
    if (choice.finish_reason) out.finish_reason = choice.finish_reason;
  }
  return out;
}

async function helper() {
  const runner = client.chat.completions.stream(body);
  let contentEvents = '';
  runner.on('content', (delta) => { contentEvents += delta; });
  const final = await runner.finalChatCompletion();
  const msg = final.choices[0].message;
  return {
    content_events: contentEvents,
    content: msg.content,
    tool_calls: (msg.tool_calls ?? []).map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
    finish_reason: final.choices[0].finish_reason,
    usage: final.usage ?? null,
    model: final.model,
  };
}

async function json() {
  const { data, response } = await client.chat.completions.create(body).withResponse();
  return { headers: proxyHeaders(response.headers), completion: data };
}

async function error() {
  try {
    const res = await client.chat.completions.create(body);
    if (body.stream) for await (const _ of res); // eslint-disable-line no-unused-vars
  } catch (err) {
    return {
      is_api_error: err instanceof OpenAI.APIError,
      class: err.constructor.name,
      status: err.status ?? null,
      message: err.message,
      code: err.code ?? null,
      type: err.type ?? null,
      request_id: err.headers?.get?.('x-request-id') ?? null,
      retry_after: err.headers?.get?.('retry-after') ?? null,
    };
  }
  throw new Error('the request succeeded; an error was expected');
}

const scenarios = { stream, helper, json, error };
if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  process.stdout.write(JSON.stringify(await scenarios[scenario]()) + '\n');
} catch (err) {
  console.error(err?.stack ?? String(err));
  process.exit(1);
}
