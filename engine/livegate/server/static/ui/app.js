// livegate's admin page: plain JS over the management API (no build step, no CDN). The master key stays in
// this tab's sessionStorage and travels only as `Authorization: Bearer` to this gateway.
"use strict";

const COLORS = ["#e4572e", "#17bebb", "#ffc914", "#2e282a", "#76b041", "#8d6a9f", "#3c91e6", "#d1495b"];
const DAYS = 14;
const state = window.livegateAdmin = {
  signedIn: false, keys: [], teams: [], sessions: [], errors: [], report: null,
  chart: { drawn: false, days: [], series: [] }, newKey: null, lastError: null, editing: null, transcript: null,
};
const $ = (id) => document.getElementById(id);
let timers = [];

function masterKey() { return sessionStorage.getItem("livegate-master-key") || ""; }

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${masterKey()}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data;
}

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) state.lastError = text;
}

async function act(what, fn) {
  try {
    const result = await fn();
    say(what);
    await refresh();
    return result;
  } catch (error) {
    say(`${what} failed: ${error.message}`, true);
    return null;
  }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(td, label, onClick, name) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (name) b.dataset.action = name;
  b.addEventListener("click", onClick);
  td.appendChild(b);
  return b;
}

function money(value) {
  if (value === null || value === undefined) return "–";
  return value < 0.01 ? `$${value.toFixed(6)}` : `$${value.toFixed(2)}`;
}

function budget(spend, max) {
  return max === null || max === undefined ? money(spend) : `${money(spend)} / ${money(max)}`;
}

function time(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : ""; }

// --- forms ------------------------------------------------------------------------------------------------

function formBody(form, numbers, lists) {
  const body = {};
  for (const input of form.querySelectorAll("input")) {
    const value = input.value.trim();
    if (!value) continue;
    if (lists.includes(input.name)) body[input.name] = value.split(",").map((s) => s.trim()).filter(Boolean);
    else if (numbers.includes(input.name)) body[input.name] = Number(value);
    else body[input.name] = value;
  }
  return body;
}

function fillForm(form, record) {
  for (const input of form.querySelectorAll("input")) {
    const value = record[input.name];
    input.value = value === null || value === undefined ? "" : Array.isArray(value) ? value.join(", ") : value;
  }
}

function resetForm(kind) {
  const form = $(`${kind}-form`);
  form.reset();
  state.editing = null;
  $(`${kind}-submit`).textContent = kind === "key" ? "Create key" : "Create team";
  $(`${kind}-cancel`).hidden = true;
  if (kind === "team") form.querySelector("[name=team_id]").disabled = false;
}

function edit(kind, record) {
  const form = $(`${kind}-form`);
  fillForm(form, record);
  state.editing = { kind, id: kind === "key" ? record.token : record.team_id };
  $(`${kind}-submit`).textContent = "Save";
  $(`${kind}-cancel`).hidden = false;
  if (kind === "team") form.querySelector("[name=team_id]").disabled = true;
}

const NUMBERS = ["max_budget", "rpm_limit", "max_parallel_requests"];

async function submitKey(event) {
  event.preventDefault();
  const body = formBody($("key-form"), NUMBERS, ["models"]);
  if (state.editing && state.editing.kind === "key") {
    const token = state.editing.id;
    if (await act("Key saved", () => api("POST", "/key/update", { key: token, ...body }))) resetForm("key");
    return;
  }
  const created = await act("Key created", () => api("POST", "/key/generate", body));
  if (created) {
    showKey(created.key);
    resetForm("key");
  }
}

async function submitTeam(event) {
  event.preventDefault();
  const body = formBody($("team-form"), NUMBERS, ["models"]);
  if (state.editing && state.editing.kind === "team") {
    delete body.team_id;
    const id = state.editing.id;
    if (await act("Team saved", () => api("POST", "/team/update", { team_id: id, ...body }))) resetForm("team");
    return;
  }
  if (await act("Team created", () => api("POST", "/team/new", body))) resetForm("team");
}

function showKey(key) {
  state.newKey = key;
  $("new-key-value").textContent = key;
  $("new-key").hidden = false;
}

// --- tables -----------------------------------------------------------------------------------------------

function renderKeys() {
  const body = $("key-rows");
  body.replaceChildren();
  for (const key of state.keys) {
    const row = document.createElement("tr");
    row.dataset.token = key.token;
    cell(row, key.key_alias);
    cell(row, key.token.slice(0, 12));
    cell(row, key.team_id);
    cell(row, key.user_id);
    cell(row, (key.models || []).join(", ") || "all");
    cell(row, budget(key.spend, key.max_budget));
    cell(row, key.blocked ? "blocked" : "active", key.blocked ? "blocked" : "");
    const actions = cell(row, "");
    button(actions, "Edit", () => edit("key", key), "edit");
    if (key.blocked) {
      button(actions, "Unblock", () => act("Key unblocked", () => api("POST", "/key/unblock", { key: key.token })),
        "unblock");
    } else {
      button(actions, "Block", () => act("Key blocked", () => api("POST", "/key/block", { key: key.token })), "block");
    }
    button(actions, "Regenerate", async () => {
      const fresh = await act("Key regenerated", () => api("POST", "/key/regenerate", { key: key.token }));
      if (fresh) showKey(fresh.key);
    }, "regenerate");
    button(actions, "Delete", () => act("Key deleted", () => api("POST", "/key/delete", { keys: [key.token] })),
      "delete");
    body.appendChild(row);
  }
}

function renderTeams() {
  const body = $("team-rows");
  body.replaceChildren();
  for (const team of state.teams) {
    const row = document.createElement("tr");
    row.dataset.team = team.team_id;
    cell(row, team.team_id);
    cell(row, team.team_alias);
    cell(row, (team.models || []).join(", ") || "all");
    cell(row, budget(team.spend, team.max_budget));
    cell(row, team.members_with_roles.map((m) => `${m.user_id} (${m.role})`).join(", "));
    cell(row, team.blocked ? "blocked" : "active", team.blocked ? "blocked" : "");
    const actions = cell(row, "");
    button(actions, "Edit", () => edit("team", team), "edit");
    const path = team.blocked ? "/team/unblock" : "/team/block";
    button(actions, team.blocked ? "Unblock" : "Block",
      () => act(team.blocked ? "Team unblocked" : "Team blocked", () => api("POST", path, { team_id: team.team_id })),
      team.blocked ? "unblock" : "block");
    body.appendChild(row);
  }
}

function renderSessions() {
  const body = $("session-rows");
  body.replaceChildren();
  for (const session of state.sessions) {
    const row = document.createElement("tr");
    row.dataset.session = session.session_id;
    cell(row, session.session_id);
    cell(row, session.key_alias);
    cell(row, session.team_id);
    cell(row, session.model);
    cell(row, session.route);
    cell(row, time(session.started_at));
    cell(row, money(session.spend));
    button(cell(row, ""), "End", () => act("Session ended",
      () => api("POST", "/session/end", { session_id: session.session_id })), "end");
    body.appendChild(row);
  }
}

function renderErrors() {
  const body = $("error-rows");
  body.replaceChildren();
  for (const e of state.errors) {
    const row = document.createElement("tr");
    for (const value of [time(e.time), e.kind, e.route, e.model, e.key, e.status, e.code, e.message]) cell(row, value);
    body.appendChild(row);
  }
}

// --- a session's transcript (general_settings.store_prompts_in_spend_logs), already redacted by the gateway -----

function transcriptLine(turn) {
  const parts = [turn.role + (turn.audio ? " (spoken)" : "")];
  if (turn.text) parts.push(turn.text);
  for (const call of turn.tool_calls || []) parts.push(`calls ${call.name}(${call.arguments})`);
  if (turn.output !== undefined) parts.push(`output ${turn.output}`);
  if (turn.status && turn.status !== "completed") parts.push(`[${turn.status}${turn.reason ? ", " + turn.reason : ""}]`);
  if (turn.blocked_by) parts.push(`[blocked by ${turn.blocked_by}]`);
  return parts.join(": ");
}

async function showTranscript(event) {
  event.preventDefault();
  const id = new FormData($("transcript-form")).get("session").trim();
  if (!id) return;
  const list = $("transcript-turns");
  list.replaceChildren();
  try {
    const row = await api("GET", `/spend/logs/${encodeURIComponent(id)}`);
    state.transcript = row.transcript || { turns: [] };
    const kept = row.transcript;
    $("transcript-note").textContent = !kept ? "No transcript was kept for this session "
      + "(general_settings.store_prompts_in_spend_logs was off)."
      : `${row.key_alias || "master key"}, ${row.model}, ${time(row.startTime)}`
        + (kept.instructions ? ` — instructions: ${kept.instructions}` : "")
        + (kept.truncated ? " — truncated" : "");
    for (const turn of kept ? kept.turns : []) {
      const item = document.createElement("li");
      item.textContent = transcriptLine(turn);
      list.appendChild(item);
    }
    say("Transcript shown");
  } catch (error) {
    state.transcript = null;
    $("transcript-note").textContent = "";
    say(`Transcript failed: ${error.message}`, true);
  }
}

// --- the chart: stacked bars, one per day, one colour per model ---------------------------------------------

function dayList(end) {
  const days = [];
  for (let i = DAYS - 1; i >= 0; i--) {
    days.push(new Date(end.getTime() - i * 86400000).toISOString().slice(0, 10));
  }
  return days;
}

function drawChart(report) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const days = dayList(new Date(`${report.end_date}T00:00:00Z`));
  const models = [...new Set(report.rows.map((r) => r.model || "(none)"))];
  const spend = {};
  for (const r of report.rows) spend[`${r.day}|${r.model || "(none)"}`] = r.spend;
  const totals = days.map((d) => models.reduce((sum, m) => sum + (spend[`${d}|${m}`] || 0), 0));
  const top = Math.max(...totals, 0) || 1;
  const W = canvas.width, H = canvas.height, left = 70, bottom = 28, right = 10, topPad = 12;
  const plotH = H - bottom - topPad, slot = (W - left - right) / days.length;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#555";
  ctx.strokeStyle = "#ddd";
  for (let i = 0; i <= 4; i++) {  // grid lines and USD ticks
    const y = topPad + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(W - right, y);
    ctx.stroke();
    ctx.fillText(money((top * i) / 4), 4, y + 4);
  }
  days.forEach((day, i) => {
    let y = topPad + plotH;
    const x = left + i * slot + slot * 0.15;
    models.forEach((model, m) => {
      const value = spend[`${day}|${model}`] || 0;
      const h = (value / top) * plotH;
      if (h > 0) {
        ctx.fillStyle = COLORS[m % COLORS.length];
        ctx.fillRect(x, y - h, slot * 0.7, h);
        y -= h;
      }
    });
    if ((days.length - 1 - i) % 2 === 0 || days.length <= 10) {  // today is always labelled
      ctx.fillStyle = "#555";
      ctx.fillText(day.slice(5), x, H - 10);
    }
  });
  const legend = $("legend");
  legend.replaceChildren();
  state.chart = { drawn: true, days, series: models.map((m, i) => ({ model: m, color: COLORS[i % COLORS.length] })),
    totals };
  for (const s of state.chart.series) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = s.color;
    item.append(swatch, s.model);
    legend.appendChild(item);
  }
  $("spend-range").textContent = `${days[0]} – ${days[days.length - 1]} (UTC)`;
  $("spend-total").textContent = `total ${money(report.totals.spend)} in ${report.totals.sessions} sessions`;
}

async function downloadCsv(event) {
  event.preventDefault();
  const end = new Date().toISOString().slice(0, 10);
  const start = dayList(new Date(`${end}T00:00:00Z`))[0];
  try {
    const response = await fetch(`/spend/report?group_by=day,model&start_date=${start}&end_date=${end}&format=csv`,
      { headers: { Authorization: `Bearer ${masterKey()}` } });
    if (!response.ok) throw new Error(`${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `livegate-spend-${start}-${end}.csv`;
    a.click();
    URL.revokeObjectURL(url);
  } catch (error) {
    say(`CSV download failed: ${error.message}`, true);
  }
}

// --- loading ----------------------------------------------------------------------------------------------

async function refreshLive() {
  const [sessions, errors] = await Promise.all([api("GET", "/session/list"), api("GET", "/errors/recent?limit=50")]);
  state.sessions = sessions.data;
  state.errors = errors.data;
  renderSessions();
  renderErrors();
}

async function refresh() {
  const end = new Date().toISOString().slice(0, 10);
  const start = dayList(new Date(`${end}T00:00:00Z`))[0];
  const [keys, teams, report] = await Promise.all([
    api("GET", "/key/list?return_full_object=true&size=100"),
    api("GET", "/team/list"),
    api("GET", `/spend/report?group_by=day,model&start_date=${start}&end_date=${end}`),
  ]);
  state.keys = keys.keys;
  state.teams = teams;
  state.report = report;
  renderKeys();
  renderTeams();
  drawChart(report);
  await refreshLive();
}

async function signIn(event) {
  if (event) event.preventDefault();
  const typed = $("master-key").value.trim();
  if (typed) sessionStorage.setItem("livegate-master-key", typed);
  $("master-key").value = "";
  if (!masterKey()) return;
  try {
    await refresh();
  } catch (error) {
    sessionStorage.removeItem("livegate-master-key");
    say(`Sign-in failed: ${error.message}`, true);
    return;
  }
  state.signedIn = true;
  $("console").hidden = false;
  $("signout").hidden = false;
  say("Signed in");
  timers.forEach(clearInterval);
  timers = [setInterval(() => refreshLive().catch((e) => say(e.message, true)), 2000),
    setInterval(() => refresh().catch((e) => say(e.message, true)), 15000)];
}

function signOut() {
  sessionStorage.removeItem("livegate-master-key");
  timers.forEach(clearInterval);
  state.signedIn = false;
  $("console").hidden = true;
  $("signout").hidden = true;
  say("Signed out");
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("key-form").addEventListener("submit", submitKey);
  $("team-form").addEventListener("submit", submitTeam);
  $("key-cancel").addEventListener("click", () => resetForm("key"));
  $("team-cancel").addEventListener("click", () => resetForm("team"));
  $("csv").addEventListener("click", downloadCsv);
  $("transcript-form").addEventListener("submit", showTranscript);
  if (masterKey()) signIn();
});
