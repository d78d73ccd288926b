// batcher dashboard: polls the JSON routes and redraws numbers, bars and charts in place.
"use strict";
window.batcher = (function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const pollMs = () => Number(document.body.dataset.pollMs || 1000);
  const $ = (sel) => document.querySelector(sel);
  const text = (el, value) => { if (el) el.textContent = value; };
  const num = (n) => (n === null || n === undefined) ? "-" : Number(n).toLocaleString("en-US");
  const money = (s) => s === null || s === undefined ? "no price" : "$" + Number(s).toFixed(4);
  const rate = (r) => r === null || r === undefined ? "-" : r.toFixed(1) + " lines/s";
  function duration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  // A table of costs with a bar each (the dearest row's bar full): by model, or by provider.
  function costTable(body, rows, name) {
    const most = Math.max(0, ...rows.map((c) => Number(c.cost_usd || 0)));
    body.innerHTML = "";
    for (const c of rows) {
      const tr = body.insertRow();
      tr.dataset.cost = c.cost_usd === null ? "" : c.cost_usd;
      [name(c), num(c.calls), num(c.tokens), money(c.cost_usd)].forEach((v) => { tr.insertCell().textContent = v; });
      const bar = document.createElement("div");
      bar.className = "hbar";
      const seg = document.createElement("span");
      seg.className = "seg succeeded";
      seg.style.width = (most ? 100 * Number(c.cost_usd || 0) / most : 0).toFixed(2) + "%";
      bar.appendChild(seg);
      const cell = tr.insertCell();
      cell.className = "wide";
      cell.appendChild(bar);
    }
  }
  function flash(message, bad) {
    const el = $("#flash");
    el.textContent = message;
    el.className = bad ? "bad" : "ok";
    el.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { el.hidden = true; }, 8000);
  }
  async function getJSON(url) {
    const r = await fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"});
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }
  function poll(url, draw) {
    const tick = async () => {
      try { draw(await getJSON(url)); } catch (e) { console.warn(e); }
      setTimeout(tick, pollMs());
    };
    setTimeout(tick, pollMs());
  }
  function setBar(bar, job) {
    const parts = ["succeeded", "failed", "cancelled", "running"];
    bar.dataset.done = job.succeeded + job.failed + job.cancelled;
    bar.dataset.total = job.total;
    parts.forEach((p) => {
      const seg = bar.querySelector(".seg." + p);
      seg.style.width = (job.total ? 100 * job[p] / job.total : 0).toFixed(2) + "%";
    });
  }

  function jobsPage() {
    const draw = (data) => {
      text($("#jobs-total"), data.total);
      for (const job of data.jobs) {
        const row = document.querySelector('tr[data-job="' + job.id + '"]');
        if (!row) continue;
        const f = (name) => row.querySelector('[data-field="' + name + '"]');
        text(f("status"), job.status);
        f("status").className = "status status-" + job.status;
        setBar(f("bar"), job);
        text(f("lines"), (job.succeeded + job.failed + job.cancelled) + "/" + job.total);
        text(f("rate"), rate(job.lines_per_s));
        text(f("eta"), duration(job.eta_s));
        text(f("tokens"), num(job.tokens));
        text(f("cost"), money(job.cost_usd));
      }
    };
    document.addEventListener("DOMContentLoaded", () => poll("/api/jobs" + location.search, draw));
  }

  function chart(el) {
    const opts = {
      width: Math.max(320, el.clientWidth || 800), height: 260,
      series: [
        {},
        {label: "requests/s", stroke: "#2b6cb0", width: 2},
        {label: "429s/s", stroke: "#c53030", width: 2},
        {label: "tokens/s", stroke: "#2f855a", width: 2, scale: "tokens"},
      ],
      axes: [{}, {label: "calls/s"}, {side: 1, scale: "tokens", label: "tokens/s", grid: {show: false}}],
      scales: {x: {time: true}},
    };
    const plot = new uPlot(opts, [[], [], [], []], el);
    window.addEventListener("resize", () => plot.setSize({width: Math.max(320, el.clientWidth), height: 260}));
    return plot;
  }

  function drawJob(data, plot) {
    const job = data.job;
    text($("#status"), job.status);
    $("#status").className = "status status-" + job.status;
    const err = $("#last-error");
    err.hidden = !job.last_error;
    text(err, job.last_error || "");
    setBar($("#bar"), job);
    text($("#done"), num(job.succeeded + job.failed + job.cancelled) + " / " + num(job.total));
    ["succeeded", "failed", "running", "pending"].forEach((k) => text($("#" + k), num(job[k])));
    text($("#rate"), rate(job.lines_per_s));
    text($("#eta"), duration(job.eta_s));
    text($("#tokens"), num(job.tokens));
    text($("#cost"), money(job.cost_usd));
    const p = data.pace;
    const limit = p.limit_rps === null ? "none met yet" : p.limit_rps.toFixed(2) + " req/s (" + p.limit_source + ")";
    text($("#pace"), p.requests_per_s.toFixed(1) + " req/s · " + num(Math.round(p.tokens_per_s)) + " tokens/s · limit: " +
      limit + " · in flight " + p.in_flight + " of " + p.ceiling + " · 429s " + p.rate_limited);
    const s = data.series;
    const series = [s.t, s.requests, s.rate_limited, s.tokens];
    plot.setData(series);
    plot.root.dataset.points = s.t.length;
    plot.root.dataset.calls = Math.round(s.requests.reduce((a, b) => a + b, 0) * s.width_s);
    costTable($("#costs tbody"), data.costs, (c) => c.model);
    costTable($("#provider-costs tbody"), data.providers, (c) => c.provider);
    const failures = $("#failures tbody");
    failures.innerHTML = "";
    text($("#failed-count"), job.failed ? "(" + num(job.failed) + ", first " + data.failures.length + " shown)" : "");
    for (const f of data.failures) {
      const tr = failures.insertRow();
      tr.dataset.line = f.line_no;
      [f.line_no, f.custom_id, f.error_code || "", f.status_code === null ? "" : f.status_code, f.message || ""]
        .forEach((v) => { tr.insertCell().textContent = v; });
      const a = document.createElement("a");
      a.href = "/jobs/" + job.id + "/lines/" + f.line_no;
      a.textContent = "raw answer";
      tr.insertCell().appendChild(a);
    }
  }

  async function post(url) {
    const r = await fetch(url, {method: "POST", headers: {"X-CSRF-Token": csrf()}, credentials: "same-origin"});
    const body = await r.json().catch(() => ({error: r.statusText}));
    flash(body.message || body.error, !r.ok);
    return r.ok;
  }

  function jobPage(jobId) {
    document.addEventListener("DOMContentLoaded", () => {
      const plot = chart($("#chart"));
      drawJob(JSON.parse($("#initial").textContent), plot);
      document.querySelectorAll("button[data-action]").forEach((b) => {
        b.addEventListener("click", async () => {
          if (b.dataset.action === "cancel" && !confirm("Cancel job " + jobId + "? Lines not run end cancelled.")) return;
          await post("/api/jobs/" + jobId + "/" + b.dataset.action);
        });
      });
      poll("/api/jobs/" + jobId, (data) => drawJob(data, plot));
    });
  }

  function drawEstimate(data) {
    const out = $("#estimate");
    out.innerHTML = "";
    const table = document.createElement("table");
    table.className = "usage";
    table.id = "estimate-table";
    const head = table.createTHead().insertRow();
    ["model", "lines", "prompt tok", "output tok", "chars", "cost " + data.currency].forEach((h) => {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    });
    const body = table.createTBody();
    for (const m of data.models) {
      const tr = body.insertRow();
      [m.model, num(m.lines), num(m.prompt_tokens), num(m.output_tokens), num(m.characters),
        m.cost === null ? "no price" : Number(m.cost).toFixed(4)].forEach((v) => { tr.insertCell().textContent = v; });
    }
    const total = body.insertRow();
    ["total", "", "", "", "", Number(data.cost).toFixed(4)].forEach((v) => { total.insertCell().textContent = v; });
    out.appendChild(table);
    const ul = document.createElement("ul");
    for (const a of data.assumptions) { const li = document.createElement("li"); li.textContent = a; ul.appendChild(li); }
    out.appendChild(ul);
  }

  async function sendEstimate(file) {
    const form = new FormData();
    form.append("file", file);
    const r = await fetch("/api/estimate", {method: "POST", body: form, headers: {"X-CSRF-Token": csrf()}});
    const data = await r.json();
    if (!r.ok) { flash(data.error, true); return; }
    drawEstimate(data);
  }

  function usagePage() {
    document.addEventListener("DOMContentLoaded", () => {
      const form = $("#estimate-form");
      $("#estimate-file").addEventListener("change", (e) => { if (e.target.files[0]) sendEstimate(e.target.files[0]); });
      form.addEventListener("dragover", (e) => { e.preventDefault(); form.classList.add("over"); });
      form.addEventListener("dragleave", () => form.classList.remove("over"));
      form.addEventListener("drop", (e) => {
        e.preventDefault(); form.classList.remove("over");
        if (e.dataTransfer.files[0]) sendEstimate(e.dataTransfer.files[0]);
      });
    });
  }

  return {jobsPage, jobPage, usagePage};
})();
