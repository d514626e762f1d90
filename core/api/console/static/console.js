// vigil console: fetch the server-rendered fragments, swap them in, poll, confirm controls.
// No framework: the server renders and escapes everything; this only moves HTML around.
(function () {
  "use strict";
  var TOKEN_KEY = "vigil.console.token";
  var EVERY_MS = 2000;
  var body = document.body;
  var banner = document.getElementById("banner");
  var live = document.getElementById("live");
  var login = document.getElementById("login");
  var notice = document.getElementById("notice");
  var failures = 0;
  var shown = new WeakMap();  // the last HTML put in each section: unchanged answers are not re-laid out

  // A token given once as ?token= is kept for this tab and removed from the address bar.
  var params = new URLSearchParams(window.location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    var rest = params.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function headers() {
    var h = { "Accept": "text/html" };
    if (token()) { h["Authorization"] = "Bearer " + token(); }
    return h;
  }

  function connectionLost() {
    failures += 1;
    banner.hidden = false;
    live.textContent = "offline";
    live.className = "live off";
  }
  function connectionOk() {
    if (failures > 0 || !banner.hidden) { banner.hidden = true; }
    failures = 0;
    live.textContent = "live · " + new Date().toISOString().slice(11, 19) + " UTC";
    live.className = "live on";
  }

  function filterQuery(section) {
    var formId = section.getAttribute("data-filters");
    if (!formId) { return ""; }
    var form = document.getElementById(formId);
    var q = new URLSearchParams();
    new FormData(form).forEach(function (value, key) { if (value) { q.set(key, value); } });
    var s = q.toString();
    return s ? "?" + s : "";
  }

  function refresh(section) {
    var url = section.getAttribute("data-src") + filterQuery(section);
    return fetch(url, { headers: headers(), cache: "no-store" }).then(function (response) {
      if (response.status === 401) {
        login.hidden = false;
        connectionOk();
        return response.text().then(function (html) { section.innerHTML = html; });
      }
      if (response.status >= 500) { throw new Error("HTTP " + response.status); }
      connectionOk();
      return response.text().then(function (html) {
        if (shown.get(section) !== html) {
          shown.set(section, html);
          section.innerHTML = html;
        }
      });
    }).catch(function () { connectionLost(); });
  }

  var sections = Array.prototype.slice.call(document.querySelectorAll("section[data-src]"));
  function schedule(section) {
    var every = parseInt(section.getAttribute("data-every") || "", 10) || EVERY_MS;
    refresh(section).then(function () {
      // back off while the API is away, never beyond ten seconds
      var wait = failures ? Math.min(10000, every * (1 + failures)) : every;
      window.setTimeout(function () { schedule(section); }, wait);
    });
  }
  function refreshAll() { sections.forEach(refresh); }
  sections.forEach(function (section) {
    if (section.getAttribute("data-loaded") === "true") {
      // rendered with the page itself: the first poll comes after one interval
      connectionOk();
      window.setTimeout(function () { schedule(section); }, EVERY_MS);
    } else {
      schedule(section);
    }
  });

  var filters = document.getElementById("filters");
  if (filters) { filters.addEventListener("change", refreshAll); }

  login.addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value);
    login.hidden = true;
    refreshAll();
  });
  if (body.getAttribute("data-token-required") === "true" && !token()) { login.hidden = false; }

  // Controls: every action is confirmed in a dialog, then posted with the token.
  var dialog = document.getElementById("confirm");
  var pending = null;
  var ENDPOINTS = {
    "halt": function () { return "/halt"; },
    "resume": function () { return "/resume"; },
    "close-all": function () { return "/close-all"; },
    "close": function (button) { return "/positions/" + button.getAttribute("data-position") + "/close"; }
  };

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button[data-action]") : null;
    if (!button || !ENDPOINTS[button.getAttribute("data-action")]) { return; }
    pending = button;
    document.getElementById("confirm-text").textContent = button.getAttribute("data-confirm");
    var wantsReason = button.hasAttribute("data-reason");
    document.getElementById("reason-label").hidden = !wantsReason;
    document.getElementById("confirm-reason").value = "";
    dialog.showModal();
  });

  dialog.addEventListener("close", function () {
    var button = pending;
    pending = null;
    if (!button || dialog.returnValue !== "ok") { return; }
    var action = button.getAttribute("data-action");
    var payload = {};
    var reason = document.getElementById("confirm-reason").value.trim();
    if (action === "halt") { payload.reason = reason || "halted from the console"; }
    var h = headers();
    h["Content-Type"] = "application/json";
    h["Accept"] = "application/json";
    fetch(ENDPOINTS[action](button), { method: "POST", headers: h, body: JSON.stringify(payload) })
      .then(function (response) {
        return response.text().then(function (text) {
          notice.textContent = (response.ok ? "Done: " : "Refused (" + response.status + "): ") +
            action + " " + text.slice(0, 300);
          notice.className = "notice " + (response.ok ? "good" : "bad");
          refreshAll();
        });
      })
      .catch(function () {
        notice.textContent = "Not sent: the API did not answer.";
        notice.className = "notice bad";
      });
  });
})();
