// dogbreed page: upload a photo, show the verdict and top-5 breeds (for each dog found, numbered boxes on the photo),
// optionally send feedback. No libraries.
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
  const fbDog = $("fb-dog");
  const fbDogRow = $("fb-dog-row");
  const figure = preview.closest("figure");
  const grid = result.querySelector(".result-grid");
  const upload = dropzone.closest(".upload");
  const overlayImg = $("overlay");
  const explainLabel = $("explain-label");
  const explainToggle = $("explain-toggle");
  const explainStatus = $("explain-status");
  const lookalikes = $("lookalikes");
  const boxesEl = $("boxes");
  const dogsEl = $("dogs");
  let overlayUrl = null;

  let current = null; // {file, prediction}
  let requestSeq = 0; // a newer photo wins over a slower, older request
  // and the older request is aborted: the server then drops its photos from the queue instead of running them
  let predictAbort = null;
  let previewUrl = null;
  let breedNames = null;
  let limits = null; // the server's budgets (GET /healthz), so an over-size photo is refused before uploading it

  const ICONS = { dog: "\u2713", uncertain_breed: "?", no_dog: "\u2715", error: "!" };
  // one colour per dog (a pack of eight apart), for its box and its number; each carries white text at 4.5:1 or more
  const DOG_COLOURS = ["#a8431f", "#1b64d8", "#1e7a4c", "#7a3fb0", "#8a5a00", "#b0306a", "#0e6f7e", "#4a5568"];
  const dogColour = (i) => DOG_COLOURS[i % DOG_COLOURS.length];

  // "a Pug", "an Old English sheepdog", "an Irish setter": the article a breed's name takes.
  function aBreed(name) {
    return (/^[aeiou]/i.test(name) ? "an " : "a ") + name;
  }

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

  // `kind` styles the box; `verdict` (default: kind) is the photo's answer, in data-verdict
  function setVerdict(kind, title, detail, verdict) {
    verdictEl.className = "verdict " + kind;
    verdictEl.replaceChildren();
    const icon = el("span", "icon", ICONS[kind] || "");
    icon.setAttribute("aria-hidden", "true");
    const body = el("div");
    body.append(el("h2", null, title));
    if (detail) body.append(el("p", null, detail));
    verdictEl.append(icon, body);
    verdictEl.dataset.verdict = verdict || kind;
  }

  function renderBreeds(breeds, dimmed, target) {
    target = target || breedsEl;
    target.replaceChildren();
    target.classList.toggle("dimmed", !!dimmed);
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
      target.append(li);
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
    fbDog.replaceChildren();
    fbDogRow.hidden = true;
    resetExplain();
    lookalikes.replaceChildren();
    lookalikes.hidden = true;
    clearDogs();
  }

  function clearDogs() {
    grid.classList.remove("several");
    boxesEl.replaceChildren();
    boxesEl.hidden = true;
    dogsEl.replaceChildren();
    dogsEl.hidden = true;
  }

  // What one dog looks like, in words: [title, detail]
  function dogWords(d) {
    const top = d.breeds[0];
    const second = d.breeds[1];
    if (d.verdict === "uncertain_breed" || !top) {
      return ["Mixed or uncertain breed", "No single breed stands out: it may be a mix, or a breed we don't know."];
    }
    if (d.verdict === "no_dog") return ["Maybe not a dog", "Only " + pct(d.dog_probability) + " dog."];
    if (d.several_breeds_likely && second) {
      return [top.name, "It could also be " + aBreed(second.name) + ", or a mix of the two."];
    }
    return [top.name, "We're " + pct(top.probability) + " sure about the breed."];
  }

  // The numbered boxes: a layer over the photo's drawn area (object-fit: contain leaves margins when the photo's
  // shape differs from its frame), each box placed in percent of the photo's own pixels, so only the layer moves
  // when the page is resized.
  function drawBoxes(dogs) {
    boxesEl.replaceChildren();
    const w = preview.naturalWidth, h = preview.naturalHeight;
    if (!dogs || !dogs.length || figure.hidden || !w || !h) { boxesEl.hidden = true; return; }
    const size = current && current.prediction && current.prediction.size;
    if (size && (size[0] !== w || size[1] !== h)) {
      // the browser shows the photo another way up than its EXIF rotation says (Chromium ignores a WebP's):
      // boxes drawn on it would miss the dogs, so the answer is shown as for a photo the browser cannot show
      figure.hidden = true; grid.classList.add("single"); boxesEl.hidden = true;
      render(current.prediction);
      return;
    }
    dogs.forEach((d, i) => {
      const n = i + 1;
      const [x0, y0, x1, y1] = d.box.map((v, k) => Math.min(Math.max(v, 0), k % 2 ? h : w));
      const words = dogWords(d)[0];
      let box;
      if (dogs.length > 1) { // a link to its entry in the list (on a phone the list is below the photo)
        box = el("a", "dog-box");
        box.href = "#dog-" + n;
        box.setAttribute("aria-label", "Dog " + n + ": " + words + ". Go to its breeds");
        box.addEventListener("click", (ev) => {
          ev.preventDefault();
          const entry = $("dog-" + n);
          entry.scrollIntoView({ block: "nearest", behavior: "smooth" });
          entry.focus({ preventScroll: true });
        });
      } else {
        box = el("div", "dog-box");
        box.setAttribute("role", "img");
        box.setAttribute("aria-label", "Dog " + n + ", " + words + ", marked on the photo");
      }
      box.dataset.dog = String(n);
      box.style.setProperty("--dog", dogColour(i));
      box.style.left = (100 * x0 / w) + "%";
      box.style.top = (100 * y0 / h) + "%";
      box.style.width = (100 * (x1 - x0) / w) + "%";
      box.style.height = (100 * (y1 - y0) / h) + "%";
      const num = el("span", "dog-num", String(n));
      num.setAttribute("aria-hidden", "true");
      box.append(num);
      linkHover(box, n);
      boxesEl.append(box);
    });
    boxesEl.hidden = false;
    placeBoxes();
  }

  function placeBoxes() {
    if (boxesEl.hidden) return;
    const img = overlayImg.hidden ? preview : overlayImg; // the heat-map has the photo's shape
    const cw = img.clientWidth, ch = img.clientHeight;
    const w = preview.naturalWidth, h = preview.naturalHeight;
    if (!cw || !ch || !w || !h) return;
    const s = Math.min(cw / w, ch / h);
    const dw = w * s, dh = h * s;
    boxesEl.style.left = (img.offsetLeft + (cw - dw) / 2) + "px";
    boxesEl.style.top = (img.offsetTop + (ch - dh) / 2) + "px";
    boxesEl.style.width = dw + "px";
    boxesEl.style.height = dh + "px";
    placeNumbers(dw, dh);
  }

  // Where each dog's number goes: the first of its places that keeps it on the photo, off the numbers placed before
  // it and off the small boxes (in a pack, neighbouring boxes overlap and their top-left corners meet, so one place
  // for every number put one number over another). A box's places are its inside corners, top left first, then
  // outside it; a box drawn smaller than twice its number (a dog that would vanish under it) has only places outside
  // it, above it like a tab first, and its number is placed before the others', as it has the fewest places.
  const NUM_GAP = 2; // px between a number outside its box and the box: near enough to read as its tab
  const BORDER = 3; // the box's border: a number's left and top count from inside it
  const CORNERS = ["4px 0 8px 0", "0 4px 0 8px", "0 8px 0 4px", "8px 0 4px 0"]; // rounded away from the box's corner
  function placeNumbers(dw, dh) {
    const boxes = [...boxesEl.querySelectorAll(".dog-box")].map((box) => {
      const num = box.querySelector(".dog-num");
      const r = { num, x: box.offsetLeft, y: box.offsetTop, w: box.offsetWidth, h: box.offsetHeight,
        nw: num.offsetWidth, nh: num.offsetHeight };
      r.small = r.w < 2 * r.nw || r.h < 2 * r.nh;
      return r;
    });
    const placed = [];
    const hit = (a, b) => Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x)) *
      Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));
    for (const r of [...boxes.filter((b) => b.small), ...boxes.filter((b) => !b.small)]) {
      const { w, h, nw, nh } = r, g = NUM_GAP;
      // [left, top] of the number's outer edge, in the box's outer coordinates
      const places = r.small
        ? [[0, -nh - g], [-nw - g, 0], [w + g, 0], [0, h + g], [w - nw, -nh - g], [w - nw, h + g], [-nw - g, h - nh],
          [w + g, h - nh], [-nw - g, -nh - g], [w + g, -nh - g], [-nw - g, h + g], [w + g, h + g]]
        : [[0, 0], [w - nw, 0], [0, h - nh], [w - nw, h - nh], [0, -nh - g], [-nw - g, 0], [w + g, 0], [0, h + g]];
      let best = null;
      places.forEach(([px, py], k) => {
        const at = { x: r.x + px, y: r.y + py, w: nw, h: nh };
        const off = at.x < -1 || at.y < -1 || at.x + nw > dw + 1 || at.y + nh > dh + 1;
        const cost = [off ? 1 : 0, placed.reduce((c, q) => c + hit(at, q), 0),
          boxes.reduce((c, o) => c + (o.small ? hit(at, o) : 0), 0), k];
        if (!best || compare(cost, best.cost) < 0) best = { cost, at, k, px, py };
      });
      placed.push(best.at);
      r.num.style.left = (best.px - BORDER) + "px";
      r.num.style.top = (best.py - BORDER) + "px";
      r.num.style.borderRadius = !r.small && best.k < 4 ? CORNERS[best.k] : "4px";
    }
  }

  function compare(a, b) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
  }

  // hovering or focusing a dog's box or its entry lights up both
  function linkHover(node, n) {
    const on = (v) => () => {
      for (const e of document.querySelectorAll('[data-dog="' + n + '"]')) e.classList.toggle("active", v);
    };
    node.addEventListener("mouseenter", on(true));
    node.addEventListener("mouseleave", on(false));
    node.addEventListener("focusin", on(true));
    node.addEventListener("focusout", on(false));
  }

  // Two or more dogs: one entry each, numbered as its box, with its own verdict, breeds and look-alikes.
  function renderDogs(dogs, k) {
    dogsEl.replaceChildren();
    dogs.forEach((d, i) => {
      const n = i + 1;
      const [title, detail] = dogWords(d);
      const li = el("li", "dog " + d.verdict);
      li.id = "dog-" + n;
      li.tabIndex = -1; // a box's link moves focus here
      li.dataset.dog = String(n);
      li.style.setProperty("--dog", dogColour(i));
      const head = el("div", "dog-head");
      const num = el("span", "dog-num", String(n));
      num.setAttribute("aria-hidden", "true");
      const words = el("div");
      const h3 = el("h3");
      h3.append(el("span", "visually-hidden", "Dog " + n + ": "), title);
      words.append(h3, el("p", null, detail));
      head.append(num, words);
      const list = el("ol", "breeds");
      list.setAttribute("aria-label", "Dog " + n + "'s closest breeds");
      renderBreeds(d.breeds.slice(0, k), d.verdict === "no_dog", list); // as many as the photo's own answer
      li.append(head, list);
      const looks = renderLookAlikeRows(d.look_alikes, "What dog " + n + "'s breeds look like");
      if (looks) li.append(looks);
      linkHover(li, n);
      dogsEl.append(li);
    });
    dogsEl.hidden = false;
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
    placeBoxes(); // the boxes stay drawn over the heat-map
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
        explainStatus.textContent = explainWords(headerText(resp.headers.get("X-Dogbreed-Breed")),
          resp.headers.get("X-Dogbreed-Dogs"));
      };
      overlayImg.src = overlayUrl;
    } catch (e) {
      if (seq !== requestSeq) return;
      explainToggle.checked = false;
      explainStatus.textContent = "No heat-map: " + e.message;
    }
  }

  // the server percent-encodes what a header cannot carry (a breed a user added, "Löwchen")
  function headerText(v) {
    try { return v ? decodeURIComponent(v) : v; } catch (e) { return v; }
  }

  // several dogs (or one small one) are each explained in their own box, for their own breed
  function explainWords(breeds, dogs) {
    const nums = (dogs || "").split(",").filter((v) => v);
    const names = (breeds || "").split("; ");
    if (nums.length > 1 && names.length === nums.length) {
      return "Warm colours: where the model looked, each dog in its own box (" +
        nums.map((n, i) => n + ": " + names[i]).join(", ") + ").";
    }
    return "Warm colours: where the model looked for the " + (breeds || "top breed") +
      (nums.length === 1 ? ", in the dog's box." : ".");
  }

  function renderLookAlikes(list) {
    lookalikes.replaceChildren();
    const rows = renderLookAlikeRows(list);
    if (!rows) { lookalikes.hidden = true; return; }
    lookalikes.append(...rows.childNodes);
    lookalikes.hidden = false;
  }

  // look-alike rows (a heading, then one row of gallery photos per breed) in a new element; null when none
  function renderLookAlikeRows(list, heading) {
    const rows = (list || []).filter((b) => b.photos && b.photos.length);
    if (!rows.length) return null;
    const out = el("section", "lookalikes");
    out.setAttribute("aria-label", heading || "Example photos of these breeds");
    out.append(el(heading ? "h4" : "h3", null, heading || "What these breeds look like")); // h4 under a dog's h3
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
      out.append(row);
    }
    return out;
  }

  function showError(message) {
    showBusy(false);
    breedsEl.replaceChildren();
    caption.hidden = true;
    fbForm.hidden = true;
    clearDogs();
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
    const dogs = shownDogs(p);
    drawBoxes(dogs);
    if (dogs.length > 1) { renderSeveral(p, dogs); return; }
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
      // a dog the model missed can still be reported, with its breed: the one way such photos reach retraining
      fbForm.querySelector("legend").textContent = "Is there a dog here after all?";
      fbYes.hidden = true;
      $("fb-or").textContent = "It's a";
      fbForm.hidden = false;
      loadBreedNames();
      return;
    }
    if (p.verdict === "uncertain_breed") {
      setVerdict("uncertain_breed", "Mixed or uncertain breed",
        "There's a dog here, but no single breed stands out: it may be a mix, or a breed we don't know. " +
        "The closest matches are below.");
    } else {
      let detail = "We're " + pct(top.probability) + " sure about the breed.";
      if (p.several_breeds_likely && second) {
        detail = "It could also be " + aBreed(second.name) + ", or a mix of the two.";
      }
      setVerdict("dog", "Looks like " + aBreed(top.name), detail);
    }
    caption.textContent = "Top " + p.breeds.length + " breeds";
    caption.hidden = false;
    renderBreeds(p.breeds, false);
    showFeedback(p, "");
  }

  // Several dogs: a summary, then each dog by its number; feedback is about dog 1, the one the photo's answer names
  function renderSeveral(p, dogs) {
    const names = dogs.map((d, i) => (i + 1) + ": " + dogWords(d)[0]);
    // a photo the browser cannot draw (TIFF) shows no numbers: say so rather than point at them
    const where = figure.hidden
      ? "This browser cannot show the photo's format, so the numbers are not drawn on it; the most prominent first. "
      : "Numbered on the photo, the most prominent first. ";
    setVerdict("dog", dogs.length + " dogs in this photo", where + names.join(", ") + ".", p.verdict);
    grid.classList.add("several");
    caption.hidden = true;
    breedsEl.replaceChildren();
    renderLookAlikes(null);
    renderDogs(dogs, p.breeds.length);
    fbDog.replaceChildren(...dogs.map((d, i) => {
      const o = el("option", null, "dog " + (i + 1) + ": " + dogWords(d)[0]);
      o.value = String(i);
      return o;
    }));
    fbDog.value = "0";
    fbDogRow.hidden = false;
    showFeedback(dogs[0], " dog 1");
  }

  // "Is this right?" only makes sense for a clear answer; for an uncertain one, ask for the breed instead.
  // ``p``: the answer asked about (the photo's, or one dog's of several).
  function showFeedback(p, which) {
    const sure = p.verdict === "dog";
    fbForm.querySelector("legend").textContent = which
      ? (sure ? "Is" + which + " " + aBreed(p.breeds[0].name) + "?" : "Do you know" + which + "'s breed?")
      : (sure ? "Is this right?" : "Do you know the breed?");
    fbYes.hidden = !sure;
    $("fb-or").textContent = sure ? "or it's a" : "It's a";
    fbForm.hidden = false;
    loadBreedNames();
  }

  // the answer feedback is about, and the box to send with it: the dog chosen of several, or a lone dog too
  // small for its photo to stand for it (under 30% of it, the rule the answer itself reads it by); else none
  function feedbackTarget() {
    const p = current.prediction;
    const dogs = shownDogs(p);
    if (dogs.length > 1) { const d = dogs[Number(fbDog.value) || 0]; return { answer: d, box: d.box }; }
    const w = preview.naturalWidth, h = preview.naturalHeight;
    if (dogs.length === 1 && w && h) {
      const [x0, y0, x1, y1] = dogs[0].box;
      if ((x1 - x0) * (y1 - y0) < 0.3 * w * h) return { answer: p, box: dogs[0].box };
    }
    return { answer: p, box: null };
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
    if (predictAbort) predictAbort.abort();
    const abort = (predictAbort = new AbortController());
    current = { file: file, prediction: null };
    result.hidden = false;
    resetAnswer();
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    figure.hidden = false;
    grid.classList.remove("single");
    // not an image the browser can show (or a format only the server reads, like TIFF): answer full width
    preview.onerror = () => {
      figure.hidden = true; grid.classList.add("single"); clearBoxes();
      if (current && current.prediction) render(current.prediction); // its words may have pointed at the photo
    };
    // the answer may come before the photo is decoded: draw the boxes once both are there
    preview.onload = () => { if (current && current.prediction) drawBoxes(shownDogs(current.prediction)); };
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
      resp = await fetch("/v1/predict?top_k=5", { method: "POST", body: form, signal: abort.signal });
    } catch (e) {
      if (seq === requestSeq) showError("Could not reach the server. Check your connection and try again.");
      return;
    }
    if (seq !== requestSeq) return;
    if (!resp.ok) {
      showError(await errorMessage(resp));
      return;
    }
    let body;
    try {
      body = await resp.json();
    } catch (e) { // aborted by a newer photo while the answer arrived, or cut off
      if (seq === requestSeq) showError("The server's answer was cut off. Try again.");
      return;
    }
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
    const { answer: p, box } = feedbackTarget();
    const form = new FormData();
    form.append("file", current.file, current.file.name || "pasted-image");
    form.append("breed", breed);
    form.append("predicted", p.verdict === "dog" ? p.breeds[0].name : p.verdict);
    if (box) form.append("box", box.join(","));
    fbMessage.className = "fb-message";
    fbMessage.textContent = "Sending\u2026";
    for (const b of [fbYes, fbSend]) b.disabled = true;
    try {
      const resp = await fetch("/v1/feedback", { method: "POST", body: form });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      const body = await resp.json();
      fbMessage.className = "fb-message ok";
      const several = shownDogs(current.prediction).length > 1;
      fbMessage.textContent = "Thank you! Saved " + (several ? "dog " + (Number(fbDog.value) + 1) + " " : "") +
        "as " + body.breed.name + ".";
    } catch (e) {
      fbMessage.className = "fb-message bad";
      fbMessage.textContent = "Feedback not saved: " + e.message;
      for (const b of [fbYes, fbSend]) b.disabled = false;
    }
  }

  function shownDogs(p) {
    return p.verdict === "no_dog" ? [] : (p.dogs || []);
  }

  function clearBoxes() {
    boxesEl.replaceChildren();
    boxesEl.hidden = true;
  }

  explainToggle.addEventListener("change", toggleExplain);
  // the layer follows the photo's drawn size: a resized window, a rotated phone, the column changing width
  if (window.ResizeObserver) {
    const ro = new ResizeObserver(() => placeBoxes());
    ro.observe(preview);
    ro.observe(overlayImg);
  }
  window.addEventListener("resize", placeBoxes);

  fbYes.addEventListener("click", () => {
    if (current && current.prediction) sendFeedback(feedbackTarget().answer.breeds[0].name);
  });
  fbDog.addEventListener("change", () => {
    const i = Number(fbDog.value) || 0;
    showFeedback(shownDogs(current.prediction)[i], " dog " + (i + 1));
    fbMessage.textContent = "";
    fbMessage.className = "fb-message";
    for (const b of [fbYes, fbSend]) b.disabled = false;
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
