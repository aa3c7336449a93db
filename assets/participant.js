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
// seat released, files saved), the page is loaded again. Without script, a reload does the same.
(function () {
  var seat = document.getElementById("seat");
  if (!seat) return;
  var state = seat.getAttribute("data-state");
  var host = seat.getAttribute("data-host");
  var saved = Number(seat.getAttribute("data-saved-files") || 0);
  function check() {
    fetch("/api/my-vm", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d && (d.state !== state || d.hostname !== host || d.saved_files !== saved)) {
          window.location.reload();
        }
      })
      .catch(function () {});
  }
  setInterval(check, 3000);
})();
