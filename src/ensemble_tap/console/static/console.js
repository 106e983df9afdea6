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

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    timeZones(document);
    live();
  });
})();
