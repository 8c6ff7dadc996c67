// facesynth's page: plain modules, no build step. Every image is a GET the browser can cache and share.
const $ = (id) => document.getElementById(id);
const FACE_SIZE = 320; // the big face, drawn at the size it is shown
const MIN_FRAME = 64; // px: an interpolation frame narrower than this wraps the strip to more rows

// ranges: what the API accepts (seed, psi, ...), read from /api/info so the page never asks for more.
const state = { seed: 0, psi: 0.7, info: null, ranges: null, projected: null };

// ------------------------------------------------------------------ helpers

function randomSeed() {
  const { min, max } = state.ranges.seed;
  return min + (crypto.getRandomValues(new Uint32Array(1))[0] % (max - min + 1));
}
const clamp = (v, { min, max }) => Math.min(max, Math.max(min, v));
const seedRangeText = () => `seeds are whole numbers from ${state.ranges.seed.min} to ${state.ranges.seed.max}`;
const q = (params) => new URLSearchParams(params).toString();
const faceUrl = (seed, psi, size) => `/api/face?${q({ seed, psi, ...(size ? { size } : {}) })}`;

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 3200);
}

async function problem(response) {
  // The API answers every error with {"detail": "..."}.
  try { return (await response.json()).detail || response.statusText; } catch { return response.statusText; }
}

// An <img> whose failed load shows the server's message instead of a broken picture.
function load(img, url) {
  return new Promise((resolve) => {
    img.onload = () => resolve(true);
    img.onerror = async () => { toast(await problem(await fetch(url))); resolve(false); };
    img.src = url;
  });
}

// Text whose `backticks` mark commands, shown as code (and nothing else taken as HTML).
function showWithCode(el, text) {
  el.replaceChildren(...text.split("`").map((part, i) => {
    if (i % 2 === 0) return document.createTextNode(part);
    const code = document.createElement("code");
    code.textContent = part;
    return code;
  }));
}

function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

// A seed as text -> the number, or null when it is not a whole number in the API's range.
function parseSeed(text) {
  const { min, max } = state.ranges.seed;
  if (!/^\s*\d+\s*$/.test(text ?? "")) return null;
  const v = Number(text);
  return v >= min && v <= max ? v : null;
}

// A seed field's value, or null (the field marked, and why said) so the panel draws nothing wrong.
function readSeed(input) {
  const seed = parseSeed(input.value);
  input.setAttribute("aria-invalid", String(seed === null));
  if (seed === null) {
    const name = input.closest("label")?.firstChild.textContent.trim() || "Seed";
    toast(`${name}: “${input.value}” is not a seed: ${seedRangeText()}`);
  }
  return seed;
}

// Seed fields that hold the face shown follow it to the next one; a field set to another seed keeps it.
function followFace(previous) {
  let moved = false;
  for (const id of ["mix-source", "interp-a"]) {
    if (parseSeed($(id).value) === previous) { $(id).value = state.seed; moved = true; }
  }
  if (moved) { drawMix(); drawStrip(); }
}

// ⚄ next to a seed field: a random seed in it, drawn as if typed.
function setupDice() {
  for (const dice of document.querySelectorAll("[data-dice]")) {
    dice.addEventListener("click", () => {
      const input = $(dice.dataset.dice);
      input.value = randomSeed();
      input.dispatchEvent(new Event("change"));
    });
  }
}

// ------------------------------------------------------------------ the face

async function showFace() {
  const { seed, psi } = state;
  $("seed").textContent = seed;
  $("psi-value").textContent = psi.toFixed(2);
  history.replaceState(null, "", `?${q({ seed, psi })}`);
  const dl = $("download");
  dl.href = faceUrl(seed, psi, 512);
  dl.download = `face-${seed}.png`;
  document.querySelectorAll(".cur-seed").forEach((el) => (el.textContent = seed));
  const frame = $("face-frame");
  frame.classList.add("loading");
  await load($("face-img"), faceUrl(seed, psi, FACE_SIZE));
  frame.classList.remove("loading");
  refreshProjectedMixes();
}

// A shared link's seed and ψ, kept to the API's ranges: a bad seed gives a new face, ψ is clamped; either way
// the visitor is told, and the address bar then shows what is drawn.
function fromLink() {
  const params = new URLSearchParams(location.search);
  const notes = [];
  let seed = parseSeed(params.get("seed"));
  if (seed === null) {
    if (params.has("seed")) notes.push(`seed “${params.get("seed")}” is not a seed (${seedRangeText()}): here is a new face`);
    seed = randomSeed();
  }
  let psi = Number.parseFloat(params.get("psi"));
  if (!Number.isFinite(psi)) {
    if (params.has("psi")) notes.push(`ψ “${params.get("psi")}” is not a number: using ${state.info.defaults.psi}`);
    psi = state.info.defaults.psi;
  } else if (psi !== clamp(psi, state.ranges.psi)) {
    notes.push(`ψ goes from ${state.ranges.psi.min} to ${state.ranges.psi.max}: ${psi} became ${clamp(psi, state.ranges.psi)}`);
    psi = clamp(psi, state.ranges.psi);
  }
  if (notes.length) toast(notes.join("; "));
  return { seed, psi };
}

function setupFace() {
  Object.assign(state, fromLink());
  const slider = $("psi");
  slider.min = state.ranges.psi.min;
  slider.max = state.ranges.psi.max;
  slider.value = state.psi;

  $("new-face").addEventListener("click", () => {
    const previous = state.seed;
    state.seed = randomSeed();
    showFace();
    followFace(previous);
  });
  const redraw = debounce(showFace, 120);
  $("psi").addEventListener("input", (e) => {
    state.psi = Number.parseFloat(e.target.value);
    $("psi-value").textContent = state.psi.toFixed(2);
    redraw();
    refreshPanels();
  });
  $("copy-link").addEventListener("click", async () => {
    const link = `${location.origin}/?${q({ seed: state.seed, psi: state.psi })}`;
    try { await navigator.clipboard.writeText(link); toast("Link copied"); } catch { toast(link); }
  });
  const m = state.info.model;
  $("model-line").textContent = `${m.name} · ${m.resolution}×${m.resolution} StyleGAN2 · ${m.num_ws} style layers`;
  $("footer-model").textContent = m.name;
  showFace();
}

// ------------------------------------------------------------------ style mixing

const mixState = { groups: new Set(["coarse"]) };

function drawMix() {
  const source = readSeed($("mix-source"));
  const style = readSeed($("mix-style"));
  if (source === null || style === null) return;
  const psi = state.psi;
  load($("mix-source-img"), faceUrl(source, psi, 144));
  load($("mix-style-img"), faceUrl(style, psi, 144));
  if (!mixState.groups.size) { $("mix-result").src = faceUrl(source, psi, 144); return; }
  const styles = [...mixState.groups].join("+");
  load($("mix-result"), `/api/mix?${q({ source, style, styles, psi, size: 144 })}`);
}

function setupMixing() {
  $("mix-source").value = state.seed;
  $("mix-style").value = randomSeed();
  const chips = $("mix-groups");
  for (const group of state.info.model.style_groups) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.textContent = group;
    chip.setAttribute("aria-pressed", String(mixState.groups.has(group)));
    chip.addEventListener("click", () => {
      mixState.groups.has(group) ? mixState.groups.delete(group) : mixState.groups.add(group);
      chip.setAttribute("aria-pressed", String(mixState.groups.has(group)));
      drawMix();
    });
    chips.append(chip);
  }
  for (const id of ["mix-source", "mix-style"]) $(id).addEventListener("change", drawMix);
  drawMix();
}

// ------------------------------------------------------------------ interpolation

// Frames per row: all in one when each gets MIN_FRAME px, else the most that do (a divisor, so rows are full).
function stripColumns(frames, width) {
  let columns = frames;
  while (columns > 1 && (width / columns < MIN_FRAME || frames % columns)) columns -= 1;
  return columns;
}

function drawStrip() {
  const a = readSeed($("interp-a"));
  const b = readSeed($("interp-b"));
  if (a === null || b === null) return;
  const frames = state.info.defaults.interpolation_frames;
  const box = $("interp-strip").parentElement;
  const columns = state.stripColumns = stripColumns(frames, box.clientWidth);
  box.style.aspectRatio = `${columns} / ${Math.ceil(frames / columns)}`; // the strip's shape, before it loads
  const params = { a, b, frames, columns, space: $("interp-space").value, psi: state.psi, size: 128 };
  load($("interp-strip"), `/api/interpolate?${q(params)}`);
}

function setupInterpolation() {
  $("interp-a").value = state.seed;
  $("interp-b").value = randomSeed();
  $("interp-go").addEventListener("click", drawStrip);
  for (const id of ["interp-a", "interp-b", "interp-space"]) $(id).addEventListener("change", drawStrip);
  window.addEventListener("resize", debounce(() => { // a turned phone re-wraps the strip
    const width = $("interp-strip").parentElement.clientWidth;
    if (stripColumns(state.info.defaults.interpolation_frames, width) !== state.stripColumns) drawStrip();
  }, 200));
  drawStrip();
}

const refreshPanels = debounce(() => { drawMix(); drawStrip(); }, 400);

// ------------------------------------------------------------------ jobs (upload, progress, result)

async function runJob(url, form, ui) {
  ui.error.hidden = true;
  ui.job.hidden = false;
  ui.bar.style.width = "0%";
  ui.message.textContent = "uploading…";
  ui.button.disabled = true;
  try {
    const r = await fetch(url, { method: "POST", body: form });
    if (!r.ok) throw new Error(await problem(r));
    let job = await r.json();
    while (job.state === "queued" || job.state === "running") {
      ui.bar.style.width = `${Math.round(job.progress * 100)}%`;
      ui.message.textContent = job.state === "queued" && job.queue_position
        ? `waiting: ${job.queue_position} job(s) ahead` : job.message;
      await new Promise((res) => setTimeout(res, 500));
      const s = await fetch(`/api/jobs/${job.id}`);
      if (!s.ok) throw new Error(await problem(s));
      job = await s.json();
    }
    if (job.state === "failed") throw new Error(job.error);
    ui.bar.style.width = "100%";
    ui.message.textContent = `done in ${job.elapsed_s.toFixed(1)} s`;
    return job;
  } catch (e) {
    ui.job.hidden = true;
    ui.error.textContent = e.message;
    ui.error.hidden = false;
    return null;
  } finally {
    ui.button.disabled = false;
  }
}

function dropZone(zone, input, preview, onPick) {
  const show = () => {
    const file = input.files[0];
    if (!file) return;
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    const name = document.createElement("b");
    name.textContent = file.name;
    zone.querySelector(".drop-text").replaceChildren(name, document.createElement("br"), "choose another");
    onPick(file);
  };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
  });
}

const ui = (prefix) => ({ job: $(`${prefix}-job`), bar: $(`${prefix}-bar`), message: $(`${prefix}-message`),
                          error: $(`${prefix}-error`), button: $(`${prefix}-go`) });

// ------------------------------------------------------------------ your photo: projection

function refreshProjectedMixes() {
  if (!state.projected) return;
  for (const group of ["coarse", "middle", "fine"]) {
    const img = $(`project-mix-${group}`);
    const has = state.info.model.style_groups.includes(group);
    img.parentElement.hidden = !has;
    if (has) load(img, `/api/mix?${q({ source: state.projected, style: state.seed, styles: group, psi: state.psi, size: 144 })}`);
  }
}

function setupProjection() {
  const feature = state.info.features.project;
  $("project-steps-label").textContent = state.info.defaults.project_steps;
  document.querySelectorAll(".max-mb").forEach((el) => (el.textContent = state.info.limits.max_photo_mb));
  if (!feature.available) {
    $("project-form").classList.add("disabled");
    $("project-error").textContent = feature.reason;
    $("project-error").hidden = false;
    return;
  }
  dropZone($("project-drop"), $("project-file"), $("project-preview"), () => ($("project-go").disabled = false));
  $("project-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("photo", $("project-file").files[0]);
    $("project-results").hidden = true;
    const job = await runJob("/api/jobs/project", form, ui("project"));
    if (!job) return;
    state.projected = job.result.face;
    await Promise.all([load($("project-input"), `${job.input_url}?size=144`),
                       load($("project-recon"), `${job.result_url}?size=144`)]);
    $("project-results").hidden = false;
    refreshProjectedMixes();
  });
}

// ------------------------------------------------------------------ animate

function setupAnimation() {
  const feature = state.info.features.animate;
  const select = $("animate-driver");
  for (const d of state.info.drivers) select.add(new Option(`${d.name} (bundled)`, d.name));
  select.add(new Option("Upload your own clip…", "__upload__"));
  const preview = $("animate-driver-preview");
  const pickDriver = () => {
    const upload = select.value === "__upload__";
    $("animate-driver-file").hidden = !upload;
    if (!upload) { preview.src = state.info.drivers.find((d) => d.name === select.value)?.url || ""; }
    preview.hidden = upload ? !$("animate-driver-file").files.length : false;
  };
  select.addEventListener("change", pickDriver);
  $("animate-driver-file").addEventListener("change", () => {
    const f = $("animate-driver-file").files[0];
    if (f) { preview.src = URL.createObjectURL(f); preview.hidden = false; }
  });
  pickDriver();
  if (!feature.available) {
    showWithCode($("animate-off"), feature.reason);
    $("animate-off").hidden = false;
    $("animate-form").classList.add("disabled");
    return;
  }
  dropZone($("animate-drop"), $("animate-file"), $("animate-preview"), () => ($("animate-go").disabled = false));
  $("animate-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("photo", $("animate-file").files[0]);
    if (select.value === "__upload__") {
      const clip = $("animate-driver-file").files[0];
      if (!clip) { toast("Choose a driving clip to upload"); return; }
      form.append("driver_video", clip);
    } else {
      form.append("driver", select.value);
    }
    $("animate-result").hidden = true;
    const job = await runJob("/api/jobs/animate", form, ui("animate"));
    if (!job) return;
    $("animate-video").src = job.result_url;
    $("animate-download").href = `${job.result_url}?download=1`;
    $("animate-result").hidden = false;
    $("animate-video").play().catch(() => {});
  });
}

// ------------------------------------------------------------------ was this made here?

function credentialsText(cc) {
  if (!cc.present) return "none (stripped, or never there)";
  if (!cc.valid) return `present but invalid: ${(cc.problems || []).join(", ") || cc.state}`;
  const c = cc.claims || {};
  const params = Object.entries(c.parameters || {}).filter(([k]) => !k.endsWith("sha256")).map(([k, v]) => `${k} ${v}`);
  const signer = cc.trusted ? "this server's facesynth key" : `signer “${cc.signer}” (not on this server's trust list)`;
  return [`valid, signed by ${signer}`, c.digital_source_type, c.generator,
          c.model_sha256 && `model ${c.model_sha256.slice(0, 12)}…`, ...params].filter(Boolean).join(" · ");
}

function watermarkText(wm) {
  if (!wm.found) return `not found (score ${wm.z.toFixed(1)}; a mark reads 4 or more)`;
  return `found: ${wm.payload} · score ${wm.z.toFixed(1)} (an unmarked picture scores this high about ` +
         `${wm.chance_if_unmarked.toExponential(0)} of the time) · read ${wm.read}`;
}

function setupDetect() {
  const show = async (file) => {
    $("detect-preview").hidden = !file.type.startsWith("image/");
    $("detect-error").hidden = true;
    $("detect-result").hidden = true;
    const form = new FormData();
    form.append("file", file);
    const r = await fetch("/api/detect", { method: "POST", body: form });
    if (!r.ok) { $("detect-error").textContent = await problem(r); $("detect-error").hidden = false; return; }
    const report = await r.json();
    const verdict = $("detect-verdict");
    verdict.textContent = report.marked ? "Yes: made by facesynth." : "No facesynth mark found.";
    verdict.className = `verdict ${report.marked ? "yes" : "no"}`;
    $("detect-credentials").textContent = credentialsText(report.content_credentials);
    $("detect-watermark").textContent = watermarkText(report.watermark);
    $("detect-result").hidden = false;
  };
  dropZone($("detect-drop"), $("detect-file"), $("detect-preview"), show);
}

// ------------------------------------------------------------------ start

async function main() {
  const r = await fetch("/api/info");
  if (!r.ok) { toast(await problem(r)); return; }
  state.info = await r.json();
  state.ranges = state.info.ranges;
  for (const input of document.querySelectorAll(".seed-input input")) {
    input.min = state.ranges.seed.min;
    input.max = state.ranges.seed.max;
  }
  setupFace();
  setupMixing();
  setupInterpolation();
  setupProjection();
  setupAnimation();
  setupDetect();
  setupDice();
}

main();
