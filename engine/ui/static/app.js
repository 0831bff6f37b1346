// artledger dashboard: the history slider, and live updates of the event log.
"use strict";

function withAsOf(value, live) {
  const url = new URL(window.location.href);
  if (live) url.searchParams.delete("as_of"); else url.searchParams.set("as_of", value);
  url.searchParams.delete("before");
  url.searchParams.delete("after");
  return url.toString();
}

function setupSlider() {
  const slider = document.getElementById("as-of");
  const label = document.getElementById("as-of-label");
  const live = document.getElementById("live-link");
  if (live) live.href = withAsOf(null, true);
  if (!slider) return;
  slider.addEventListener("input", () => {
    const max = Number(slider.max);
    label.textContent = Number(slider.value) >= max
      ? "live · event " + max : "as of event " + slider.value + " of " + max;
  });
  slider.addEventListener("change", () => {
    const atHead = Number(slider.value) >= Number(slider.max);
    // The first visit to a point in history folds the log up to it: say so.
    if (!atHead) label.textContent = "loading event " + slider.value + "…";
    document.body.classList.add("loading");
    window.location.href = withAsOf(slider.value, atHead);
  });
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  return td;
}

function setupLiveLog() {
  const table = document.getElementById("log");
  if (!table || table.dataset.live !== "yes") return;
  let head = Number(table.dataset.head);
  const body = table.tBodies[0];
  async function poll() {
    try {
      const r = await fetch("/api/log?after=" + head + "&limit=200", {cache: "no-store"});
      if (r.ok) {
        const data = await r.json();
        const events = data.events.slice().reverse();  // oldest first
        for (const e of events) {
          const tr = document.createElement("tr");
          tr.className = "new";
          tr.dataset.seq = e.seq;
          tr.append(cell(e.seq), cell(e.type), cell(e.time), cell(e.what));
          const td = document.createElement("td");
          if (e.run) {
            const a = document.createElement("a");
            a.href = "/runs/" + encodeURIComponent(e.run);
            a.textContent = e.run.slice(0, 12);
            td.append(a);
          }
          tr.append(td);
          body.insertBefore(tr, body.firstChild);
          head = Math.max(head, e.seq);
        }
        const slider = document.getElementById("as-of");
        if (slider && data.log_head > Number(slider.max)) {
          slider.max = data.log_head;
          slider.value = data.log_head;
          document.getElementById("as-of-label").textContent = "live · event " + data.log_head;
        }
      }
    } catch (err) { /* the server may be restarting: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => { setupSlider(); setupLiveLog(); });
