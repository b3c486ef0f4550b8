// The real Vercel AI SDK as a router client, for tests/test_ai_sdk_real.py.
//
//   node ai_sdk_client.mjs <baseURL> <responses|chat> <model> <prompt>
//
// `ai`, `@ai-sdk/openai` and `zod` are loaded from $XROUTER_AI_SDK_DIR (what
// .ci/install-ai-sdk fills). With `responses` the model is `openai(model)`, the SDK's
// default (the Responses API); with `chat` it is `openai.chat(model)` (chat completions).
// Runs generateText, then streamText, each with one tool and up to three steps, then a
// second turn of the first conversation without tools (the SDK's messages of turn one
// plus a question; with the Responses API the SDK sends its earlier answer as an
// `item_reference`, since `store` defaults to true), and
// prints one JSON line per run: the text, the usage the SDK reports, the tool calls it
// executed, the stream's part types and the router's headers of each step.
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(`${process.env.XROUTER_AI_SDK_DIR}/package.json`);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { generateText, streamText, tool, stepCountIs } = await load("ai");
const { createOpenAI } = await load("@ai-sdk/openai");
const { z } = await load("zod");

const [baseURL, api, modelId, prompt] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "router-test-key" });
const model = api === "chat" ? openai.chat(modelId) : openai(modelId);

const calls = [];
const tools = {
  get_weather: tool({
    description: "Current weather of a city",
    inputSchema: z.object({ city: z.string(), unit: z.string() }),
    execute: async ({ city, unit }) => {
      calls.push({ city, unit });
      return `xrouter-ai-sdk-tool-ran: 21 degrees ${unit} in ${city}`;
    },
  }),
};

const upstreams = (steps) => steps.map((step) => step.response?.headers?.["x-xrouter-upstream"]);
const print = (record) => console.log(JSON.stringify(record));

const whole = await generateText({ model, prompt, tools, stopWhen: stepCountIs(3) });
print({
  run: "generateText",
  text: whole.text,
  usage: whole.totalUsage,
  calls: calls.splice(0),
  steps: whole.steps.length,
  upstreams: upstreams(whole.steps),
});

const streamed = streamText({ model, prompt, tools, stopWhen: stepCountIs(3) });
const parts = [];
for await (const part of streamed.fullStream) {
  if (part.type === "error") throw part.error;
  if (parts.at(-1) !== part.type) parts.push(part.type);
}
const steps = await streamed.steps;
print({
  run: "streamText",
  text: await streamed.text,
  usage: await streamed.totalUsage,
  calls: calls.splice(0),
  steps: steps.length,
  upstreams: upstreams(steps),
  parts,
});

const followUp = await generateText({
  model,
  messages: [
    { role: "user", content: prompt },
    ...whole.response.messages,
    { role: "user", content: "Thanks. And in Lyon?" },
  ],
});
print({
  run: "secondTurn",
  text: followUp.text,
  usage: followUp.totalUsage,
  steps: followUp.steps.length,
  upstreams: upstreams(followUp.steps),
});
