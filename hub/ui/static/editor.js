// hub's template editor: the list page and the editor page. Plain JS, no
// dependencies; everything goes through the /v1/templates API with the
// session cookie, and writes carry the page's CSRF token (X-CSRF-Token).
"use strict";

(function () {
  const PARTS = { email: ["subject", "text", "html"], sms: ["body"], alert: ["title", "body"] };
  const CHANNELS = ["email", "sms", "alert"];
  // The channel a test-send of a variant goes through: alert targets (slack,
  // webhook, apprise) all render "alert"; slack is always registered. Preview
  // takes "alert" itself.
  const SENT_BY = { alert: "slack" };
  const PREVIEW_DELAY_MS = 300;
  const $ = (id) => document.getElementById(id);

  // ---- HTTP ---------------------------------------------------------------

  const { api, problem } = window.hubApi;

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // ---- Highlighting: {{ }}, {% %}, {# #} and HTML tags ----------------------

  const JINJA = { "{": ["}}", "t-expr"], "%": ["%}", "t-stmt"], "#": ["#}", "t-comment"] };

  // The Jinja token starting at i: [end, class]; an unclosed one runs to the end of its line.
  function jinjaToken(src, i) {
    const [close, cls] = JINJA[src[i + 1]];
    const end = src.indexOf(close, i + 2);
    let lineEnd = src.indexOf("\n", i);
    if (lineEnd < 0) lineEnd = src.length;
    // An expression closed only on a later line is most likely an unclosed one.
    if (end >= 0 && (src[i + 1] !== "{" || end < lineEnd)) return [end + close.length, cls];
    return [lineEnd, cls + " t-unclosed"];
  }

  function highlightJinja(src) {
    let out = "";
    let i = 0;
    while (i < src.length) {
      const next = src.slice(i).search(/\{[{%#]/);
      if (next < 0) {
        out += escapeHtml(src.slice(i));
        break;
      }
      out += escapeHtml(src.slice(i, i + next));
      i += next;
      const [end, cls] = jinjaToken(src, i);
      out += '<span class="' + cls + '">' + escapeHtml(src.slice(i, end)) + "</span>";
      i = end;
    }
    return out;
  }

  function highlight(src) {
    let out = "";
    let i = 0;
    while (i < src.length) {
      const next = src.slice(i).search(/\{[{%#]|<[A-Za-z/!]/);
      if (next < 0) {
        out += escapeHtml(src.slice(i));
        break;
      }
      out += escapeHtml(src.slice(i, i + next));
      i += next;
      if (src[i] === "{") {
        const [end, cls] = jinjaToken(src, i);
        out += '<span class="' + cls + '">' + escapeHtml(src.slice(i, end)) + "</span>";
        i = end;
      } else {
        let end = src.indexOf(">", i);
        end = end < 0 ? src.length : end + 1;
        out += '<span class="t-tag">' + highlightJinja(src.slice(i, end)) + "</span>";
        i = end;
      }
    }
    // A final newline needs a character after it, or the <pre> is a line short.
    return out + "\n ";
  }

  // ---- The list page ------------------------------------------------------

  async function loadList() {
    const list = document.querySelector('[data-testid="template-list"]');
    const status = $("list-status");
    const items = [];
    let cursor = null;
    do {
      const query = "?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const result = await api("GET", "/v1/templates" + query);
      if (!result.ok) {
        status.textContent = "Could not list templates: " + problem(result);
        return;
      }
      items.push(...result.data.items);
      cursor = result.data.next_cursor;
    } while (cursor);
    items.sort((a, b) => a.name.localeCompare(b.name));
    for (const item of items) {
      const meta = ["v" + item.version, (item.variants || []).join(", ")];
      if (item.locales && item.locales.length) meta.push("locales: " + item.locales.join(", "));
      list.append(
        el(
          "li",
          { "data-testid": "template-item", "data-name": item.name },
          el("a", { href: "/ui/templates/" + encodeURIComponent(item.name) }, item.name),
          el("span", { class: "meta" }, meta.filter(Boolean).join(" · ")),
        ),
      );
    }
    status.textContent = items.length ? items.length + " templates" : "No templates yet.";
  }

  // ---- The editor page ----------------------------------------------------

  const S = {
    path: "",             // /v1/templates/<name, URL-escaped>
    active: null,         // the active version's number
    variants: {},         // channel -> part -> text (unsaved edits included)
    locales: {},          // locale -> channel -> part -> text
    loadedVariants: [],   // channels the saved version has
    channel: "email",
    locale: "",
    part: "subject",
    errors: [],           // from the last preview or save: {variant, part, locale, line, column, message}
    warnings: [],
    dirty: false,
    previewTimer: null,
    previewSeq: 0,
    sampleData: "",
    previewing: null,     // the saved version the preview shows, or null for the edits
  };

  function partsOf(channel) {
    const known = PARTS[channel] || [];
    const variant = S.variants[channel] || {};
    return known.concat(Object.keys(variant).filter((part) => !known.includes(part)));
  }

  // The variant the editor shows: the locale's own, else its fallback (fr-CA -> fr -> default).
  function shownVariant() {
    if (S.locale) {
      const chain = [S.locale];
      if (S.locale.includes("-")) chain.push(S.locale.split("-")[0]);
      for (const locale of chain) {
        const variant = (S.locales[locale] || {})[S.channel];
        if (variant) return { variant, from: locale };
      }
    }
    return { variant: S.variants[S.channel] || null, from: "" };
  }

  function currentText() {
    const { variant } = shownVariant();
    return (variant && variant[S.part]) || "";
  }

  // A part set to null is removed on save (the API drops parts sent as null); typing restores it.
  function isRemoved(part) {
    const { variant } = shownVariant();
    return Boolean(variant) && variant[part] === null;
  }

  function canRemove(part) {
    const { variant } = shownVariant();
    return Boolean(variant) && typeof variant[part] === "string";
  }

  function setCurrentText(text) {
    let target;
    if (S.locale) {
      const own = (S.locales[S.locale] = S.locales[S.locale] || {});
      if (!own[S.channel]) {
        // Locales fall back a whole variant at a time: the first edit copies the fallback.
        own[S.channel] = Object.assign({}, shownVariant().variant || {});
      }
      target = own[S.channel];
    } else {
      target = S.variants[S.channel] = S.variants[S.channel] || {};
    }
    target[S.part] = text;
    S.dirty = true;
  }

  function errorsHere() {
    return S.errors.filter(
      (e) => e.variant === S.channel && e.part === S.part && (e.locale || "") === S.locale,
    );
  }

  function renderCode() {
    const source = $("source");
    const text = source.value;
    $("highlight").innerHTML = highlight(text);
    const here = errorsHere();
    const byLine = new Map();
    for (const error of here) {
      if (!error.line) continue;
      if (!byLine.has(error.line)) byLine.set(error.line, []);
      byLine.get(error.line).push(error);
    }
    const lines = Math.max(text.split("\n").length, ...byLine.keys());
    const gutter = $("gutter-lines");
    gutter.replaceChildren();
    for (let n = 1; n <= lines; n++) {
      const errors = byLine.get(n);
      const row = el("div", { class: errors ? "ln bad" : "ln", "data-line": n });
      if (errors) {
        const message = errors.map((e) => (e.column ? "col " + e.column + ": " : "") + e.message);
        row.append(
          el("span", {
            class: "marker",
            "data-testid": "error-marker",
            "data-line": n,
            title: "Line " + n + ": " + message.join("\n"),
            role: "img",
            "aria-label": "Error on line " + n,
          }),
        );
      }
      row.append(String(n));
      gutter.append(row);
    }
    syncScroll();
  }

  function syncScroll() {
    const source = $("source");
    const pre = $("highlight-pre");
    pre.scrollTop = source.scrollTop;
    pre.scrollLeft = source.scrollLeft;
    $("gutter-lines").style.transform = "translateY(" + -source.scrollTop + "px)";
  }

  function renderTabs() {
    const tabs = $("parts");
    tabs.replaceChildren();
    const parts = partsOf(S.channel);
    if (!parts.includes(S.part)) S.part = parts[0];
    const withErrors = new Set(
      S.errors
        .filter((e) => e.variant === S.channel && (e.locale || "") === S.locale)
        .map((e) => e.part),
    );
    for (const part of parts) {
      const selected = part === S.part;
      tabs.append(
        el(
          "button",
          {
            type: "button",
            role: "tab",
            id: "tab-" + part,
            "data-testid": "part-" + part,
            "data-part": part,
            "aria-selected": selected ? "true" : "false",
            "aria-controls": "source",
            tabindex: selected ? "0" : "-1",
            class: [withErrors.has(part) ? "has-error" : "", isRemoved(part) ? "removed" : ""].join(" ").trim() || null,
            onclick: () => selectPart(part),
          },
          isRemoved(part) ? el("span", { class: "visually-hidden" }, " (removed)") : null,
          part,
        ),
      );
    }
    $("source").setAttribute("aria-labelledby", "tab-" + S.part);
    const remove = $("remove-part");
    remove.hidden = !canRemove(S.part) || !$("remove-confirm").hidden;
    remove.setAttribute("aria-label", "Remove the " + S.part + " part");
  }

  function renderEditor() {
    $("remove-confirm").hidden = true;
    renderTabs();
    const { variant, from } = shownVariant();
    const note = $("variant-note");
    if (S.locale && from !== S.locale) {
      const fallback = from || "the default";
      note.textContent = variant
        ? S.locale + " has no " + S.channel + " variant: showing " + fallback + "'s; typing creates one."
        : "No " + S.channel + " variant yet: typing creates one.";
    } else {
      note.textContent = variant ? "" : "No " + S.channel + " variant yet: typing creates one.";
    }
    if (isRemoved(S.part)) {
      note.textContent = "The " + S.part + " part is removed: saving drops it, typing restores it.";
    }
    const source = $("source");
    source.value = currentText();
    renderCode();
  }

  function renderErrors() {
    const box = $("errors");
    box.replaceChildren();
    if (!S.errors.length && !S.warnings.length) return;
    const list = el("ul");
    const item = (entry, kind) => {
      const where = [entry.variant, entry.part, entry.locale].filter(Boolean).join(" · ");
      const at = entry.line ? " line " + entry.line + (entry.column ? ":" + entry.column : "") : "";
      const label = (kind === "warning" ? "Warning: " : "") + where + at + " — " + entry.message;
      const go = el("button", { type: "button", onclick: () => goTo(entry) }, label);
      list.append(el("li", { class: kind, "data-testid": kind === "warning" ? "warning" : "error" }, go));
    };
    S.errors.forEach((e) => item(e, "error"));
    S.warnings.forEach((w) => item(w, "warning"));
    box.append(list);
  }

  // Show an error's part and put the cursor on its line.
  function goTo(entry) {
    if (entry.variant && entry.variant !== S.channel && CHANNELS.concat(Object.keys(S.variants)).includes(entry.variant)) {
      S.channel = entry.variant;
      $("channel").value = S.channel;
    }
    if ((entry.locale || "") !== S.locale) {
      S.locale = entry.locale || "";
      renderLocales();
    }
    if (entry.part) S.part = entry.part;
    renderEditor();
    const source = $("source");
    source.focus();
    if (entry.line) {
      const lines = source.value.split("\n");
      let offset = 0;
      for (let n = 1; n < entry.line && n <= lines.length; n++) offset += lines[n - 1].length + 1;
      offset += Math.max((entry.column || 1) - 1, 0);
      source.setSelectionRange(offset, offset);
    }
  }

  function selectPart(part) {
    S.part = part;
    renderEditor();
    $("tab-" + part).focus();
  }

  function renderChannels() {
    const select = $("channel");
    select.replaceChildren();
    const channels = CHANNELS.concat(Object.keys(S.variants).filter((c) => !CHANNELS.includes(c)));
    for (const channel of channels) {
      const has = S.variants[channel] ? "" : " (none yet)";
      select.append(el("option", { value: channel }, channel + has));
    }
    select.value = S.channel;
  }

  function renderLocales() {
    const select = $("locale");
    select.replaceChildren(el("option", { value: "" }, "default"));
    for (const locale of Object.keys(S.locales).sort()) {
      select.append(el("option", { value: locale }, locale));
    }
    if (S.locale && !S.locales[S.locale]) select.append(el("option", { value: S.locale }, S.locale));
    select.value = S.locale;
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = "status" + (kind ? " " + kind : "");
  }

  // ---- Preview ------------------------------------------------------------

  function schedulePreview() {
    clearTimeout(S.previewTimer);
    $("preview-state").textContent = "(updating…)";
    document.querySelector(".preview").classList.add("stale");
    S.previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  // The sample data, or undefined for the event type's example; null when it is not valid JSON.
  function sampleData() {
    const text = $("sample-data").value.trim();
    $("sample-error").textContent = "";
    if (!text) return undefined;
    try {
      const data = JSON.parse(text);
      if (data === null || typeof data !== "object" || Array.isArray(data)) {
        $("sample-error").textContent = "Sample data must be a JSON object.";
        return null;
      }
      return data;
    } catch (error) {
      $("sample-error").textContent = "Sample data is not valid JSON: " + error.message;
      return null;
    }
  }

  function draft() {
    // A channel the saved version lacks is sent only once something was written in it.
    const variants = {};
    for (const [channel, parts] of Object.entries(S.variants)) {
      const written = Object.values(parts).some((text) => text);
      if (S.loadedVariants.includes(channel) || written) variants[channel] = parts;
    }
    return { variants, locales: S.locales };
  }

  async function preview() {
    if (S.channel === "files") {
      $("preview-state").textContent = "(layouts and partials preview through the templates that use them)";
      return;
    }
    const data = sampleData();
    if (data === null) {
      $("preview-state").textContent = "(fix the sample data)";
      return;
    }
    const seq = ++S.previewSeq;
    showPreviewing(null);
    const body = Object.assign({ channel: S.channel }, draft());
    if (S.locale) body.locale = S.locale;
    if (data !== undefined) body.data = data;
    const result = await api("POST", S.path + "/preview", body);
    if (seq !== S.previewSeq) return; // a newer preview is on its way
    document.querySelector(".preview").classList.remove("stale");
    if (result.ok) {
      $("preview-state").textContent = "";
      showRendered(result.data);
      S.errors = [];
    } else if (result.status === 422) {
      $("preview-state").textContent = "(errors: the preview shows the last good render)";
      S.errors = errorList(result);
    } else {
      $("preview-state").textContent = "(preview failed: " + problem(result) + ")";
    }
    renderTabs();
    renderCode();
    renderErrors();
  }

  function showRendered(r) {
    // SMS and alerts have neither subject nor HTML: their boxes are hidden, not empty.
    $("preview-subject-row").hidden = r.subject === null || r.subject === undefined;
    $("preview-subject").textContent = r.subject || "";
    $("preview-html").hidden = !r.html;
    $("preview-html").srcdoc = r.html || "";
    $("preview-text").textContent = r.text || "";
    const details = Object.entries(r.details || {}).map(([k, v]) => k + ": " + v);
    $("preview-details").textContent = details.join(" · ");
  }

  // ---- Removing a part: an inline confirmation, not window.confirm ----------

  function askRemovePart() {
    $("remove-question").textContent = "Remove the " + S.part + " part on save?";
    $("remove-confirm").hidden = false;
    $("remove-part").hidden = true;
    $("remove-part-confirm").focus();
  }

  function closeRemovePart() {
    $("remove-confirm").hidden = true;
    renderTabs();
    if ($("remove-part").hidden) $("tab-" + S.part).focus();
    else $("remove-part").focus();
  }

  function removePart() {
    const part = S.part;
    setCurrentText(null);
    $("remove-confirm").hidden = true;
    renderEditor();
    setStatus("Removed the " + part + " part: save to keep the change.", "");
    schedulePreview();
    $("tab-" + part).focus();
  }

  // A 422's errors at their lines; other problems (e.g. an unknown channel) without a line.
  function errorList(result) {
    if (result.data && Array.isArray(result.data.errors) && result.data.errors.length) {
      return result.data.errors;
    }
    return [{ variant: S.channel, part: null, locale: S.locale, line: null, message: problem(result) }];
  }

  // ---- Save, versions, diff, rollback, test-send ---------------------------

  // Save the edits as a new version: the active one, or with asDraft a draft that
  // stays inactive until published (the editor then keeps showing the draft's text).
  async function save(asDraft) {
    if (S.channel === "files" && !Object.keys(S.variants.files || {}).length) return;
    const buttons = [$("save"), $("save-draft")];
    buttons.forEach((b) => (b.disabled = true));
    try {
      const body = Object.assign(draft(), { comment: $("comment").value });
      if (asDraft) body.draft = true;
      const result = await api("PUT", S.path, body);
      if (result.ok) {
        S.errors = [];
        S.warnings = result.data.warnings || [];
        S.dirty = false;
        $("comment").value = "";
        if (asDraft) {
          const active = S.active ? "v" + S.active + " stays active" : "nothing is active yet";
          setStatus("Saved draft version " + result.data.version + " (" + active + ").", "ok");
        } else {
          setStatus("Saved version " + result.data.version + ".", "ok");
          await loadTemplate();
        }
        await loadVersions();
      } else if (result.status === 422) {
        S.errors = errorList(result);
        setStatus("Not saved: fix the errors below.", "bad");
      } else {
        setStatus("Not saved: " + problem(result), "bad");
      }
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      renderTabs();
      renderCode();
      renderErrors();
    }
  }

  async function loadTemplate() {
    const result = await api("GET", S.path);
    if (result.status === 404) {
      // A new template: saving creates it.
      S.active = null;
      $("active-version").textContent = "new";
      S.loadedVariants = [];
      return;
    }
    if (!result.ok) {
      setStatus("Could not load the template: " + problem(result), "bad");
      return;
    }
    const t = result.data;
    S.active = t.version;
    S.variants = t.variants || {};
    S.locales = t.locales || {};
    S.loadedVariants = Object.keys(S.variants);
    if (!S.variants[S.channel]) S.channel = S.loadedVariants[0] || "email";
    if (S.locale && !S.locales[S.locale]) S.locale = "";
    $("active-version").textContent = "active: v" + t.version;
    const example = t.sample_data || t.example;
    if (example && !$("sample-data").value.trim()) {
      $("sample-data").value = JSON.stringify(example, null, 2);
    }
    renderChannels();
    renderLocales();
    renderEditor();
  }

  async function loadVersions() {
    const list = $("versions");
    const items = [];
    let cursor = null;
    do {
      const query = "?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const result = await api("GET", S.path + "/versions" + query);
      if (!result.ok) {
        list.replaceChildren(el("li", {}, "No versions: " + problem(result)));
        return;
      }
      items.push(...result.data.items);
      cursor = result.data.next_cursor;
    } while (cursor);
    items.sort((a, b) => b.version - a.version);
    list.replaceChildren();
    for (const v of items) {
      const active = v.active || v.version === S.active;
      const flags = [active ? "active" : "", v.source || ""].filter(Boolean);
      const classes = [active ? "active" : "", v.draft ? "draft" : "", v.version === S.previewing ? "previewed" : ""];
      let change = null;
      if (v.draft && !active) {
        change = el(
          "button",
          { type: "button", "data-testid": "publish", onclick: () => publish(v.version) },
          "Publish v" + v.version,
        );
      } else if (!active) {
        change = el(
          "button",
          { type: "button", "data-testid": "rollback", onclick: () => rollback(v.version) },
          "Roll back to v" + v.version,
        );
      }
      list.append(
        el(
          "li",
          {
            "data-testid": "version-item",
            "data-version": v.version,
            "data-draft": v.draft ? "true" : null,
            class: classes.filter(Boolean).join(" ") || null,
          },
          el("span", { class: "v" }, "v" + v.version),
          v.draft ? el("span", { class: "badge draft", "data-testid": "draft-badge" }, "draft") : null,
          el("span", { class: "comment" }, v.comment || "(no comment)"),
          el("span", { class: "when" }, [v.author, formatTime(v.created_at)].concat(flags).filter(Boolean).join(" · ")),
          el(
            "button",
            {
              type: "button",
              "data-testid": "preview-version",
              "aria-label": "Preview v" + v.version,
              onclick: () => previewVersion(v.version, v.draft),
            },
            "Preview",
          ),
          el("button", { type: "button", "data-testid": "diff-button", onclick: () => showDiff(v.version) }, "Diff"),
          change,
        ),
      );
    }
  }

  // Mark the version the preview shows (null: the edits) in the list.
  function showPreviewing(n) {
    S.previewing = n;
    for (const item of document.querySelectorAll('[data-testid="version-item"]')) {
      item.classList.toggle("previewed", Number(item.dataset.version) === n);
    }
  }

  // Render saved version n (a draft, say) in the preview; the next edit previews the edits again.
  async function previewVersion(n, isDraft) {
    if (S.channel === "files") {
      $("preview-state").textContent = "(layouts and partials preview through the templates that use them)";
      return;
    }
    const data = sampleData();
    if (data === null) {
      $("preview-state").textContent = "(fix the sample data)";
      return;
    }
    clearTimeout(S.previewTimer);
    const seq = ++S.previewSeq;
    const body = { channel: S.channel, version: n };
    if (S.locale) body.locale = S.locale;
    if (data !== undefined) body.data = data;
    $("preview-state").textContent = "(loading v" + n + "…)";
    const result = await api("POST", S.path + "/preview", body);
    if (seq !== S.previewSeq) return;
    document.querySelector(".preview").classList.remove("stale");
    if (!result.ok) {
      $("preview-state").textContent = "(v" + n + " does not render: " + problem(result) + ")";
      return;
    }
    showPreviewing(n);
    showRendered(result.data);
    const what = "saved v" + n + (isDraft ? ", a draft" : "");
    $("preview-state").textContent = "(" + what + "; editing shows your edits again)";
  }

  async function publish(n) {
    const result = await api("POST", S.path + "/publish", { version: n });
    if (!result.ok) {
      setStatus("Publish failed: " + problem(result), "bad");
      return;
    }
    await showNewActive("Published v" + n + ": it is the active version now.");
  }

  // After a publish or a rollback: the active version changed under the editor.
  async function showNewActive(message) {
    S.dirty = false;
    S.errors = [];
    S.warnings = [];
    setStatus(message, "ok");
    await loadTemplate();
    await loadVersions();
    renderErrors();
    schedulePreview();
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  // The diff from version n to the active one (for the active one: from the one before;
  // for a draft newer than the active one: from the active one to the draft).
  async function showDiff(n) {
    let from = n;
    let to = S.active;
    if (n === S.active) {
      from = n - 1;
      to = n;
    } else if (S.active && n > S.active) {
      from = S.active;
      to = n;
    }
    const box = $("diff");
    box.hidden = false;
    $("diff-heading").hidden = false;
    if (from < 1) {
      box.textContent = "v" + n + " is the first version.";
      return;
    }
    const result = await api("GET", S.path + "/diff?from=" + from + "&to=" + to);
    $("diff-heading").textContent = "Diff v" + from + " → v" + to;
    if (!result.ok) {
      box.textContent = "No diff: " + problem(result);
      return;
    }
    box.replaceChildren();
    const text = result.data.diff || "(no changes)";
    for (const line of text.split("\n")) {
      let cls = null;
      if (line.startsWith("+") && !line.startsWith("+++")) cls = "add";
      else if (line.startsWith("-") && !line.startsWith("---")) cls = "del";
      else if (line.startsWith("@@")) cls = "hunk";
      box.append(cls ? el("span", { class: cls }, line) : line + "\n");
    }
    box.focus();
  }

  async function rollback(n) {
    const result = await api("POST", S.path + "/rollback", { version: n });
    if (!result.ok) {
      setStatus("Rollback failed: " + problem(result), "bad");
      return;
    }
    await showNewActive("Rolled back to v" + n + " (saved as v" + result.data.version + ").");
  }

  async function testSend() {
    const to = $("test-to").value.trim();
    const out = $("test-result");
    if (!to) {
      out.textContent = "Enter an address to send the test to.";
      $("test-to").focus();
      return;
    }
    const data = sampleData();
    if (data === null) return;
    const body = { channel: SENT_BY[S.channel] || S.channel, to };
    if (S.locale) body.locale = S.locale;
    if (data !== undefined) body.data = data;
    out.textContent = "Sending…";
    const result = await api("POST", S.path + "/test", body);
    out.textContent = result.ok ? "Sent a test to " + to + "." : "Not sent: " + problem(result);
  }

  function bindEditor() {
    const source = $("source");
    source.addEventListener("input", () => {
      setCurrentText(source.value);
      renderCode();
      schedulePreview();
    });
    source.addEventListener("scroll", syncScroll);
    $("sample-data").addEventListener("input", schedulePreview);
    $("channel").addEventListener("change", (event) => {
      S.channel = event.target.value;
      renderEditor();
      schedulePreview();
    });
    $("locale").addEventListener("change", (event) => {
      S.locale = event.target.value;
      renderEditor();
      schedulePreview();
    });
    $("add-locale").addEventListener("click", () => {
      const locale = $("new-locale").value.trim();
      if (!/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(locale)) {
        setStatus("A locale looks like fr or fr-CA.", "bad");
        return;
      }
      S.locale = locale;
      $("new-locale").value = "";
      renderLocales();
      renderEditor();
      schedulePreview();
    });
    $("parts").addEventListener("keydown", (event) => {
      // Arrow keys move between tabs (WAI-ARIA tabs pattern).
      const parts = partsOf(S.channel);
      const i = parts.indexOf(S.part);
      const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -i, End: parts.length - 1 - i };
      if (!(event.key in moves)) return;
      event.preventDefault();
      selectPart(parts[(i + moves[event.key] + parts.length) % parts.length]);
    });
    $("save").addEventListener("click", () => save(false));
    $("save-draft").addEventListener("click", () => save(true));
    $("remove-part").addEventListener("click", askRemovePart);
    $("remove-part-confirm").addEventListener("click", removePart);
    $("remove-part-cancel").addEventListener("click", closeRemovePart);
    $("remove-confirm").addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      closeRemovePart();
    });
    $("test-send").addEventListener("click", testSend);
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "s") {
        event.preventDefault();
        save(false);
      }
    });
    window.addEventListener("beforeunload", (event) => {
      if (S.dirty) event.preventDefault();
    });
  }

  async function startEditor() {
    S.path = "/v1/templates/" + document.body.dataset.template;
    bindEditor();
    renderChannels();
    renderLocales();
    renderEditor();
    await loadTemplate();
    await loadVersions();
    schedulePreview();
  }

  if (document.querySelector('[data-testid="template-list"]')) loadList();
  if (document.body.dataset.template !== undefined) startEditor();
})();
