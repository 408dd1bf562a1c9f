// The page of herbarium-serve: plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";
const state = { results: [], maxFiles: 16, k: 5 };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModelCard() {
  try {
    const response = await fetch("model"), card = await response.json();
    if (!response.ok) { $("model-card").textContent = card.error || `error ${response.status}`; return; }
    state.maxFiles = card.max_files || state.maxFiles;
    const accuracy = card.metrics && card.metrics.valid && card.metrics.valid.accuracy;
    $("model-card").textContent = `${card.architecture}, ${card.species} species in ${card.families} families, ` +
      `${card.image_size} px, ${card.runtime}` + (accuracy !== undefined ? `, validation accuracy ${(100 * accuracy).toFixed(1)}%` : "") +
      ` (herbarium_fastai ${card.kit_version})`;
  } catch (e) { $("model-card").textContent = "Could not read the model card: " + e; }
}

function el(tag, attributes, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "text") node.textContent = value; else node.setAttribute(key, value);
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}

// a value in [0, 1] -> a colour from blue (cold) through green and yellow to red (hot)
function heatColour(v) {
  const c = (x) => Math.round(255 * Math.max(0, Math.min(1, x)));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}

function heatmapCanvas(heatmap) {
  const canvas = el("canvas", { class: "heatmap", width: heatmap.width, height: heatmap.height });
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(heatmap.width, heatmap.height);
  let peak = [0, 0, -1];
  heatmap.values.forEach((row, y) => row.forEach((v, x) => {
    const [r, g, b] = heatColour(v), i = 4 * (y * heatmap.width + x);
    pixels.data.set([r, g, b, Math.round(80 + 175 * v)], i);
    if (v > peak[2]) peak = [x, y, v];
  }));
  context.putImageData(pixels, 0, 0);  // the browser scales the small map smoothly over the sheet
  canvas.dataset.peakX = ((peak[0] + 0.5) / heatmap.width).toFixed(3);
  canvas.dataset.peakY = ((peak[1] + 0.5) / heatmap.height).toFixed(3);
  return canvas;
}

function resultCard(result) {
  const best = result.top[0];
  const sheet = el("div", { class: "sheet" }, [el("img", { src: result.preview, alt: result.file })]);
  if (result.heatmap) sheet.appendChild(heatmapCanvas(result.heatmap));
  // family and order: the best of each rank, with the species' probabilities summed up the tree (`ranks`)
  const ranks = result.ranks || {}, percent = (p) => (100 * p).toFixed(1) + "%";
  const taxon = (rank) => ranks[rank] ? `${ranks[rank].name} (${percent(ranks[rank].probability)})` : (best[rank] || "?");
  const taxonomy = el("p", { class: "taxonomy" }, [
    el("span", { text: "Family " }), el("strong", { class: "family", text: taxon("family") }),
    el("span", { text: " · Order " }), el("strong", { class: "order", text: taxon("order") })]);
  const answer = result.answer ? el("p", { class: "answer" }, [  // the deepest rank the model is confident at
    el("span", { text: `Answer (${result.answer.rank}): ` }), el("strong", { text: result.answer.name }),
    el("span", { text: ` ${percent(result.answer.probability)}` })]) : el("p", {});
  const list = el("ol", { class: "top" }, result.top.map((p) => el("li", {}, [
    el("span", { class: "species", text: p.species || `category ${p.category_id}` }),
    el("span", { class: "probability", text: (100 * p.probability).toFixed(1) + "%" }),
    el("div", { class: "bar" }, [el("div", { style: `width: ${(100 * p.probability).toFixed(1)}%` })])])));
  return el("section", { class: "result", "data-file": result.file },
    [el("h2", { text: result.file }), el("div", { class: "sheet-frame" }, [sheet]), answer, taxonomy, list]);
}

async function identify(files) {
  files = Array.from(files);
  if (!files.length) return;
  for (let start = 0; start < files.length; start += state.maxFiles) {
    const chunk = files.slice(start, start + state.maxFiles), form = new FormData();
    chunk.forEach((file) => form.append("images", file, file.name));
    setStatus(`Identifying ${start + chunk.length} of ${files.length}…`);
    let answer;
    try {
      const response = await postImages(form);
      answer = await response.json();
      if (!response.ok) { setStatus(answer.error || `error ${response.status}`, true); return; }
    } catch (e) { setStatus("The server did not answer: " + e, true); return; }
    for (const result of answer.results) { state.results.push(result); $("results").appendChild(resultCard(result)); }
  }
  setStatus(`${state.results.length} sheet${state.results.length === 1 ? "" : "s"} identified.`);
  $("download").disabled = $("download-darwin-core").disabled = $("clear").disabled = false;
}

// POST the form to identify; while the server says it is busy (503), wait as its Retry-After says and send it again
async function postImages(form) {
  for (let attempt = 1; ; attempt++) {
    const response = await fetch(`identify?k=${state.k}&heatmap=true&preview=true`, { method: "POST", body: form });
    if (response.status !== 503 || attempt === 10) return response;
    setStatus("The server is busy: sending again in a moment…");
    await new Promise((done) => setTimeout(done, 1000 * (Number(response.headers.get("Retry-After")) || 1)));
  }
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvText() {
  const header = ["file", "position", "category_id", "species", "genus", "family", "order", "probability", "answer_rank", "answer", "answer_probability"];
  const rows = [header.join(",")];
  for (const result of state.results) result.top.forEach((p, i) => rows.push(
    [result.file, i + 1, p.category_id, p.species, p.genus, p.family, p.order, p.probability.toFixed(6),
     ...(result.answer ? [result.answer.rank, result.answer.name, result.answer.probability.toFixed(6)] : ["", "", ""])].map(csvField).join(",")));
  return rows.join("\n") + "\n";
}

// the Darwin Core identifications the server made (one per sheet, its terms in the server's order), as UTF-8 CSV
function darwinCoreText() {
  const records = state.results.map((result) => result.darwin_core).filter(Boolean);
  if (!records.length) return "";
  const terms = Object.keys(records[0]);
  return [terms.join(","), ...records.map((record) => terms.map((term) => csvField(record[term])).join(","))].join("\n") + "\n";
}

function download(text, name) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" })), download: name });
  document.body.appendChild(link); link.click(); link.remove();
}

window.addEventListener("DOMContentLoaded", () => {
  loadModelCard();
  const drop = $("drop");
  $("files").addEventListener("change", (event) => { identify(event.target.files); event.target.value = ""; });
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (event) => identify(event.dataTransfer.files));
  $("show-heatmap").addEventListener("change", (event) => document.body.classList.toggle("no-heatmap", !event.target.checked));
  $("download").addEventListener("click", () => download(csvText(), "herbarium_predictions.csv"));
  $("download-darwin-core").addEventListener("click", () => download(darwinCoreText(), "herbarium_identifications_dwc.csv"));
  $("clear").addEventListener("click", () => {
    state.results = []; $("results").replaceChildren(); setStatus("");
    $("download").disabled = $("download-darwin-core").disabled = $("clear").disabled = true;
  });
});
