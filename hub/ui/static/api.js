// What every page of hub's web UI shares: calling the API with the session
// cookie, writes carrying the page's CSRF token (X-CSRF-Token), and reading
// an error. Loaded before the page's own script, which takes window.hubApi.
"use strict";

window.hubApi = (function () {
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      // The session expired or its key was revoked.
      window.location.assign("/ui/login");
      throw new Error("not logged in");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { status: response.status, ok: response.ok, data };
  }

  function problem(result) {
    const detail = result.data && result.data.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg).join("; ");
    return "HTTP " + result.status;
  }

  return { api, problem };
})();
