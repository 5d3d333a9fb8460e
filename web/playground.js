// imagerag playground: add a data source, watch its ingestion, chat with images against it.
// Plain script, no build step, no dependencies. Talks to the app's HTTP API only.
(() => {
  "use strict";

  const DEFAULT_SETTINGS = { topN: 5, strictness: 3, inScope: true, system: "" };
  const POLL_MS = 1500; // GET /datasources/{name} while it ingests: gently
  const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
  const IMAGE_NAME = /\.(jpe?g|png|gif|bmp|tiff?)$/i;
  const IMAGE_TYPES = {
    jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", gif: "image/gif",
    bmp: "image/bmp", tif: "image/tiff", tiff: "image/tiff",
  };
  const KIND_LABELS = { upload: "uploaded files", blob: "Blob container", search_index: "existing index" };
  const STORE_KEY = "imagerag.functionKey";
  const STORE_BASE = "imagerag.apiBase";
  const STORE_SOURCE = "imagerag.source";
  // The API's error "param" -> the input that holds it.
  const PARAM_INPUTS = {
    name: "add-name",
    container: null, // upload or blob: decided by the kind
    index_name: "add-index",
    "fields_mapping.image_vector_fields": "map-vector",
    "fields_mapping.content_fields": "map-content",
    "fields_mapping.title_field": "map-title",
    "fields_mapping.url_field": "map-url",
    "fields_mapping.filepath_field": "map-filepath",
    fields_mapping: "map-vector",
    file: "add-files",
    metadata: "add-files",
  };

  const $ = (id) => document.getElementById(id);
  const session = window.sessionStorage;

  const state = {
    sources: [],
    current: null, // the chat session's data source: one per session
    messages: [], // the conversation sent with each request
    attachment: null, // { name, dataUrl }
    addFiles: [], // [{ file, textarea, url }]
    epoch: 0, // bumped when the session changes: late answers of an old one are dropped
    controller: null,
    busy: false,
    turn: 0,
    poll: { timer: 0, name: "" },
  };

  // ------------------------------------------------------------------ connection

  function defaultApiBase() {
    const path = window.location.pathname;
    const cut = path.lastIndexOf("/playground");
    return window.location.origin + (cut >= 0 ? path.slice(0, cut) : "/api");
  }

  function apiBase() {
    return (session.getItem(STORE_BASE) || defaultApiBase()).replace(/\/+$/, "");
  }

  function requestHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = session.getItem(STORE_KEY);
    if (key) headers["x-functions-key"] = key;
    return headers;
  }

  class ApiError extends Error {}

  async function api(method, path, options) {
    const { json, form, signal } = options || {};
    const init = { method, headers: requestHeaders(json === undefined ? {} : { "Content-Type": "application/json" }), signal };
    if (json !== undefined) init.body = JSON.stringify(json);
    if (form !== undefined) init.body = form;
    let response;
    try {
      response = await fetch(apiBase() + path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(`Cannot reach ${apiBase()} (${error.message}). Is the app running, and does it allow this page's origin?`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body, text };
  }

  function errorText(result) {
    const error = result.body && result.body.error;
    if (error && error.message) return error.message;
    if (result.status === 401 || result.status === 403) {
      return "The app refused the call: enter its function key under Connection.";
    }
    return `The app answered ${result.status}${result.text ? ": " + result.text.slice(0, 200) : "."}`;
  }

  function say(id, text, isError) {
    const element = $(id);
    element.textContent = text || "";
    element.classList.toggle("error", Boolean(isError));
  }

  // ------------------------------------------------------------------ data sources

  async function loadSources() {
    let result;
    try {
      result = await api("GET", "/datasources");
    } catch (error) {
      say("sources-status", error.message, true);
      return false;
    }
    if (!result.ok) {
      say("sources-status", errorText(result), true);
      return false;
    }
    state.sources = (result.body && result.body.value) || [];
    if (state.current && !state.sources.some((s) => s.name === state.current.name)) {
      const gone = state.current.name;
      startSession(null);
      say("sources-status", `The data source "${gone}" no longer exists: choose another one.`, true);
    }
    renderSourceSelect();
    return true;
  }

  function renderSourceSelect() {
    const select = $("source-select");
    const placeholder = new Option("Choose a data source", "");
    select.replaceChildren(placeholder);
    for (const source of state.sources) {
      const kind = KIND_LABELS[source.kind] || source.kind;
      const label = `${source.name} (${kind}${source.builtin ? ", built in" : ""})`;
      select.append(new Option(label, source.name));
    }
    select.value = state.current ? state.current.name : "";
    $("source-remove").disabled = !state.current || Boolean(state.current.builtin);
  }

  function sessionHasContent() {
    return state.messages.length > 0 || $("messages").children.length > 0 || !settingsAreDefault();
  }

  // One data source per chat session: another one starts a new session (after a warning).
  function switchSource(next) {
    if (state.current && next && state.current.name === next.name) return true;
    if (state.current && sessionHasContent()) {
      const target = next ? `"${next.name}"` : "no data source";
      const ok = window.confirm(
        `Switch this chat from "${state.current.name}" to ${target}?\n\n` +
          "This clears the chat and resets the chat settings."
      );
      if (!ok) return false;
    }
    startSession(next);
    return true;
  }

  function startSession(source) {
    state.current = source;
    clearChat();
    resetSettings();
    stopPolling();
    if (source) {
      session.setItem(STORE_SOURCE, source.name);
      $("chat-source").textContent = `Chatting with "${source.name}" (index ${source.index}).`;
      showDetails(source.name);
    } else {
      session.removeItem(STORE_SOURCE);
      $("chat-source").textContent = "No data source chosen.";
      $("source-details").hidden = true;
    }
    renderSourceSelect();
  }

  async function removeSource() {
    const source = state.current;
    if (!source || source.builtin) return;
    const deleteIndex = $("remove-index").checked;
    const what = deleteIndex
      ? source.kind === "upload"
        ? " and delete its index and the uploaded images"
        : source.kind === "blob"
          ? " and delete its index"
          : ""
      : "";
    const ok = window.confirm(
      `Remove the data source "${source.name}"${what}?\n\nThis clears the chat and resets the chat settings.`
    );
    if (!ok) return;
    say("sources-status", `Removing "${source.name}"…`);
    let result;
    try {
      const query = deleteIndex ? "?delete_index=true" : "";
      result = await api("DELETE", `/datasources/${encodeURIComponent(source.name)}${query}`);
    } catch (error) {
      say("sources-status", error.message, true);
      return;
    }
    if (!result.ok) {
      say("sources-status", errorText(result), true);
      return;
    }
    startSession(null);
    say("sources-status", `Removed "${source.name}". The chat was cleared.`);
    await loadSources();
  }

  // ------------------------------------------------------------------ ingestion progress

  function stopPolling() {
    window.clearTimeout(state.poll.timer);
    state.poll = { timer: 0, name: "" };
  }

  function showDetails(name) {
    stopPolling();
    state.poll.name = name;
    $("source-details").hidden = false;
    $("details-title").textContent = `Data source "${name}"`;
    refreshDetails(name);
  }

  async function refreshDetails(name) {
    let result;
    try {
      result = await api("GET", `/datasources/${encodeURIComponent(name)}`);
    } catch (error) {
      if (state.poll.name !== name) return;
      say("progress-text", error.message, true);
      state.poll.timer = window.setTimeout(() => refreshDetails(name), POLL_MS * 2);
      return;
    }
    if (state.poll.name !== name) return; // another source was chosen meanwhile
    if (!result.ok) {
      say("progress-text", errorText(result), true);
      if (result.status === 404) loadSources();
      return;
    }
    renderDetails(result.body);
    if (result.body.state === "ingesting") {
      state.poll.timer = window.setTimeout(() => refreshDetails(name), POLL_MS);
    }
  }

  function renderDetails(source) {
    const run = source.last_ingestion || null;
    const progress = $("ingest-progress");
    const titles = { ingesting: "Ingestion in progress", ready: "Ready", failed: "Ingestion failed" };
    $("details-title").textContent = `${titles[source.state] || source.state}: "${source.name}"`;
    $("source-details").dataset.state = source.state;

    const ingested = source.kind !== "search_index";
    $("progress-block").hidden = !ingested;
    if (ingested) {
      const counting = run && (run.phase === "ingesting" || run.phase === "planning") && run.total > 0;
      if (source.state === "ingesting" && !counting) {
        progress.removeAttribute("value"); // indeterminate until the run has counted its images
        say("progress-text", "Ingestion in progress: reading the metadata files…");
      } else if (source.state === "ingesting") {
        progress.max = run.total;
        progress.value = run.done;
        say("progress-text", `Ingestion in progress: ${run.done} of ${run.total} images processed.`);
      } else if (run) {
        progress.max = Math.max(run.total, 1);
        progress.value = Math.max(run.total, 1);
        const ended = source.state === "failed" ? "Ingestion failed" : "Ingestion done";
        say("progress-text", `${ended}: ${run.done} of ${run.total} images processed.`, source.state === "failed");
      } else {
        progress.max = 1;
        progress.value = 0;
        say("progress-text", "Nothing ingested yet.");
      }
    }

    const facts = [
      ["Kind", KIND_LABELS[source.kind] || source.kind],
      ["Index", source.index],
    ];
    if (source.container) facts.push(["Container", source.container]);
    if (source.kind === "search_index" && source.fields_mapping) {
      const mapping = Object.entries(source.fields_mapping)
        .map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(", ") : value}`)
        .join("; ");
      facts.push(["Field mapping", mapping || "defaults"]);
    }
    if (source.state === "failed" && source.reason) facts.push(["Reason", source.reason]);
    if (run) {
      const counts = Object.entries(run.byStatus || {}).filter(([, count]) => count > 0);
      for (const [status, count] of counts) facts.push([`Images ${status}`, String(count)]);
      if (!counts.length) facts.push(["Images", "none in the last ingestion"]);
      if (run.deleted) facts.push(["Documents deleted", String(run.deleted)]);
      if (run.error && run.error.message) facts.push(["Error", run.error.message]);
      facts.push(["Last ingestion", `${run.id} (${run.phase})`]);
    }
    const list = $("source-facts");
    list.replaceChildren();
    for (const [term, value] of facts) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }

    const reportLine = $("report-line");
    reportLine.hidden = !(run && run.report);
    if (run && run.report) {
      $("report-link").href = new URL(run.report, apiBase() + "/").href;
    }
  }

  // A link cannot send the function key: with a key, the report is fetched and shown as a file.
  async function openReport(event) {
    if (!session.getItem(STORE_KEY)) return; // a plain link works (locally, or anonymous)
    event.preventDefault();
    const url = $("report-link").href;
    const opened = window.open("", "_blank");
    try {
      const response = await fetch(url, { headers: requestHeaders() });
      const blob = new Blob([await response.text()], { type: "application/json" });
      const target = URL.createObjectURL(blob);
      if (opened) opened.location.href = target;
      else window.location.assign(target);
    } catch (error) {
      if (opened) opened.close();
      say("progress-text", `Cannot open the report: ${error.message}`, true);
    }
  }

  // ------------------------------------------------------------------ add a data source

  function selectedKind() {
    const checked = document.querySelector('input[name="kind"]:checked');
    return checked ? checked.value : "upload";
  }

  function showKindFields() {
    const kind = selectedKind();
    for (const block of document.querySelectorAll("[data-kind]")) {
      block.hidden = block.dataset.kind !== kind;
    }
  }

  function openAddPanel(open) {
    $("add-panel").hidden = !open;
    $("add-open").setAttribute("aria-expanded", String(open));
    if (open) $("add-name").focus();
  }

  function addFiles(files) {
    for (const file of files) {
      const existing = state.addFiles.findIndex((entry) => entry.file.name === file.name);
      if (existing >= 0) removeAddFile(existing); // same name: the newer file wins
      const item = document.createElement("li");
      const url = URL.createObjectURL(file);
      const thumb = document.createElement("img");
      thumb.src = url;
      thumb.alt = "";
      thumb.className = "file-thumb";
      const box = document.createElement("div");
      box.className = "field";
      const id = `describe-${Math.random().toString(36).slice(2)}`;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = `Description of ${file.name}`;
      const textarea = document.createElement("textarea");
      textarea.id = id;
      textarea.rows = 2;
      textarea.required = true;
      textarea.placeholder = "What the picture shows";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      const entry = { file, textarea, url, item };
      remove.addEventListener("click", () => {
        removeAddFile(state.addFiles.indexOf(entry));
        $("add-files").focus();
      });
      box.append(label, textarea);
      item.append(thumb, box, remove);
      $("add-file-list").append(item);
      state.addFiles.push(entry);
    }
  }

  function removeAddFile(index) {
    if (index < 0) return;
    const [entry] = state.addFiles.splice(index, 1);
    URL.revokeObjectURL(entry.url);
    entry.item.remove();
  }

  function resetAddForm() {
    while (state.addFiles.length) removeAddFile(0);
    $("add-form").reset();
    $("add-refused").replaceChildren();
    showKindFields();
  }

  function splitNames(text) {
    return text.split(",").map((s) => s.trim()).filter(Boolean);
  }

  function registration(kind, name) {
    const body = { name, kind };
    if (kind === "upload") {
      const container = $("add-upload-container").value.trim();
      if (container) body.container = container;
    } else if (kind === "blob") {
      body.container = $("add-container").value.trim();
    } else {
      body.index_name = $("add-index").value.trim();
      const mapping = {};
      const vectors = splitNames($("map-vector").value);
      const contents = splitNames($("map-content").value);
      if (vectors.length) mapping.image_vector_fields = vectors;
      if (contents.length) mapping.content_fields = contents;
      for (const [key, id] of [["title_field", "map-title"], ["url_field", "map-url"], ["filepath_field", "map-filepath"]]) {
        const value = $(id).value.trim();
        if (value) mapping[key] = value;
      }
      if (Object.keys(mapping).length) body.fields_mapping = mapping;
    }
    return body;
  }

  function refuse(message, inputId) {
    say("add-status", message, true);
    if (inputId && $(inputId)) {
      $(inputId).setAttribute("aria-invalid", "true");
      $(inputId).focus();
    }
  }

  function refuseResult(result, kind) {
    const error = (result.body && result.body.error) || {};
    let input = PARAM_INPUTS[error.param];
    if (error.param === "container") input = kind === "blob" ? "add-container" : "add-upload-container";
    refuse(errorText(result), input);
  }

  function checkAddForm(kind, name) {
    if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){1,125}$/.test(name)) {
      return ["The name takes 2 to 126 lowercase letters, digits or single dashes, starting and ending with a letter or digit.", "add-name"];
    }
    if (kind === "upload") {
      if (!state.addFiles.length) return ["Choose one or more images to upload.", "add-files"];
      const missing = state.addFiles.find((entry) => !entry.textarea.value.trim());
      if (missing) return [`Describe ${missing.file.name}: the description is what text questions search.`, missing.textarea.id];
    }
    if (kind === "blob" && !$("add-container").value.trim()) return ["Name the container.", "add-container"];
    if (kind === "search_index" && !$("add-index").value.trim()) return ["Name the index.", "add-index"];
    return null;
  }

  async function submitAddForm(event) {
    event.preventDefault();
    for (const input of $("add-form").querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    $("add-refused").replaceChildren();
    const kind = selectedKind();
    const name = $("add-name").value.trim();
    const problem = checkAddForm(kind, name);
    if (problem) {
      refuse(...problem);
      return;
    }
    const submit = $("add-submit");
    submit.disabled = true;
    try {
      await addSource(kind, name);
    } catch (error) {
      refuse(error.message);
    } finally {
      submit.disabled = false;
    }
  }

  async function addSource(kind, name) {
    say("add-status", `Adding "${name}"…`);
    const created = await api("POST", "/datasources", { json: registration(kind, name) });
    let addedTo = "";
    if (created.status === 409 && kind === "upload") {
      // More files for an upload source that exists: they are added to it.
      const existing = await api("GET", `/datasources/${encodeURIComponent(name)}`);
      if (!existing.ok || existing.body.kind !== "upload") return refuseResult(created, kind);
      addedTo = ` (added to the existing data source "${name}")`;
    } else if (created.status !== 201) {
      return refuseResult(created, kind);
    }
    let count = "";
    if (kind === "upload") {
      const accepted = await uploadFiles(name);
      if (accepted === null) return;
      count = ` with ${accepted === 1 ? "1 image" : accepted + " images"}`;
    }
    await loadSources();
    const source = state.sources.find((s) => s.name === name);
    let message = `Added "${name}"${count}${addedTo}.`;
    const refusedCount = $("add-refused").children.length;
    if (refusedCount) message += ` ${refusedCount} file(s) were not accepted: see below.`;
    if (!refusedCount) {
      resetAddForm();
      say("add-status", "");
      openAddPanel(false);
    }
    if (source && state.current && state.current.name === name) {
      showDetails(name); // more files for the source of this chat: watch their ingestion
    } else if (source && !switchSource(source)) {
      message += " Choose it in the list to chat with it.";
    }
    say(refusedCount ? "add-status" : "sources-status", message);
    if (!refusedCount) $("source-select").focus();
  }

  async function uploadFiles(name) {
    say("add-status", `Uploading ${state.addFiles.length} image(s) to "${name}"…`);
    const form = new FormData();
    const metadata = [];
    for (const entry of state.addFiles) {
      form.append("file", entry.file, entry.file.name);
      metadata.push({ image_blob_path: entry.file.name, description: entry.textarea.value.trim() });
    }
    form.append("metadata", new Blob([JSON.stringify(metadata)], { type: "application/json" }), "metadata.json");
    const result = await api("POST", `/datasources/${encodeURIComponent(name)}/files`, { form });
    const refused = (result.body && result.body.refused) || [];
    for (const item of refused) {
      const li = document.createElement("li");
      li.textContent = `${item.file}: ${item.reason}`;
      $("add-refused").append(li);
    }
    if (result.status !== 202) {
      refuseResult(result, "upload");
      return null;
    }
    // Keep only the refused files in the form, so they can be fixed and sent again.
    const refusedNames = new Set(refused.map((item) => item.file));
    for (let i = state.addFiles.length - 1; i >= 0; i--) {
      if (!refusedNames.has(state.addFiles[i].file.name)) removeAddFile(i);
    }
    return ((result.body && result.body.accepted) || []).length;
  }

  // ------------------------------------------------------------------ settings

  function readSettings() {
    const clamp = (value, low, high, fallback) => {
      const number = Math.round(Number(value));
      return Number.isFinite(number) && value !== "" ? Math.min(high, Math.max(low, number)) : fallback;
    };
    return {
      topN: clamp($("set-top-n").value, 1, 20, DEFAULT_SETTINGS.topN),
      strictness: clamp($("set-strictness").value, 1, 5, DEFAULT_SETTINGS.strictness),
      inScope: $("set-in-scope").checked,
      system: $("set-system").value.trim(),
    };
  }

  function settingsAreDefault() {
    const current = readSettings();
    return Object.keys(DEFAULT_SETTINGS).every((key) => current[key] === DEFAULT_SETTINGS[key]);
  }

  function resetSettings() {
    $("set-top-n").value = String(DEFAULT_SETTINGS.topN);
    $("set-strictness").value = String(DEFAULT_SETTINGS.strictness);
    $("set-in-scope").checked = DEFAULT_SETTINGS.inScope;
    $("set-system").value = DEFAULT_SETTINGS.system;
  }

  // ------------------------------------------------------------------ images to ask with

  function isImage(file) {
    return /^image\//.test(file.type) || IMAGE_NAME.test(file.name || "");
  }

  function attach(file) {
    if (!file) return;
    if (!isImage(file)) {
      say("chat-status", `${file.name || "That file"} is not an image (JPEG, PNG, GIF, BMP or TIFF).`, true);
      return;
    }
    if (file.size >= MAX_IMAGE_BYTES) {
      say("chat-status", `${file.name || "The image"} is over 20 MB.`, true);
      return;
    }
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      let dataUrl = String(reader.result);
      if (!/^data:image\//.test(dataUrl)) {
        // No type known to the browser (e.g. some TIFFs): name it from the extension.
        const extension = ((file.name || "").split(".").pop() || "").toLowerCase();
        dataUrl = dataUrl.replace(/^data:[^;,]*/, `data:${IMAGE_TYPES[extension] || "image/jpeg"}`);
      }
      state.attachment = { name: file.name || "pasted image", dataUrl };
      renderAttachment();
      say("chat-status", `Attached ${state.attachment.name}.`);
    });
    reader.addEventListener("error", () => say("chat-status", "Cannot read that file.", true));
    reader.readAsDataURL(file);
  }

  function renderAttachment() {
    const has = Boolean(state.attachment);
    $("attachment").hidden = !has;
    $("attachment-preview").src = has ? state.attachment.dataUrl : "";
    $("attachment-preview").alt = has ? `Image to ask with: ${state.attachment.name}` : "";
    $("attachment-name").textContent = has ? state.attachment.name : "";
  }

  function clearAttachment() {
    state.attachment = null;
    $("composer-image").value = "";
    renderAttachment();
  }

  function firstImage(dataTransfer) {
    if (!dataTransfer) return null;
    for (const file of dataTransfer.files || []) if (isImage(file)) return file;
    for (const item of dataTransfer.items || []) {
      if (item.kind === "file") {
        const file = item.getAsFile();
        if (file && isImage(file)) return file;
      }
    }
    return null;
  }

  // ------------------------------------------------------------------ chat

  function clearChat() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.epoch += 1;
    state.messages = [];
    state.busy = false;
    $("send").disabled = false;
    $("messages").replaceChildren();
    say("chat-status", "");
    clearAttachment();
    $("composer-text").value = "";
  }

  function addMessage(role) {
    const item = document.createElement("li");
    item.className = `message ${role}`;
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    item.append(who);
    $("messages").append(item);
    return item;
  }

  function renderUserMessage(text, image) {
    const item = addMessage("user");
    if (image) {
      const img = document.createElement("img");
      img.src = image.dataUrl;
      img.alt = `Your image: ${image.name}`;
      img.className = "asked-image";
      item.append(img);
    }
    if (text) {
      const p = document.createElement("p");
      p.className = "text";
      p.textContent = text;
      item.append(p);
    }
  }

  function citationTitle(citation, n) {
    return citation.title || citation.filepath || `Document ${n}`;
  }

  function renderAnswerText(element, content, citations, turn) {
    element.replaceChildren();
    const marker = /\[doc(\d+)\]/g;
    let last = 0;
    let match;
    while ((match = marker.exec(content)) !== null) {
      element.append(document.createTextNode(content.slice(last, match.index)));
      const n = Number(match[1]);
      const citation = citations[n - 1];
      if (citation) {
        const link = document.createElement("a");
        link.href = `#cite-${turn}-${n}`;
        link.className = "doc-ref";
        link.textContent = match[0];
        link.setAttribute("aria-label", `Citation ${n}: ${citationTitle(citation, n)}`);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          const target = document.getElementById(`cite-${turn}-${n}`);
          if (!target) return;
          target.classList.remove("flash");
          void target.offsetWidth; // restart the highlight
          target.classList.add("flash");
          target.scrollIntoView({ block: "nearest" });
          const focusable = target.querySelector("a, button");
          if (focusable) focusable.focus();
        });
        element.append(link);
      } else {
        element.append(document.createTextNode(match[0]));
      }
      last = marker.lastIndex;
    }
    element.append(document.createTextNode(content.slice(last)));
  }

  function renderCitations(list, citations, turn) {
    list.replaceChildren();
    list.hidden = citations.length === 0;
    citations.forEach((citation, index) => {
      const n = index + 1;
      const title = citationTitle(citation, n);
      const item = document.createElement("li");
      item.id = `cite-${turn}-${n}`;
      item.className = "citation";
      if (citation.url) {
        const link = document.createElement("a");
        link.href = citation.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.className = "thumb";
        link.title = `Open ${title}`;
        const img = document.createElement("img");
        img.src = citation.url;
        img.alt = `[doc${n}] ${title}`;
        img.loading = "lazy";
        link.append(img);
        link.addEventListener("click", (event) => {
          if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
          event.preventDefault();
          openViewer(citation, n, link);
        });
        item.append(link);
      }
      const caption = document.createElement("p");
      caption.className = "cite-title";
      caption.textContent = `[doc${n}] ${title}`;
      item.append(caption);
      if (citation.content) {
        const content = document.createElement("p");
        content.className = "cite-content";
        content.textContent = citation.content;
        item.append(content);
      }
      list.append(item);
    });
  }

  // Reads server-sent events as they arrive; calls onData with each parsed "data:" payload.
  async function readEvents(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const dispatch = (block) => {
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) return false;
      if (data === "[DONE]") return true;
      onData(JSON.parse(data));
      return false;
    };
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let boundary;
      while ((boundary = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
        if (dispatch(block)) {
          reader.cancel().catch(() => {});
          return;
        }
      }
      if (done) {
        if (buffer.trim()) dispatch(buffer);
        return;
      }
    }
  }

  function chatRequest(history) {
    const settings = readSettings();
    const parameters = {
      index_name: state.current.index,
      top_n_documents: settings.topN,
      strictness: settings.strictness,
      in_scope: settings.inScope,
    };
    if (settings.system) parameters.role_information = settings.system;
    return {
      messages: history,
      stream: true,
      data_sources: [{ type: "azure_search", parameters }],
    };
  }

  async function send(event) {
    event.preventDefault();
    if (state.busy) return;
    if (!state.current) {
      say("chat-status", "Choose or add a data source first.", true);
      $("source-select").focus();
      return;
    }
    const text = $("composer-text").value.trim();
    const image = state.attachment;
    if (!text && !image) {
      say("chat-status", "Type a question, attach an image, or both.", true);
      $("composer-text").focus();
      return;
    }
    const content = [];
    if (text) content.push({ type: "text", text });
    if (image) content.push({ type: "image_url", image_url: { url: image.dataUrl } });
    const question = { role: "user", content };
    const history = state.messages.concat([question]);
    renderUserMessage(text, image);
    $("composer-text").value = "";
    clearAttachment();

    const epoch = state.epoch;
    const turn = ++state.turn;
    const item = addMessage("assistant");
    item.setAttribute("aria-busy", "true");
    const answer = document.createElement("p");
    answer.className = "text";
    const citationList = document.createElement("ol");
    citationList.className = "citations";
    citationList.setAttribute("aria-label", "Citations");
    citationList.hidden = true;
    item.append(answer, citationList);

    state.busy = true;
    $("send").disabled = true;
    say("chat-status", "Answering…");
    const controller = new AbortController();
    state.controller = controller;
    let reply = "";
    let citations = [];
    try {
      const response = await fetch(apiBase() + "/chat/completions", {
        method: "POST",
        headers: requestHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(chatRequest(history)),
        signal: controller.signal,
      });
      if (!response.ok) {
        const bodyText = await response.text();
        let body = null;
        try {
          body = JSON.parse(bodyText);
        } catch (_) {
          body = null;
        }
        throw new ApiError(errorText({ status: response.status, body, text: bodyText }));
      }
      const onChunk = (chunk) => {
        if (epoch !== state.epoch) return;
        if (chunk.error) throw new ApiError(chunk.error.message || "The answer stopped with an error.");
        const choice = (chunk.choices || [])[0] || {};
        const delta = choice.delta || choice.message || {};
        if (delta.context) {
          citations = delta.context.citations || [];
          renderCitations(citationList, citations, turn);
        }
        if (typeof delta.content === "string" && delta.content) {
          reply += delta.content;
          renderAnswerText(answer, reply, citations, turn);
        }
      };
      if ((response.headers.get("Content-Type") || "").includes("text/event-stream")) {
        await readEvents(response.body, onChunk);
      } else {
        onChunk(await response.json()); // a server that does not stream: one whole message
      }
      if (epoch !== state.epoch) return;
      renderAnswerText(answer, reply, citations, turn);
      state.messages = history.concat([{ role: "assistant", content: reply }]);
      say("chat-status", citations.length ? `Answered with ${citations.length} citation(s).` : "Answered.");
    } catch (error) {
      if (error.name === "AbortError" || epoch !== state.epoch) return;
      answer.textContent = reply;
      const problem = document.createElement("p");
      problem.className = "error";
      problem.textContent = error instanceof ApiError ? error.message : `The answer failed: ${error.message}`;
      item.append(problem);
      say("chat-status", problem.textContent, true);
    } finally {
      item.removeAttribute("aria-busy");
      if (epoch === state.epoch) {
        state.busy = false;
        state.controller = null;
        $("send").disabled = false;
      }
    }
  }

  // ------------------------------------------------------------------ image viewer

  let viewerOpener = null;

  function openViewer(citation, n, opener) {
    const title = citationTitle(citation, n);
    viewerOpener = opener;
    $("viewer-title").textContent = `[doc${n}] ${title}`;
    $("viewer-image").src = citation.url;
    $("viewer-image").alt = title;
    $("viewer-content").textContent = citation.content || "";
    $("viewer-open").href = citation.url;
    $("viewer").showModal();
    $("viewer-close").focus();
  }

  function closeViewer() {
    $("viewer").close();
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    $("source-select").addEventListener("change", () => {
      const select = $("source-select");
      const next = state.sources.find((s) => s.name === select.value) || null;
      if (!switchSource(next)) select.value = state.current ? state.current.name : "";
    });
    $("sources-refresh").addEventListener("click", async () => {
      if (await loadSources()) say("sources-status", "List refreshed.");
      if (state.current) showDetails(state.current.name);
    });
    $("source-remove").addEventListener("click", removeSource);
    $("report-link").addEventListener("click", openReport);

    $("add-open").addEventListener("click", () => openAddPanel($("add-panel").hidden));
    $("add-cancel").addEventListener("click", () => {
      resetAddForm();
      say("add-status", "");
      openAddPanel(false);
      $("add-open").focus();
    });
    for (const radio of document.querySelectorAll('input[name="kind"]')) {
      radio.addEventListener("change", showKindFields);
    }
    $("add-files").addEventListener("change", () => {
      addFiles(Array.from($("add-files").files || []));
      $("add-files").value = ""; // the list holds them; picking again adds more
    });
    $("add-form").addEventListener("submit", submitAddForm);

    $("settings-reset").addEventListener("click", resetSettings);
    $("composer").addEventListener("submit", send);
    $("composer-text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("composer-image").addEventListener("change", () => attach(($("composer-image").files || [])[0]));
    $("attachment-remove").addEventListener("click", () => {
      clearAttachment();
      say("chat-status", "Image removed.");
      $("composer-image").focus();
    });
    $("chat-clear").addEventListener("click", () => {
      clearChat();
      say("chat-status", "Chat cleared.");
    });

    const zone = $("composer");
    zone.addEventListener("dragover", (event) => {
      if (!event.dataTransfer || !Array.from(event.dataTransfer.types || []).includes("Files")) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dragging");
      const file = firstImage(event.dataTransfer);
      if (!file) return;
      event.preventDefault();
      attach(file);
    });
    document.addEventListener("paste", (event) => {
      const file = firstImage(event.clipboardData);
      if (!file) return; // text pastes as usual
      event.preventDefault();
      attach(file);
    });

    $("viewer-close").addEventListener("click", closeViewer);
    $("viewer").addEventListener("click", (event) => {
      if (event.target === $("viewer")) closeViewer(); // a click on the backdrop
    });
    $("viewer").addEventListener("close", () => {
      $("viewer-image").removeAttribute("src");
      if (viewerOpener) viewerOpener.focus();
    });

    const base = $("api-base");
    base.value = apiBase();
    base.addEventListener("change", async () => {
      const value = base.value.trim().replace(/\/+$/, "");
      if (!value || value === defaultApiBase()) session.removeItem(STORE_BASE);
      else session.setItem(STORE_BASE, value);
      base.value = apiBase();
      startSession(null);
      await loadSources();
    });
    const key = $("function-key");
    key.value = session.getItem(STORE_KEY) || "";
    key.addEventListener("input", () => {
      if (key.value) session.setItem(STORE_KEY, key.value);
      else session.removeItem(STORE_KEY);
    });
    $("function-key-forget").addEventListener("click", () => {
      key.value = "";
      session.removeItem(STORE_KEY);
      say("sources-status", "The function key is forgotten.");
    });
  }

  async function start() {
    wire();
    showKindFields();
    resetSettings();
    renderAttachment();
    if (!(await loadSources())) return;
    const wanted = new URLSearchParams(window.location.search).get("source") || session.getItem(STORE_SOURCE);
    const chosen =
      state.sources.find((s) => s.name === wanted) || state.sources.find((s) => !s.builtin) || null;
    if (chosen) startSession(chosen);
    else say("sources-status", "Add a data source to start, or choose the built-in one.");
  }

  document.addEventListener("DOMContentLoaded", start);
})();
