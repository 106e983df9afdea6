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

  // Live tail: server-sent events into a list, newest on top, bounded.
  function tail() {
    var list = document.getElementById("tail-list");
    var state = document.getElementById("tail-state");
    if (!list || !window.EventSource) { return; }
    var source = new EventSource(list.getAttribute("data-stream"));
    var limit = Number(list.getAttribute("data-limit") || "200");
    source.onopen = function () { state.textContent = "connected"; };
    source.onerror = function () { state.textContent = "reconnecting…"; };
    source.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      var item = document.createElement("li");
      var when = document.createElement("time");
      when.setAttribute("datetime", event.time || "");
      when.textContent = event.time || "";
      var link = document.createElement("a");
      link.href = "/console/events/" + encodeURIComponent(event.id || "");
      link.textContent = event.id || "";
      var text = document.createElement("span");
      text.textContent = " " + (event.type || "") + " " + (event.subject || "") + " ";
      item.appendChild(when);
      item.appendChild(text);
      item.appendChild(link);
      localTimes(item);
      list.insertBefore(item, list.firstChild);
      while (list.children.length > limit) { list.removeChild(list.lastChild); }
    };
  }

  // Forms that ask before they act (reset checkpoint).
  function confirmations(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    timeZones(document);
    confirmations(document);
    live();
    tail();
  });
})();
