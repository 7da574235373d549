// pleura live view: pull the newest frame, draw it, ask for the next one (latest wins).
// Runs once per page (loaded through Gradio's `head`); waits for the live canvas to exist.
(function () {
  if (window.pleuraLive) { return; }
  window.pleuraLive = true;
  const KEEP = 3000;  // samples kept for the percentiles (minutes at 20 fps)
  const stats = window.pleuraStats = {
    drawn: 0, latency: [], display: [], drawTimes: [], errors: 0, last: null,
  };
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const base = window.location.pathname.replace(/[^/]*$/, "");
  const push = (a, v) => { a.push(v); if (a.length > KEEP) { a.shift(); } };
  const pct = (a, q) => {
    if (!a.length) { return NaN; }
    const s = a.slice().sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  };
  stats.t0 = performance.now();
  stats.reset = () => {
    stats.drawn = 0; stats.latency = []; stats.display = []; stats.errors = 0;
    stats.t0 = performance.now();
  };
  stats.summary = () => ({
    drawn: stats.drawn,
    seconds: (performance.now() - stats.t0) / 1000,
    mean_fps: stats.drawn * 1000 / Math.max(1, performance.now() - stats.t0),
    errors: stats.errors,
    fps: displayFps(),
    latency_p50_ms: pct(stats.latency, 0.5), latency_p95_ms: pct(stats.latency, 0.95),
    display_p50_ms: pct(stats.display, 0.5), display_p95_ms: pct(stats.display, 0.95),
  });
  function displayFps() {
    const t = stats.drawTimes;
    if (t.length < 2) { return 0; }
    const now = performance.now();
    const recent = t.filter((x) => now - x <= 2000);
    if (recent.length < 2) { return 0; }
    return (recent.length - 1) * 1000 / (recent[recent.length - 1] - recent[0]);
  }
  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
  const COLOURS = ["#2878ff", "#ffdc00", "#ff8200", "#e6005a"];
  const percent = (p) => (p === null || p === undefined) ? "–" : (100 * p).toFixed(0) + "%";
  // Bars of a probability-like vector; `chosen` (the score shown above them) is outlined, so
  // the number and the bars always say the same thing.
  function bars(id, probs, chosen) {
    const el = $(id);
    if (!el || !probs) { return; }
    if (el.children.length !== probs.length) {  // built once, then only widths change
      el.innerHTML = probs.map((p, i) =>
        '<div class="pl-bar"><span>' + i + '</span><div class="pl-track"><div style="background:' +
        COLOURS[i] + '"></div></div><span></span></div>').join("");
    }
    probs.forEach((p, i) => {
      const row = el.children[i];
      row.children[1].firstChild.style.width = (100 * p).toFixed(1) + "%";
      row.children[2].textContent = percent(p).padStart(4, " ");
      row.classList.toggle("pl-chosen", i === chosen);
    });
  }
  function text(id, v) { const el = $(id); if (el) { el.textContent = v; } }
  // Findings of a bundle with a findings head: rows {label, frame, clip, present} from the
  // server (ui.overlay.finding_rows); the panel stays hidden for bundles without one.
  function findings(rows) {
    const box = $("pleura-findings");
    const table = $("pleura-findings-rows");
    if (!box || !table) { return; }
    box.hidden = !(rows && rows.length);
    if (box.hidden) { return; }
    const key = rows.map((r) => r.name).join(",");
    if (table.dataset.key !== key) {  // built once per bundle, then only values change
      table.dataset.key = key;
      table.innerHTML = rows.map(() => '<tr><td></td><td class="pl-fbar"><div class="pl-track">' +
        '<div></div><div class="pl-mark"></div></div></td><td></td><td></td></tr>').join("");
      rows.forEach((r, i) => { table.rows[i].cells[0].textContent = r.label; });  // not HTML
    }
    rows.forEach((r, i) => {
      const c = table.rows[i].cells;
      const track = c[1].firstChild;
      track.children[0].style.width = (100 * (r.frame || 0)).toFixed(1) + "%";
      track.children[1].style.left = (100 * (r.clip || 0)).toFixed(1) + "%";
      track.children[1].style.display = r.clip === null || r.clip === undefined ? "none" : "";
      c[2].textContent = percent(r.frame);
      c[3].textContent = percent(r.clip);
      c[0].style.fontWeight = r.present ? "700" : "";
      c[0].title = r.present ? "present: mean over the video >= 50%" : "";
    });
  }
  // The source state (ui.livestate.page_state, sent with every answer): a large plain word
  // above the image, and a greyed image saying how old it is whenever it is not live.
  let lastState = "";
  let current = null;  // the newest state, for the video score's wording
  let lastMeta = null;
  function showState(st) {
    if (!st) { return; }
    const key = JSON.stringify(st);
    if (key === lastState) { return; }
    lastState = key;
    current = st;
    if (lastMeta) {
      text("pleura-video-kind", videoKind(lastMeta.video || {}, st));
      nowPlaying(lastMeta, st);
    }
    const bar = $("pleura-state-bar");
    if (bar) { bar.className = "pl-state pl-" + st.key; bar.dataset.state = st.key; }
    text("pleura-state", st.label);
    text("pleura-state-detail", st.detail || "");
    const box = $("pleura-canvas-box");
    if (box) { box.classList.toggle("pl-notlive", !st.live); }
    const note = $("pleura-stale");
    if (note) {
      note.hidden = st.live;
      note.textContent = !st.has_frame ? "No image yet" :
        "Not live · last frame " + (st.age_s === null ? "?" : Math.round(st.age_s)) + " s ago";
    }
  }
  function stateFrom(r) {
    try { return JSON.parse(r.headers.get("X-Pleura-State") || "null"); } catch (e) { return null; }
  }
  // Crop boxes: none for a whole-frame model, hidden by default when the bundle's crops do
  // not localise (meta.crops from the worker); the switch is reset when the bundle changes.
  let cropsBundle = null;
  function crops(meta) {
    const c = meta.crops;
    const box = $("pleura-boxes");
    const label = $("pleura-boxes-label");
    const legend = $("pleura-crop-legend");
    if (!box) { return; }
    if (c && meta.bundle !== cropsBundle) {
      cropsBundle = meta.bundle;
      box.checked = !!c.show;
      box.dataset.set = "1";  // from now on the page asks for what the switch says
    }
    const whole = !!(c && c.whole_frame);
    if (label) { label.hidden = whole; }
    if (legend) { legend.hidden = whole || !box.checked; }
    const notes = [];
    if (c && c.note && (whole || !box.checked)) { notes.push(c.note); }
    if (box.checked && !whole) { (meta.crop_notes || []).forEach((n) => notes.push(n)); }
    text("pleura-crop-note", notes.join(" · "));
  }
  // Segmentation mask: hidden by default when the bundle says its masks are not meaningful
  // on these images (meta.mask_display from the worker); reset when the bundle changes. When
  // such a mask is switched on anyway, the note stays under the image, a flag sits on the
  // image beside the mask, and the legend no longer claims the regions show the score.
  let maskBundle = null;
  const MASK_LEGEND = "each region in the colour of the score it shows";
  function maskDefault(meta) {
    const m = meta.mask_display;
    const box = $("pleura-mask");
    if (!box || !m) { return; }
    if (meta.bundle !== maskBundle) {
      maskBundle = meta.bundle;
      box.checked = !!m.show;
    }
    const doubtful = !m.show && !!m.note;
    const drawn = box.checked && !!meta.has_mask;
    text("pleura-mask-why", !doubtful ? "" : box.checked ? "Mask shown, but not meaningful " +
      "here: " + m.note.replace(/^segmentation mask hidden by default:\s*/i, "") : m.note);
    const flag = $("pleura-mask-flag");
    if (flag) {
      flag.hidden = !(doubtful && drawn);
      flag.textContent = "mask not meaningful on these images — see the note below";
    }
    text("pleura-mask-legend", doubtful && box.checked ? "coloured by the score each region " +
      "seems to show, but this bundle's masks are not meaningful on these images (note " +
      "under the image)" : MASK_LEGEND);
  }
  // The uncertainty switch only where there is a map to show (the worker's MC-dropout
  // samples, `pleura live --mc-samples N`); otherwise the legend says how to get one.
  function uncSwitch(meta) {
    const label = $("pleura-unc-label");
    if (label) { label.hidden = !meta.has_unc; }
    if (!meta.has_unc && $("pleura-unc")) { $("pleura-unc").checked = false; }
    text("pleura-unc-legend", meta.has_unc ? "brighter = the segmentation is less sure" :
      "no map: the worker computes none (start pleura live with --mc-samples 8 for the " +
      "segmentation's uncertainty map); the \u201cuncertain\u201d tag beside a score is " +
      "always on");
  }
  // A close call or findings against the score: "uncertain" beside the number, and why
  // (ui.certainty, sent as meta.certainty).
  function certainty(prefix, c) {
    const tag = $(prefix + "-unc");
    const big = $(prefix + "-big");
    const unsure = !!(c && c.uncertain);
    if (tag) { tag.hidden = !unsure; }
    if (big) { big.classList.toggle("pl-uncertain", unsure); }
    text(prefix + "-why", unsure ? c.reasons.join(" · ") : "");
  }
  // A bundle that is not for real scans says so above the image (meta.bundle_scans, from its
  // manifest's for_real_scans).
  function bundleWarning(meta) {
    const el = $("pleura-bundle-warning");
    const b = meta.bundle_scans;
    const sim = !!(b && b.real === false);
    if (el) {
      el.hidden = !sim;
      el.textContent = sim ? "Model bundle " + (meta.bundle || "?") + ": " + b.note +
        ". Its scores and masks on a real scan are not meaningful; choose the default bundle " +
        "for real scans." : "";
    }
    text("pleura-bundle", meta.bundle || "–");
    text("pleura-bundle-note", sim ? " (simulator only — fails on real scans)" : "");
  }
  // What the running video score covers: "running" while a clip plays, "whole clip" once a
  // file's pass is complete (meta.video.complete: the worker keeps that pass's score while the
  // file loops) or the clip ended, "so far" when the source paused, stopped or failed.
  function videoKind(v, st) {
    const key = st ? st.key : "live";
    if (v.complete || key === "ended") { return "whole clip"; }
    return key === "live" || key === "stalled" ? "running" : "so far";
  }
  // The source panel names what actually plays (the Gradio menu only says what "Use this
  // source" would send).
  function nowPlaying(meta, st) {
    const el = $("pleura-now-playing");
    if (!el) { return; }
    const src = meta.source || "";
    const name = src.split(/[\\/]/).pop();
    const live = !st || st.live;
    el.textContent = !src ? "Now playing: nothing yet" : live ? "Now playing: " + name :
      "Source: " + name + " (" + st.label.toLowerCase() + ")";
    el.title = src;
  }
  function show(meta, e2e, disp, st) {
    const v = meta.video || {};
    const vs = v.score === undefined || v.score === null ? null : v.score;
    const cert = meta.certainty || {};
    certainty("pleura-frame", cert.frame);
    certainty("pleura-video", cert.video);
    text("pleura-video-kind", videoKind(v, st));
    nowPlaying(meta, st);
    bundleWarning(meta);
    uncSwitch(meta);
    text("pleura-frame-score", meta.score === undefined || meta.score === null ? "–" : String(meta.score));
    text("pleura-video-score", vs === null ? "–" : String(vs));
    text("pleura-video-n", v.n_frames === undefined || v.n_frames === null ? "0" : String(v.n_frames));
    bars("pleura-frame-probs", meta.probs, meta.score);
    // The video bars: each score's share of the clip's evidence (its largest is the video
    // score); an older worker sends only the saturated softmax, shown as it is.
    bars("pleura-video-probs", v.evidence || v.probs, vs);
    const fs = v.frame_share;
    text("pleura-frame-share", fs ? "frames whose own score is 0 · 1 · 2 · 3: " +
      fs.map(percent).join(" · ") : "");
    findings(meta.finding_rows);
    crops(meta);
    maskDefault(meta);
    text("pleura-fps", fmt(displayFps(), 1));
    text("pleura-latency", fmt(e2e, 0));
    text("pleura-display-latency", fmt(disp, 0));
    text("pleura-worker-latency", fmt(meta.latency_ms, 0));
    text("pleura-worker-fps", fmt(meta.fps, 1));
    text("pleura-skipped", meta.skipped === undefined ? "–" : String(meta.skipped));
    text("pleura-backend", meta.backend || "–");
    text("pleura-source", meta.source || "–");
    // Say when an overlay cannot be shown (no segmentation yet / no MC-dropout samples).
    text("pleura-mask-note", meta.has_mask ? "" : " (none yet)");
    text("pleura-unc-note", "");
  }
  function nextPaint() {
    return new Promise((r) => {
      let done = false;
      const fin = () => { if (!done) { done = true; r(); } };
      requestAnimationFrame(fin);
      setTimeout(fin, 50);  // hidden tabs do not paint; never stall on it
    });
  }
  let newSinceTimeline = false;
  let lastShown = 0;
  // The timeline plot: hidden until a plot has loaded, hidden again if one fails (a broken
  // image would show its alt text), so the page never shows a half-drawn placeholder.
  function timelineImage() {
    const img = $("pleura-timeline");
    if (img && !img.dataset.wired) {
      img.dataset.wired = "1";
      img.addEventListener("load", () => { img.hidden = false; });
      img.addEventListener("error", () => { img.hidden = true; });
    }
    return img;
  }
  async function timelineLoop() {
    for (;;) {
      await sleep(500);
      const img = timelineImage();
      if (!img || !newSinceTimeline) { continue; }
      newSinceTimeline = false;
      const w = Math.max(320, Math.min(1600, Math.round(img.parentElement.clientWidth || 640)));
      img.src = base + "pleura/timeline.png?w=" + w + "&h=180&t=" + Date.now();
    }
  }
  // The scores are in the side panel, so the image itself carries no text (text=0).
  function request(after) {
    const mask = $("pleura-mask") && $("pleura-mask").checked ? 1 : 0;
    const unc = $("pleura-unc") && $("pleura-unc").checked ? 1 : 0;
    const b = $("pleura-boxes");
    const boxes = b && b.dataset.set ? "&boxes=" + (b.checked ? 1 : 0) : "";  // else: default
    return fetch(base + "pleura/frame.jpg?after=" + after + "&mask=" + mask + "&unc=" + unc +
                 boxes + "&text=0&wait=1", { cache: "no-store", credentials: "same-origin" });
  }
  const LOST = { key: "connecting", label: "Connecting", live: false, has_frame: true,
                 age_s: null, detail: "lost the connection to the page server; retrying" };
  async function frameLoop() {
    let after = 0;
    let pending = null;
    for (;;) {
      const canvas = $("pleura-canvas");
      if (!canvas) { await sleep(200); continue; }
      let r;
      try { r = await (pending || request(after)); } catch (e) {
        pending = null; stats.errors++; text("pleura-conn", "disconnected");
        showState(LOST); await sleep(500); continue;
      }
      pending = null;
      if (r.status === 204) {
        text("pleura-conn", "waiting for results"); showState(stateFrom(r)); continue;
      }
      if (!r.ok) {
        stats.errors++; text("pleura-conn", "error " + r.status);
        showState(Object.assign({}, LOST, { detail: "the page server answered " + r.status }));
        await sleep(1000); continue;
      }
      const n = Number(r.headers.get("X-Pleura-N"));
      let blob;
      try { blob = await r.blob(); } catch (e) { stats.errors++; continue; }
      // Ask for the next result now; the server answers when it exists (long poll), while
      // this one is decoded and painted. One request in flight: never a backlog.
      after = n;
      pending = request(after);
      pending.catch(() => {});
      let bmp;
      try { bmp = await createImageBitmap(blob); } catch (e) { stats.errors++; continue; }
      if (canvas.width !== bmp.width || canvas.height !== bmp.height) {
        canvas.width = bmp.width; canvas.height = bmp.height;
      }
      canvas.getContext("2d").drawImage(bmp, 0, 0);
      if (bmp.close) { bmp.close(); }
      await nextPaint();
      const now = Date.now() / 1000;
      const tg = Number(r.headers.get("X-Pleura-T-Grabbed"));
      const tr = Number(r.headers.get("X-Pleura-T-Received"));
      const e2e = tg > 0 ? 1000 * (now - tg) : NaN;
      const disp = tr > 0 ? 1000 * (now - tr) : NaN;
      let meta = {};
      try { meta = JSON.parse(r.headers.get("X-Pleura-Meta") || "{}"); } catch (e) { stats.errors++; }
      stats.drawn++;
      push(stats.drawTimes, performance.now());
      if (!Number.isNaN(e2e)) { push(stats.latency, e2e); }
      if (!Number.isNaN(disp)) { push(stats.display, disp); }
      stats.last = { n: n, seq: Number(r.headers.get("X-Pleura-Seq")), e2e_ms: e2e, display_ms: disp, meta: meta };
      canvas.dataset.seq = r.headers.get("X-Pleura-Seq");
      canvas.dataset.drawn = String(stats.drawn);
      newSinceTimeline = true;
      // The numbers change at most 10 times a second: readable, and the page re-lays out less.
      showState(stateFrom(r));
      lastMeta = meta;
      if (performance.now() - lastShown >= 100) {
        lastShown = performance.now();
        text("pleura-conn", "connected");
        show(meta, e2e, disp, current);
      }
    }
  }
  frameLoop();
  timelineLoop();
})();
