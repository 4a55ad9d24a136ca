// dps console: progressive enhancement only. Every page reads and works
// without this file; with it, live tables grow as events arrive
// (server-sent events), dangerous buttons ask first, and keys get a copy
// button. No library, no build step.
"use strict";
(function () {
  // Confirmation dialogs: a button or form with data-confirm asks first.
  document.addEventListener("submit", function (ev) {
    var btn = ev.submitter;
    var msg = (btn && btn.getAttribute("data-confirm")) || ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
    }
  });

  // Copy buttons for revealed keys and codes.
  if (navigator.clipboard) {
    document.querySelectorAll("[data-copy]").forEach(function (el) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "copy ghost";
      b.textContent = "Copy";
      b.setAttribute("aria-label", "Copy to the clipboard");
      b.addEventListener("click", function () {
        navigator.clipboard.writeText(el.textContent.trim()).then(function () {
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = "Copy"; }, 1500);
        });
      });
      el.insertAdjacentElement("afterend", b);
    });
  }

  // Live tables: a tbody with data-stream follows that URL's event
  // stream; each "row" event is a table row (HTML the server rendered
  // and escaped, as the page's own rows), added on top.
  var MAX_ROWS = 500;
  document.querySelectorAll("tbody[data-stream]").forEach(function (body) {
    var url = body.getAttribute("data-stream");
    if (!url || !window.EventSource) {
      return;
    }
    var status = document.querySelector("[data-stream-status]");
    var text = status && status.querySelector(".live-text");
    var say = function (on, words) {
      if (!status) { return; }
      status.classList.toggle("on", on);
      if (text) { text.textContent = words; }
    };
    var src = new EventSource(url);
    src.onopen = function () { say(true, "Live: new entries appear on top."); };
    src.onerror = function () { say(false, "Reconnecting…"); };
    src.addEventListener("row", function (ev) {
      var placeholder = body.querySelector("tr.placeholder");
      if (placeholder) { placeholder.remove(); }
      var tpl = document.createElement("template");
      tpl.innerHTML = ev.data.trim();
      var row = tpl.content.firstElementChild;
      if (!row) { return; }
      row.classList.add("fresh");
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > MAX_ROWS) {
        body.deleteRow(body.rows.length - 1);
      }
    });
    window.addEventListener("pagehide", function () { src.close(); });
  });
})();
