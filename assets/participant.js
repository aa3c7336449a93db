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

// The seat page follows the seat: when its state or VM changes (moved, VM unresponsive,
// seat released, seated from the queue), the page is loaded again; in the queue, the
// place is updated in place. Without script, a reload does the same.
(function () {
  var seat = document.getElementById("seat");
  if (!seat) return;
  var state = seat.getAttribute("data-state");
  var host = seat.getAttribute("data-host");
  function show(id, value) {
    var el = document.getElementById(id);
    if (el && typeof value === "number") el.textContent = String(value);
  }
  function check() {
    fetch("/api/my-vm", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) return;
        if (d.state !== state || d.hostname !== host) {
          window.location.reload();
        } else if (d.state === "waiting") {
          show("position", d.position);
          show("waiting", d.waiting);
        }
      })
      .catch(function () {});
  }
  setInterval(check, 3000);
})();
