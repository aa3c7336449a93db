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
