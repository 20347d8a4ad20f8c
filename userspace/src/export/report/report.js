(function () {
  "use strict";

  // The flame graph's script takes Ctrl-F and F3 for its own search on the whole page: they
  // go to the browser's find instead (the graph keeps its Search button).
  window.addEventListener("keydown", function (e) {
    if (e.keyCode === 114 || ((e.ctrlKey || e.metaKey) && e.keyCode === 70)) e.stopImmediatePropagation();
  }, true);

  // Legends: a click hides or shows the series.
  document.querySelectorAll(".sp-legend li").forEach(function (li) {
    li.addEventListener("click", function () {
      var fig = li.closest(".sp-chart");
      var g = fig && fig.querySelector('.sp-series[data-series="' + li.dataset.series + '"]');
      li.classList.toggle("sp-off");
      if (g) g.classList.toggle("sp-off");
    });
  });

  // The spawn tree, coloured by the metric chosen (the same ramp as the page's legend).
  var STOPS = [[0, [255, 250, 220]], [0.25, [254, 217, 118]], [0.5, [253, 141, 60]], [0.75, [227, 26, 28]], [1, [128, 0, 38]]];
  function heat(share) {
    var s = Math.sqrt(Math.min(1, Math.max(0, share || 0)));
    var i = 0;
    while (i < STOPS.length - 2 && STOPS[i + 1][0] <= s) i++;
    var a = STOPS[i], b = STOPS[i + 1], t = (s - a[0]) / (b[0] - a[0]);
    var c = a[1].map(function (v, k) { return Math.round(v + (b[1][k] - v) * t); });
    return { bg: "rgb(" + c.join(",") + ")", dark: s >= 0.6 };
  }
  function group(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function bytes(b) {
    var u = [[1 << 30, "GiB"], [1 << 20, "MiB"], [1024, "KiB"]];
    for (var i = 0; i < u.length; i++) if (b >= u[i][0]) return (b / u[i][0]).toFixed(1) + " " + u[i][1];
    return b + " B";
  }
  var TEXT = {
    cpu: function (n) { return group(n) + " samples"; },
    msgs: function (n) { return group(n) + " msgs"; },
    mem: function (n) { return n > 0 ? bytes(n) : "–"; }
  };
  function colour(metric) {
    var cells = document.querySelectorAll("#sp-tree .sp-tn");
    var max = 0;
    cells.forEach(function (c) { max = Math.max(max, Number(c.dataset[metric]) || 0); });
    cells.forEach(function (c) {
      var v = Number(c.dataset[metric]) || 0, h = heat(max > 0 ? v / max : 0);
      var cell = c.querySelector(".sp-tn-cell");
      cell.style.background = h.bg;
      cell.style.color = h.dark ? "#fff" : "#222";
      c.querySelector(".sp-tn-val").textContent = TEXT[metric](v);
    });
    var top = document.getElementById("sp-tree-max");
    if (top) top.textContent = TEXT[metric](max);
    var low = document.getElementById("sp-tree-min");
    if (low) low.textContent = metric === "mem" ? "0 B" : "0";
  }
  var pick = document.getElementById("sp-tree-metric");
  if (pick) {
    pick.addEventListener("change", function () { colour(pick.value); });
    colour(pick.value);
  }

  // What was drawn, measured in the rendered page, for whoever checks the report.
  function size(el) {
    var r = el.getBoundingClientRect();
    return Math.round(r.width) + "x" + Math.round(r.height);
  }
  function visible(el) {
    var r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  }
  function drawn() {
    var d = { errors: (window.scopeProbeErrors || []).slice() };
    var frames = document.getElementById("frames");
    if (frames) {
      var svg = frames.ownerSVGElement, gs = frames.querySelectorAll(":scope > g"), ys = [];
      gs.forEach(function (g) {
        var r = g.querySelector("rect");
        if (r && ys.indexOf(r.getAttribute("y")) < 0) ys.push(r.getAttribute("y"));
      });
      ys.sort(function (a, b) { return Number(b) - Number(a); });
      var roots = [];
      gs.forEach(function (g) {
        var r = g.querySelector("rect"), t = g.querySelector("title");
        if (r && t && r.getAttribute("y") === ys[1] && visible(r)) roots.push(t.textContent.replace(/\u00a0/g, " "));
      });
      d.flame = {
        frames: Array.prototype.filter.call(gs, function (g) { var r = g.querySelector("rect"); return r && visible(r); }).length,
        // The graph's own script ran: it takes the fixed width off to fit the page.
        scripted: !svg.hasAttribute("width"),
        size: size(svg),
        roots: roots
      };
    }
    var flow = document.getElementById("sp-flow-graph");
    if (flow) {
      d.flow = {
        size: size(flow),
        nodes: Array.prototype.map.call(flow.querySelectorAll(".sp-fnode"), function (g) {
          return { who: g.dataset.who, size: size(g.querySelector("rect")) };
        }),
        edges: Array.prototype.map.call(flow.querySelectorAll(".sp-edge"), function (g) {
          var p = g.querySelector(".sp-edge-line");
          return { from: g.dataset.from, to: g.dataset.to, n: Number(g.dataset.n), length: Math.round(p.getTotalLength()), width: Number(p.getAttribute("stroke-width")) };
        })
      };
    }
    var tree = document.getElementById("sp-tree");
    if (tree) {
      d.tree = Array.prototype.map.call(tree.querySelectorAll(".sp-tn"), function (c) {
        var cell = c.querySelector(".sp-tn-cell");
        return { who: c.dataset.who, parent: c.dataset.parent, more: c.classList.contains("sp-more") ? cell.textContent : "", depth: Number(c.style.getPropertyValue("--d")), colour: getComputedStyle(cell).backgroundColor, shown: visible(cell) };
      });
    }
    d.charts = Array.prototype.map.call(document.querySelectorAll(".sp-chart"), function (fig) {
      return {
        id: fig.id,
        size: size(fig.querySelector("svg")),
        series: Array.prototype.map.call(fig.querySelectorAll(".sp-series"), function (g) {
          var p = g.querySelector(".sp-line");
          return { name: g.dataset.name, points: g.querySelectorAll(".sp-dot").length, length: Math.round(p.getTotalLength()) };
        })
      };
    });
    var out = document.getElementById("sp-drawn");
    out.textContent = JSON.stringify(d).replace(/</g, "\\u003c");
    document.documentElement.setAttribute("data-drawn", d.errors.length ? "errors" : "ok");
  }
  // After the flame graph's script has fitted it to the page (it does so on a zero timeout).
  window.addEventListener("load", function () {
    drawn();
    setTimeout(function () {
      // Tall stacks scroll inside their box: it opens on the roots (the processes), at the bottom.
      var box = document.querySelector(".sp-flame");
      if (box) box.scrollTop = box.scrollHeight;
      drawn();
    }, 0);
  });
})();
