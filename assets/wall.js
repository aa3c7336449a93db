// The seat wall's filter and sort, in the page: the tiles come (and are replaced) through
// the live stream; after every swap the current filter and order are applied again. Each
// tile's facts are data attributes of its `.tile-body` (see views/admin/wall.rs).
(function () {
  var wall = document.getElementById("wall");
  if (!wall) return;
  var filter = document.getElementById("wall-filter");
  var status = document.getElementById("wall-status");
  var sort = document.getElementById("wall-sort");
  var shown = document.getElementById("wall-shown");

  function facts(tile) {
    var d = (tile.querySelector(".tile-body") || tile).dataset;
    return {
      name: d.name || "",
      status: d.status || "",
      seated: d.seated === "1",
      unhealthy: d.unhealthy === "1",
      idle: Number(d.idle || -1),
      hand: Number(d.hand || -1),
      text: (d.text || "").toLowerCase()
    };
  }

  // The orders on offer, the default first: [value, label, compare(a, b) of two tiles'
  // facts]; ties go by name. One entry adds an order.
  var SORTS = [
    ["hands", "Raised hands first", function (a, b) { return b.hand - a.hand; }],
    ["unhealthy", "Unhealthy first", function (a, b) { return b.unhealthy - a.unhealthy; }],
    ["idle", "Idle longest", function (a, b) { return b.idle - a.idle; }],
    ["name", "Name", function () { return 0; }]
  ];

  SORTS.forEach(function (s) {
    var option = document.createElement("option");
    option.value = s[0];
    option.textContent = s[1];
    sort.appendChild(option);
  });

  function matches(f) {
    var want = status.value;
    if (want === "unhealthy" && !f.unhealthy) return false;
    if (want === "seated" && !f.seated) return false;
    if (want === "free" && f.seated) return false;
    if (want && ["unhealthy", "seated", "free"].indexOf(want) < 0 && f.status !== want) return false;
    var text = filter.value.trim().toLowerCase();
    return !text || f.text.indexOf(text) >= 0;
  }

  function apply() {
    var chosen = SORTS.filter(function (s) { return s[0] === sort.value; })[0] || SORTS[0];
    var tiles = Array.prototype.slice.call(wall.querySelectorAll(".tile"));
    var listed = tiles.map(function (t) { return { tile: t, facts: facts(t) }; });
    listed.sort(function (a, b) {
      return chosen[2](a.facts, b.facts) || (a.facts.name < b.facts.name ? -1 : a.facts.name > b.facts.name ? 1 : 0);
    });
    var visible = 0;
    listed.forEach(function (l) {
      var show = matches(l.facts);
      l.tile.hidden = !show;
      if (show) visible++;
      wall.appendChild(l.tile);
    });
    shown.textContent = visible + " of " + tiles.length + " VMs";
  }

  filter.addEventListener("input", apply);
  status.addEventListener("change", apply);
  sort.addEventListener("change", apply);
  document.getElementById("wall-controls").addEventListener("submit", function (e) { e.preventDefault(); });
  // htmx swaps tiles (and the whole grid) as the stream sends them.
  document.body.addEventListener("htmx:afterSettle", apply);
  apply();
})();
