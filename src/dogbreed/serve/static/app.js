// dogbreed page: upload a photo, show the verdict and top-5 breeds, optionally send feedback. No libraries.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("file");
  const dropzone = $("dropzone");
  const result = $("result");
  const preview = $("preview");
  const filename = $("filename");
  const statusEl = $("status");
  const verdictEl = $("verdict");
  const breedsEl = $("breeds");
  const caption = $("breeds-caption");
  const fbForm = $("feedback");
  const fbBreed = $("fb-breed");
  const fbYes = $("fb-yes");
  const fbSend = $("fb-send");
  const fbMessage = $("fb-message");
  const figure = preview.closest("figure");
  const grid = result.querySelector(".result-grid");
  const upload = dropzone.closest(".upload");
  const overlayImg = $("overlay");
  const explainLabel = $("explain-label");
  const explainToggle = $("explain-toggle");
  const explainStatus = $("explain-status");
  const lookalikes = $("lookalikes");
  let overlayUrl = null;

  let current = null; // {file, prediction}
  let requestSeq = 0; // a newer photo wins over a slower, older request
  let previewUrl = null;
  let breedNames = null;
  let limits = null; // the server's budgets (GET /healthz), so an over-size photo is refused before uploading it

  const ICONS = { dog: "\u2713", uncertain_breed: "?", no_dog: "\u2715", error: "!" };

  function pct(p) {
    if (p > 0 && p < 0.005) return "<1%";
    return Math.round(p * 100) + "%";
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setVerdict(kind, title, detail) {
    verdictEl.className = "verdict " + kind;
    verdictEl.replaceChildren();
    const icon = el("span", "icon", ICONS[kind] || "");
    icon.setAttribute("aria-hidden", "true");
    const body = el("div");
    body.append(el("h2", null, title));
    if (detail) body.append(el("p", null, detail));
    verdictEl.append(icon, body);
    verdictEl.dataset.verdict = kind;
  }

  function renderBreeds(breeds, dimmed) {
    breedsEl.replaceChildren();
    breedsEl.classList.toggle("dimmed", !!dimmed);
    const fills = [];
    for (const b of breeds) {
      const li = el("li");
      li.append(el("span", "breed-name", b.name), el("span", "breed-pct", pct(b.probability)));
      const bar = el("span", "bar");
      bar.setAttribute("aria-hidden", "true"); // the percentage next to it is the accessible value
      const fill = el("span", "bar-fill");
      fill.style.display = "block";
      bar.append(fill);
      li.append(bar);
      breedsEl.append(li);
      fills.push([fill, b.probability]);
    }
    // set widths on the next frame so the bars grow in
    requestAnimationFrame(() => {
      for (const [fill, p] of fills) fill.style.width = Math.max(p * 100, 0.8).toFixed(1) + "%";
    });
  }

  function showBusy(on) {
    result.setAttribute("aria-busy", on ? "true" : "false");
    statusEl.replaceChildren();
    if (on) {
      const s = el("span", "spinner");
      s.setAttribute("aria-hidden", "true");
      statusEl.append(s, el("span", null, "Looking closely\u2026"));
    }
  }

  function resetAnswer() {
    verdictEl.replaceChildren();
    verdictEl.className = "verdict";
    delete verdictEl.dataset.verdict;
    breedsEl.replaceChildren();
    caption.hidden = true;
    fbForm.hidden = true;
    fbMessage.textContent = "";
    fbMessage.className = "fb-message";
    fbBreed.value = "";
    for (const b of [fbYes, fbSend]) b.disabled = false;
    resetExplain();
    lookalikes.replaceChildren();
    lookalikes.hidden = true;
  }

  function resetExplain() {
    explainToggle.checked = false;
    explainLabel.hidden = true;
    explainStatus.textContent = "";
    overlayImg.hidden = true;
    overlayImg.removeAttribute("src");
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = null;
    preview.hidden = false;
  }

  function showOverlay(on) {
    overlayImg.hidden = !on;
    preview.hidden = on;
  }

  // The heat-map is computed only when the toggle is switched on (a second, slower request), then kept.
  async function toggleExplain() {
    if (!explainToggle.checked) { showOverlay(false); return; }
    if (overlayUrl) { showOverlay(true); return; }
    if (!current || !current.prediction) return;
    const seq = requestSeq;
    const form = new FormData();
    form.append("file", current.file, current.file.name || "pasted-image");
    explainStatus.textContent = "Drawing the heat-map\u2026";
    try {
      const resp = await fetch("/v1/explain", { method: "POST", body: form });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      const blob = await resp.blob();
      if (seq !== requestSeq) return;
      overlayUrl = URL.createObjectURL(blob);
      overlayImg.onload = () => {
        if (seq !== requestSeq || !explainToggle.checked) return;
        showOverlay(true);
        explainStatus.textContent = "Warm colours: where the model looked for the " +
          (resp.headers.get("X-Dogbreed-Breed") || "top breed") + ".";
      };
      overlayImg.src = overlayUrl;
    } catch (e) {
      if (seq !== requestSeq) return;
      explainToggle.checked = false;
      explainStatus.textContent = "No heat-map: " + e.message;
    }
  }

  function renderLookAlikes(list) {
    lookalikes.replaceChildren();
    const rows = (list || []).filter((b) => b.photos && b.photos.length);
    if (!rows.length) { lookalikes.hidden = true; return; }
    lookalikes.append(el("h3", null, "What these breeds look like"));
    for (const b of rows) {
      const row = el("div", "lookalike-row");
      row.append(el("span", "breed-label", b.name));
      for (const ph of b.photos.slice(0, 3)) {
        const img = el("img");
        img.src = "/v1/gallery/" + ph.id + ".jpg";
        img.alt = b.name + ", example photo";
        img.loading = "lazy";
        row.append(img);
      }
      lookalikes.append(row);
    }
    lookalikes.hidden = false;
  }

  function showError(message) {
    showBusy(false);
    breedsEl.replaceChildren();
    caption.hidden = true;
    fbForm.hidden = true;
    setVerdict("error", "Sorry, that didn't work", message);
    requestAnimationFrame(reveal);
  }

  function reveal() {
    // on a phone the answer sits below the photo; bring it into view without yanking a desktop page around
    const r = verdictEl.getBoundingClientRect();
    if (r.bottom > window.innerHeight) verdictEl.scrollIntoView({ block: "center", behavior: "smooth" });
  }

  function render(p) {
    showBusy(false);
    requestAnimationFrame(reveal);
    explainLabel.hidden = figure.hidden;
    renderLookAlikes(p.verdict === "no_dog" ? null : p.look_alikes);
    const top = p.breeds[0];
    const second = p.breeds[1];
    if (p.verdict === "no_dog") {
      setVerdict("no_dog", "No dog found",
        "We couldn't find a dog in this photo (" + pct(p.dog_probability) + " dog). " +
        "Try a photo where the dog is clearly visible and fills more of the frame.");
      caption.textContent = "Closest breeds, for reference only";
      caption.hidden = false;
      renderBreeds(p.breeds, true);
      fbForm.hidden = true;
      return;
    }
    if (p.verdict === "uncertain_breed") {
      setVerdict("uncertain_breed", "Mixed or uncertain breed",
        "There's a dog here, but no single breed stands out: it may be a mix, or a breed we don't know. " +
        "The closest matches are below.");
    } else {
      let detail = "We're " + pct(top.probability) + " sure about the breed.";
      if (p.several_breeds_likely && second) {
        detail = "It could also be a " + second.name + ", or a mix of the two.";
      }
      setVerdict("dog", "Looks like a " + top.name, detail);
    }
    caption.textContent = "Top " + p.breeds.length + " breeds";
    caption.hidden = false;
    renderBreeds(p.breeds, false);
    // "Is this right?" only makes sense for a clear answer; for an uncertain one, ask for the breed instead
    const sure = p.verdict === "dog";
    fbForm.querySelector("legend").textContent = sure ? "Is this right?" : "Do you know the breed?";
    fbYes.hidden = !sure;
    $("fb-or").textContent = sure ? "or it's a" : "It's a";
    fbForm.hidden = false;
    loadBreedNames();
  }

  function mb(bytes) {
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.detail === "string") return body.detail;
    } catch (e) { /* not JSON: fall through */ }
    return "The server answered " + resp.status + " " + resp.statusText + ".";
  }

  async function predict(file) {
    const seq = ++requestSeq;
    current = { file: file, prediction: null };
    result.hidden = false;
    resetAnswer();
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    figure.hidden = false;
    grid.classList.remove("single");
    // not an image the browser can show (or a format only the server reads, like TIFF): answer full width
    preview.onerror = () => { figure.hidden = true; grid.classList.add("single"); };
    upload.classList.add("compact");
    $("drop-title").textContent = "Drop another photo here, or";
    $("choose").textContent = "Choose another photo";
    filename.textContent = file.name || "pasted image";
    if (limits && file.size > limits.max_file_bytes) {
      // the server would refuse it too (413) and close the connection mid-upload; say why without sending it
      showError("This photo is " + mb(file.size) + "; the largest the server takes is " +
        mb(limits.max_file_bytes) + ". Try a smaller copy of it.");
      return;
    }
    showBusy(true);
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    let resp;
    try {
      resp = await fetch("/v1/predict?top_k=5", { method: "POST", body: form });
    } catch (e) {
      if (seq === requestSeq) showError("Could not reach the server. Check your connection and try again.");
      return;
    }
    if (seq !== requestSeq) return;
    if (!resp.ok) {
      showError(await errorMessage(resp));
      return;
    }
    const body = await resp.json();
    if (seq !== requestSeq) return;
    const p = body.predictions && body.predictions[0];
    if (!p || p.error) {
      showError((p && p.error) || "The server sent no prediction.");
      return;
    }
    current.prediction = p;
    render(p);
  }

  async function loadBreedNames() {
    if (breedNames) return;
    breedNames = [];
    try {
      const resp = await fetch("/v1/breeds");
      const body = await resp.json();
      breedNames = body.breeds.map((b) => b.name).sort((a, b) => a.localeCompare(b));
      const list = $("breed-list");
      list.replaceChildren(...breedNames.map((n) => { const o = el("option"); o.value = n; return o; }));
    } catch (e) {
      breedNames = null; // try again next time
    }
  }

  async function sendFeedback(breed) {
    if (!current || !current.prediction) return;
    const p = current.prediction;
    const form = new FormData();
    form.append("file", current.file, current.file.name || "pasted-image");
    form.append("breed", breed);
    form.append("predicted", p.verdict === "dog" ? p.breeds[0].name : p.verdict);
    fbMessage.className = "fb-message";
    fbMessage.textContent = "Sending\u2026";
    for (const b of [fbYes, fbSend]) b.disabled = true;
    try {
      const resp = await fetch("/v1/feedback", { method: "POST", body: form });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      const body = await resp.json();
      fbMessage.className = "fb-message ok";
      fbMessage.textContent = "Thank you! Saved as " + body.breed.name + ".";
    } catch (e) {
      fbMessage.className = "fb-message bad";
      fbMessage.textContent = "Feedback not saved: " + e.message;
      for (const b of [fbYes, fbSend]) b.disabled = false;
    }
  }

  explainToggle.addEventListener("change", toggleExplain);

  fbYes.addEventListener("click", () => {
    if (current && current.prediction) sendFeedback(current.prediction.breeds[0].name);
  });
  fbForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = fbBreed.value.trim();
    if (!v) {
      fbMessage.className = "fb-message bad";
      fbMessage.textContent = "Type or pick a breed first.";
      fbBreed.focus();
      return;
    }
    sendFeedback(v);
  });

  function takeFiles(files) {
    if (files && files.length) predict(files[0]);
  }

  fileInput.addEventListener("change", () => {
    takeFiles(fileInput.files);
    fileInput.value = ""; // choosing the same file again still triggers a prediction
  });

  // Drag and drop: on the drop zone, and anywhere on the page so a missed drop doesn't open the photo instead.
  let dragDepth = 0;
  window.addEventListener("dragenter", (ev) => {
    if (ev.dataTransfer && Array.from(ev.dataTransfer.types).includes("Files")) {
      dragDepth++;
      dropzone.classList.add("dragging");
    }
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropzone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove("dragging");
    takeFiles(ev.dataTransfer && ev.dataTransfer.files);
  });

  fetch("/healthz").then((r) => (r.ok ? r.json() : null)).then((h) => { limits = h && h.limits; })
    .catch(() => { /* no limits known: the server still refuses what is too big */ });

  window.addEventListener("paste", (ev) => {
    const items = ev.clipboardData ? Array.from(ev.clipboardData.files) : [];
    const img = items.find((f) => f.type.startsWith("image/"));
    if (img) predict(img);
  });
})();
