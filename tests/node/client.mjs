// A plain Node `ws` client of livegate, as people write them against OpenAI's Realtime API: a text turn, a tool
// round trip, and a response cancelled mid-answer. Driven by tests/test_framework_node.py:
//   node client.mjs ws://127.0.0.1:PORT/v1/realtime?model=gpt-realtime KEY
// Prints one JSON line: {"events": [every server event type], "answers": [...], "calls": [...], "errors": [...]}.
import WebSocket from "ws";

const [url, key] = process.argv.slice(2);
const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${key}` } });
const events = [];
const errors = [];
const waiters = [];

ws.on("message", (data) => {
  const event = JSON.parse(data.toString());
  events.push(event);
  if (event.type === "error") errors.push(event.error);
  for (const waiter of [...waiters]) {
    if (waiter.type === event.type) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(event);
    }
  }
});

function next(type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within 5 s`)), 5000);
    waiters.push({ type, resolve: (e) => { clearTimeout(timer); resolve(e); } });
  });
}

const send = (event) => ws.send(JSON.stringify(event));
const say = (text) => send({
  type: "conversation.item.create",
  item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
});
const text = (done) => done.response.output.flatMap((o) => o.content || []).map((c) => c.text || "").join("");

await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
await next("session.created");
send({
  type: "session.update",
  session: {
    type: "realtime", output_modalities: ["text"], instructions: "Answer briefly.",
    tools: [{
      type: "function", name: "get_weather", description: "Weather for a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    }],
  },
});
await next("session.updated");
const answers = [];
const calls = [];

say("Hello there");
send({ type: "response.create" });
answers.push(text(await next("response.done")));

say("Please call get_weather for Paris");
send({ type: "response.create" });
const call = await next("response.function_call_arguments.done");
calls.push({ name: call.name, arguments: call.arguments });
await next("response.done");
send({
  type: "conversation.item.create",
  item: { type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ temperature_c: 21 }) },
});
send({ type: "response.create" });
answers.push(text(await next("response.done")));

say("Tell me a long story about the sea and the wind");
send({ type: "response.create" });
await next("response.output_text.delta");
send({ type: "response.cancel" });
const cancelled = await next("response.done");
answers.push(cancelled.response.status);

ws.close();
await new Promise((resolve) => ws.once("close", resolve));
console.log(JSON.stringify({ events: events.map((e) => e.type), answers, calls, errors }));
