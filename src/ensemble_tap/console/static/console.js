// Ensemble Tap console: the little that needs script. Every page works without it.
(function () {
  "use strict";

  // Times: the browser's zone in the text, UTC kept in the title.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      el.textContent = moment.toLocaleString();
      el.title = el.getAttribute("datetime") + " (UTC)";
    });
  }

  // Filters with datetime-local fields are in the browser's zone: say which.
  function timeZones(root) {
    root.querySelectorAll("input[name=tz]").forEach(function (el) {
      el.value = String(new Date().getTimezoneOffset());
    });
  }

  // A page showing work in progress refreshes its [data-live] regions (without script a
  // <noscript> meta refresh reloads it); once the work is done the whole page is taken.
  function live() {
    var every = Number(document.body.getAttribute("data-refresh") || "0");
    if (!every || !document.querySelector("[data-live]")) { return; }
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          var next = new DOMParser().parseFromString(html, "text/html");
          if (!next.body.getAttribute("data-refresh")) {
            var main = document.getElementById("main");
            main.innerHTML = next.getElementById("main").innerHTML;
            document.body.removeAttribute("data-refresh");
            localTimes(main);
            timeZones(main);
            return;
          }
          document.querySelectorAll("[data-live]").forEach(function (region) {
            var fresh = region.id && next.getElementById(region.id);
            if (fresh) { region.innerHTML = fresh.innerHTML; localTimes(region); }
          });
          live();
        })
        .catch(function () { window.setTimeout(live, every * 5000); });
    }, every * 1000);
  }

  function cell(row, text, href) {
    var td = document.createElement("td");
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  // The live tail: the service's server-sent events (relayed by the console with the
  // session's token), one row per CloudEvent, newest first.
  function tail() {
    var table = document.getElementById("tail");
    if (!table || !window.EventSource) { return; }
    var body = table.querySelector("tbody");
    var state = document.getElementById("tail-state");
    var keep = Number(table.getAttribute("data-keep") || "200");
    var source = new EventSource(table.getAttribute("data-stream"));
    source.onopen = function () { state.textContent = "Connected: waiting for events."; };
    source.onerror = function () {
      state.textContent = source.readyState === EventSource.CLOSED
        ? "The stream was refused or ended: reload the page (you may need to sign in again)."
        : "Connection lost: reconnecting…";
    };
    source.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      var parts = String(event.source || "").split("/");
      var row = document.createElement("tr");
      var time = document.createElement("td");
      var stamp = document.createElement("time");
      stamp.setAttribute("datetime", event.time || "");
      stamp.textContent = event.time || "";
      time.appendChild(stamp);
      row.appendChild(time);
      cell(row, (parts[1] || "") + " / " + (parts[2] || ""));
      cell(row, event.type || "");
      cell(row, event.subject || "");
      cell(row, event.id || "", "/console/events/" + encodeURIComponent(event.id || ""));
      cell(row, message.lastEventId || "");
      localTimes(row);
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > keep) { body.deleteRow(body.rows.length - 1); }
      state.textContent = "Connected: " + body.rows.length + " event(s) shown.";
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    timeZones(document);
    live();
    tail();
  });
})();
