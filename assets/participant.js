// Keeps the "Available VMs" count current. The page works without it.
(function () {
  var el = document.getElementById("free-count");
  if (!el) return;
  function refresh() {
    fetch("/api/unassigned_vms_count", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d && typeof d.count === "number") el.textContent = String(d.count); })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
})();

// The workshop event's countdown and warnings, the idle warning with its "I'm still here"
// button, and the seat page following the seat (a move, an unresponsive VM, a released
// seat, a seat from the queue or newly saved files load the page again; in the queue, the
// place is updated in place), from the live stream of /api/my-vm; where EventSource is
// missing, /api/my-vm is polled. Without script, a reload shows the same.
(function () {
  var bar = document.getElementById("event-bar");
  var seat = document.getElementById("seat");
  var idle = document.getElementById("idle-banner");
  if (!bar && !seat) return;
  var idleRelease = document.getElementById("idle-release");
  var idleForm = document.getElementById("idle-form");
  var releaseAt = null;
  if (idleForm) {
    // Answered in place, so an open desktop stays connected.
    idleForm.addEventListener("submit", function (e) {
      e.preventDefault();
      fetch(idleForm.action, {
        method: "POST",
        credentials: "same-origin",
        redirect: "manual",
        body: new URLSearchParams(new FormData(idleForm)),
      }).then(function () {
        releaseAt = null;
        if (idle) idle.hidden = true;
      }).catch(function () {});
    });
  }
  var title = document.getElementById("event-name");
  var countdown = document.getElementById("event-countdown");
  var warning = document.getElementById("event-warning");
  var event = null;
  var skew = 0; // the allocator's clock minus this browser's

  function clock(seconds) {
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h > 0 ? h + ":" + two(m) : String(m)) + ":" + two(s);
  }

  function number(id, value) {
    var el = document.getElementById(id);
    if (el && typeof value === "number") el.textContent = String(value);
  }

  function idleTick() {
    if (!idle) return;
    idle.hidden = releaseAt === null;
    if (releaseAt === null || !idleRelease) return;
    var left = Math.round((releaseAt - Date.now()) / 1000);
    idleRelease.textContent = left > 0 ? "in " + clock(left) : "now";
  }

  function tick() {
    idleTick();
    if (!event || !countdown) return;
    var now = Date.now() + skew;
    var starts = Date.parse(event.starts_at);
    var ends = Date.parse(event.ends_at);
    if (event.phase === "ended" || event.phase === "stopping" || now >= ends) {
      countdown.textContent = "The workshop has ended.";
    } else if (now < starts) {
      countdown.textContent = "Starts in " + clock(Math.round((starts - now) / 1000));
    } else {
      countdown.textContent = "Time left: " + clock(Math.round((ends - now) / 1000));
    }
  }

  function show(d) {
    if (seat && (d.state !== seat.getAttribute("data-state") ||
                 d.hostname !== seat.getAttribute("data-host") ||
                 d.saved_files !== Number(seat.getAttribute("data-saved-files") || 0))) {
      window.location.reload();
      return;
    }
    if (d.state === "waiting") {
      number("position", d.position);
      number("waiting", d.waiting);
    }
    releaseAt = d.idle ? Date.parse(d.idle.release_at) : null;
    idleTick();
    if (!bar) return;
    event = d.event;
    bar.hidden = !event;
    if (!event) return;
    var serverNow = Date.parse(event.server_now);
    if (!isNaN(serverNow)) skew = serverNow - Date.now();
    bar.setAttribute("data-phase", event.phase);
    if (title) title.textContent = event.name;
    if (warning) {
      warning.hidden = !event.warning;
      warning.textContent = event.warning ? event.warning.text : "";
      bar.setAttribute("data-warning", event.warning ? String(event.warning.minutes) : "");
    }
    tick();
  }

  if (window.EventSource) {
    var source = new EventSource("/api/my-vm/events");
    source.addEventListener("seat", function (e) {
      try { show(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
  } else {
    var poll = function () {
      fetch("/api/my-vm", { cache: "no-store", credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) { if (d) show(d); })
        .catch(function () {});
    };
    poll();
    setInterval(poll, 3000);
  }
  setInterval(tick, 1000);
})();
