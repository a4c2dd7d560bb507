// backtrack remote page. Plain JavaScript, no build step, no network but the box itself.
// Reads: a WebSocket (/api/ws) that pushes the status a few times a second and at once on a
// change, and the show (setlists, songs, the current song's sections and stems) when it
// changes. Acts: POST /api/cmd with the session cookie from /api/login (the PIN). The LOCK
// starts engaged on every load: while it is, a tap on a control does nothing but say so.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  let locked = true;
  let control = false;      // the box has a PIN (else the page is read-only)
  let authorized = false;   // this browser has logged in
  let st = null;            // the newest status
  let show = null;          // the newest show info
  let ws = null;
  let lastMsg = 0;
  let backoff = 500;
  let toastTimer = 0;
  let updates = 0;

  // ---- formatting ----------------------------------------------------------------------
  function fmt(s) {
    s = Math.max(0, Number(s) || 0);
    const tenths = Math.floor(s * 10);
    const m = Math.floor(tenths / 600);
    const rest = (tenths - m * 600) / 10;
    return m + ":" + (rest < 10 ? "0" : "") + rest.toFixed(1);
  }
  function text(id, value) {
    const el = $(id);
    const v = value == null ? "" : String(value);
    if (el.textContent !== v) el.textContent = v;
  }
  function toast(msg, error) {
    const t = $("toast");
    t.textContent = msg;
    t.className = error ? "error" : "";
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, error ? 4000 : 1800);
  }

  // ---- the lock ------------------------------------------------------------------------
  function setLocked(v) {
    locked = v;
    body.dataset.locked = String(v);
    text("lock", v ? "LOCKED" : "UNLOCKED");
    $("lock").setAttribute("aria-pressed", String(v));
  }
  function nudge() {
    const b = $("lock");
    b.classList.remove("nudge");
    void b.offsetWidth;  // restart the animation
    b.classList.add("nudge");
    toast(control ? "Locked: tap LOCKED to unlock" : "This remote is read-only", true);
  }
  $("lock").addEventListener("click", () => {
    if (!locked) { setLocked(true); return; }
    if (!control) { nudge(); return; }
    if (authorized) { setLocked(false); return; }
    openLogin();
  });

  // ---- login ---------------------------------------------------------------------------
  function openLogin() {
    $("pin-error").hidden = true;
    $("pin-input").value = "";
    const d = $("login");
    if (!d.open) d.showModal();
    $("pin-input").focus();
  }
  $("pin-cancel").addEventListener("click", () => $("login").close());
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const pin = $("pin-input").value;
    let r, j = {};
    try {
      r = await fetch("/api/login", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({pin}),
      });
      j = await r.json().catch(() => ({}));
    } catch (e) {
      r = null;
    }
    if (r && r.ok && j.ok) {
      authorized = true;
      $("login").close();
      setLocked(false);
      toast("Unlocked");
      return;
    }
    const err = $("pin-error");
    err.textContent = (j && j.error) || (r ? "refused (" + r.status + ")" : "no connection to the box");
    err.hidden = false;
    $("pin-input").value = "";
  });

  // ---- commands ------------------------------------------------------------------------
  async function send(req) {
    if (locked) { nudge(); return; }
    let r, j = {};
    try {
      r = await fetch("/api/cmd", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify(req),
      });
      j = await r.json().catch(() => ({}));
    } catch (e) {
      toast("No connection to the box: not sent", true);
      return;
    }
    if (r.status === 401 || r.status === 403) {
      authorized = false;
      setLocked(true);
      toast(j.error || "Log in again", true);
      return;
    }
    if (!j.ok) toast(j.error || ("refused (" + r.status + ")"), true);
    else if (j.message) toast(j.message);
  }
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-cmd], [data-req]");
    if (!b || b.closest("dialog")) return;
    ev.preventDefault();
    const req = b.dataset.req ? JSON.parse(b.dataset.req) : {cmd: b.dataset.cmd};
    send(req);
  });

  // ---- rendering -----------------------------------------------------------------------
  function button(label, req, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "tap" + (cls ? " " + cls : "");
    b.textContent = label;
    b.dataset.req = JSON.stringify(req);
    return b;
  }

  function renderShow() {
    if (!show) return;
    text("setlist-title", show.setlist);
    const songs = $("songs");
    songs.replaceChildren(...show.songs.map((title, i) => {
      const li = document.createElement("li");
      li.appendChild(button(title, {cmd: "goto", song: i + 1}));
      return li;
    }));
    const lists = $("setlists");
    lists.replaceChildren(...(show.setlists.length > 1 ? show.setlists.map((s) =>
      button(s.name + " (" + s.songs.length + ")", {cmd: "setlist", name: s.name},
             s.in_use ? "current" : "")) : []));
    const jumps = $("jumps");
    jumps.replaceChildren(...show.sections.map((s) =>
      button(s.name, {cmd: "jump", to: s.name})));
    $("jumps-box").hidden = show.sections.length === 0;
    renderMarks();
    renderMix();
    renderSongList();
  }

  let marksFor = "";
  function renderMarks() {
    const box = $("sections");
    if (!show || !st || !st.duration_s) { box.replaceChildren(); marksFor = ""; return; }
    const key = show.song_index + "|" + st.duration_s + "|" + show.sections.map((s) => s.name).join(",");
    if (key === marksFor) return;
    marksFor = key;
    const dur = st.duration_s;
    box.replaceChildren(...show.sections.map((s, i) => {
      const d = document.createElement("div");
      d.className = "sec";
      const end = i + 1 < show.sections.length ? show.sections[i + 1].start_s : dur;
      d.style.left = (100 * Math.max(0, s.start_s) / dur) + "%";
      d.style.width = (100 * Math.max(0, end - s.start_s) / dur) + "%";
      d.textContent = s.name;
      d.dataset.name = s.name;
      return d;
    }));
  }

  function renderSongList() {
    if (!show || !st) return;
    const items = $("songs").children;
    for (let i = 0; i < items.length; i++) {
      items[i].className = i === st.song_index ? "current" : (i === st.song_index + 1 ? "next" : "");
    }
  }

  function mixStems() {
    const mix = st && st.mix;
    const names = [];
    const add = (n) => { if (n && !names.includes(n)) names.push(n); };
    (show ? show.stems : []).forEach(add);
    if (mix) {
      (mix.muted || []).forEach(add);
      (mix.solo || []).forEach(add);
      Object.keys(mix.trim_db || {}).forEach(add);
    }
    return names;
  }

  let mixKey = "";
  function renderMix() {
    const mix = st && st.mix;
    $("mix-box").hidden = !mix;
    if (!mix) { mixKey = ""; return; }
    const key = JSON.stringify([mix, show ? show.stems : []]);
    if (key === mixKey) return;
    mixKey = key;
    const muted = new Set(mix.muted || []);
    const solo = new Set(mix.solo || []);
    const trims = mix.trim_db || {};
    $("mix").replaceChildren(...mixStems().map((name) => {
      const row = document.createElement("div");
      row.className = "stem";
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const m = muted.has(name);
      const s = solo.has(name);
      const db = Number(trims[name] || 0);
      const dbText = document.createElement("span");
      dbText.className = "db";
      dbText.textContent = (db > 0 ? "+" : "") + db.toFixed(1) + " dB";
      row.append(
        label,
        button("M", {cmd: m ? "unmute" : "mute", target: name}, "mute" + (m ? " on" : "")),
        button("S", {cmd: s ? "unsolo" : "solo", target: name}, "solo" + (s ? " on" : "")),
        button("−", {cmd: "trim", target: name, db: Math.max(-60, db - 1)}),
        dbText,
        button("+", {cmd: "trim", target: name, db: Math.min(12, db + 1)}),
      );
      return row;
    }));
  }

  function peerText(p) {
    if (!p || p === "none") return ["single unit", ""];
    if (typeof p !== "object") return [String(p), ""];
    const parts = [];
    if (p.role) parts.push(p.role);
    if ("locked" in p) parts.push(p.locked ? "locked" : "not locked");
    if ("protected" in p) parts.push(p.protected ? "protected" : "NOT protected");
    if (p.lock_error_ms != null && p.role === "follower") parts.push("error " + Number(p.lock_error_ms).toFixed(2) + " ms");
    let why = "";
    if (Array.isArray(p.why_not) && p.why_not.length) why = p.why_not.join("; ");
    return [parts.join(" · ") + (why ? " — " + why : ""), p.protected === false ? "bad" : "ok"];
  }

  function renderStatus() {
    const s = st;
    updates += 1;
    body.dataset.updates = String(updates);
    text("title", s.title);
    text("song-number", s.song + "/" + s.songs);
    text("setlist-name", s.setlist);
    const stateEl = $("state");
    stateEl.className = "state " + s.state;
    text("state", s.state);
    const playing = s.state === "playing";
    const ps = $("btn-playstop");
    const psLabel = playing ? "\u25A0STOP" : "\u25B6PLAY";
    if (ps.dataset.label !== psLabel) {
      ps.dataset.label = psLabel;
      ps.innerHTML = playing ? "&#9632;<small>STOP</small>" : "&#9654;<small>PLAY</small>";
    }
    let next = "end of set";
    if (show && s.song_index + 1 < show.songs.length) next = show.songs[s.song_index + 1];
    else if (!show && s.song < s.songs) next = "song " + (s.song + 1);
    text("next-title", next);

    const dur = s.duration_s || 0;
    const pos = Math.max(0, s.position_s || 0);
    text("position", fmt(pos));
    text("duration", fmt(dur));
    const frac = dur > 0 ? Math.min(1, pos / dur) : 0;
    $("fill").style.width = (frac * 100) + "%";
    $("head").style.left = "calc(" + (frac * 100) + "% - 2px)";
    text("bar-beat", s.bar_beat || "");
    text("tempo", s.tempo ? Math.round(s.tempo * 10) / 10 + " BPM" : "");
    text("section", s.section || "");
    text("next-section", s.next_section ? "\u2192 " + s.next_section : "");
    $("count-in").hidden = !s.count_in;
    $("vamp").hidden = !s.vamp;
    const pend = $("pending");
    pend.hidden = !s.pending;
    text("pending", s.pending ? (s.pending.text || s.pending.kind) : "");
    $("btn-cancel").hidden = !(s.pending || s.vamp);
    for (const el of $("sections").children) {
      el.classList.toggle("current", el.dataset.name === s.section);
    }

    text("role", s.role);
    const [ptext, pcls] = peerText(s.peer);
    text("peer", ptext);
    $("peer").className = pcls;
    text("xruns", s.xruns + (s.starved ? " (decoder late " + s.starved + ")" : ""));
    $("xruns").className = s.xruns ? "bad" : "ok";
    text("device", s.device);
    $("device").className = s.device === "ok" ? "ok" : "bad";
    const probs = s.problems || [];
    text("problems", probs.length ? probs.join("; ") : "none");
    $("problems").className = probs.length ? "bad" : "ok";
    renderMarks();
    renderSongList();
    renderMix();
  }

  // ---- the connection ------------------------------------------------------------------
  function setConn(state, label) {
    body.dataset.conn = state;
    text("conn-text", label || state);
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    try {
      ws = new WebSocket(proto + "//" + location.host + "/api/ws");
    } catch (e) {
      setTimeout(connect, backoff);
      return;
    }
    ws.onopen = () => { backoff = 500; };
    ws.onmessage = (ev) => {
      lastMsg = Date.now();
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "hello") {
        control = !!m.control;
        authorized = !!m.authorized;
        $("lock").title = m.note || "";
      } else if (m.type === "status") {
        st = m.state;
        setConn("live");
        renderStatus();
      } else if (m.type === "show") {
        show = m;
        renderShow();
        if (st) renderStatus();
      } else if (m.type === "reply" && !m.ok) {
        toast(m.error || "refused", true);
      }
    };
    ws.onclose = () => {
      setConn("down", "no connection");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  setInterval(() => {
    if (ws && ws.readyState === WebSocket.OPEN && Date.now() - lastMsg > 2500) {
      setConn("stale", "no updates");
    }
  }, 500);

  setLocked(true);
  connect();
})();
