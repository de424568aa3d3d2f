/* Draws the plotly figures from the page's JSON block and wires the confusion matrix to the galleries:
   clicking cell (true i, predicted j) scrolls to the element with id "pair-i-j". */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var status = document.getElementById("cm-status");

  function openPair(i, j) {
    var target = document.getElementById("pair-" + i + "-" + j);
    document.querySelectorAll(".pair.is-target").forEach(function (el) { el.classList.remove("is-target"); });
    if (!target) {
      status.textContent = i === j
        ? "Diagonal cell: these images were classified correctly."
        : "No gallery for this pair: only the most frequent confused pairs have one (report.top_pairs).";
      return;
    }
    status.textContent = "";
    target.classList.add("is-target");
    target.scrollIntoView({ block: "start" });
    if (window.history && history.replaceState) history.replaceState(null, "", "#" + target.id);
  }

  if (!window.Plotly) return;
  var options = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  Object.keys(data.figures).forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) return;
    var figure = data.figures[id];
    // With responsive plots the div sets the size: give it the figure's height so nothing overflows.
    if (figure.layout && figure.layout.height) el.style.height = figure.layout.height + "px";
    Plotly.newPlot(el, figure.data, figure.layout, options).then(function (plot) {
      if (id !== "fig-confusion") return;
      plot.on("plotly_click", function (event) {
        var cell = event.points[0].pointNumber; // [row, column] of the matrix as shown
        openPair(data.matrix_classes[cell[0]], data.matrix_classes[cell[1]]);
      });
    });
  });
})();

/* Long lists stay short: the per-class table and the collapsed low findings show a page of the items that pass
   their filter ("Show more" adds a page); the findings filter by text and severity. Items are only hidden,
   never removed, so sorting, filtering and the no-JavaScript page all see every item. */
(function () {
  "use strict";
  var toArray = function (list) { return Array.prototype.slice.call(list); };
  var num = function (n) { return n.toLocaleString("en-US"); };

  // A paged list: el carries data-page; items() gives its items in their current order.
  function paged(el, items) {
    var page = Number(el.getAttribute("data-page")) || 50;
    var list = { limit: page, matched: 0, items: items, match: function () { return true; } };
    var more = document.querySelector('[data-more="' + el.id + '"]');
    list.show = function () {
      var matched = 0;
      list.items().forEach(function (item) {
        var ok = list.match(item);
        item.hidden = !ok || matched >= list.limit;
        if (ok) matched += 1;
      });
      list.matched = matched;
      if (more) {
        more.hidden = matched <= list.limit;
        var rest = matched - list.limit;
        more.textContent = "Show " + Math.min(page, rest) + " more (" + num(rest) + " not shown)";
      }
      return Math.min(matched, list.limit);
    };
    list.reveal = function (item) { // raise the limit to the page that holds item
      var at = list.items().filter(list.match).indexOf(item);
      if (at >= list.limit) list.limit = Math.ceil((at + 1) / page) * page;
    };
    list.reset = function () { list.limit = page; };
    if (more) more.addEventListener("click", function () { list.limit += page; list.onchange(); });
    return list;
  }

  var table = document.getElementById("per-class-table");
  var classSearch = document.getElementById("class-search");
  if (table && table.hasAttribute("data-page") && classSearch) {
    var rows = paged(table, function () { return toArray(table.tBodies[0].rows); });
    var classStatus = document.getElementById("class-status");
    rows.onchange = function () {
      var query = classSearch.value.trim().toLowerCase();
      rows.match = function (row) { return !query || row.cells[0].textContent.toLowerCase().indexOf(query) >= 0; };
      var shown = rows.show();
      classStatus.textContent = "Showing " + num(shown) + " of " + num(rows.matched) + (query ? " matching" : "") +
        " classes" + (query ? " (" + num(table.tBodies[0].rows.length) + " in all)" : "");
    };
    classSearch.addEventListener("input", function () { rows.reset(); rows.onchange(); });
    table.addEventListener("sorted", rows.onchange);
    rows.onchange();
  }

  var filter = document.getElementById("finding-filter");
  if (!filter) return;
  var search = document.getElementById("finding-search");
  var boxes = toArray(filter.querySelectorAll('input[type="checkbox"]'));
  var status = document.getElementById("finding-status");
  var cards = toArray(document.querySelectorAll("article.finding"));
  var group = document.getElementById("low-findings");
  var lows = group ? paged(group, function () { return toArray(group.querySelectorAll("article.finding")); }) : null;
  var lowStatus = document.getElementById("low-status");
  var texts = new Map(cards.map(function (card) { // what the search reads: severity, kind, classes, id, message
    var parts = toArray(card.querySelectorAll(".finding-head, :scope > p"));
    return [card, parts.map(function (el) { return el.textContent; }).join(" ").toLowerCase().replace(/_/g, " ")];
  }));

  function matches(card) {
    var query = search.value.trim().toLowerCase().replace(/_/g, " ");
    var on = boxes.some(function (box) { return box.checked && card.classList.contains(box.value); });
    return on && (!query || texts.get(card).indexOf(query) >= 0);
  }

  function update() {
    var shown = 0;
    cards.forEach(function (card) {
      if (group && group.contains(card)) return;
      card.hidden = !matches(card);
      if (!card.hidden) shown += 1;
    });
    var filtered = search.value.trim() !== "" || boxes.some(function (box) { return !box.checked; });
    if (lows) {
      var listed = lows.show();
      group.hidden = lows.matched === 0;
      lowStatus.textContent = (filtered ? num(lows.matched) + " match, " : "") +
        (group.open ? num(listed) + " listed" : "collapsed: open to list them");
      shown += lows.matched;
    }
    status.textContent = filtered
      ? num(shown) + " of " + num(cards.length) + " findings match"
      : num(cards.length) + " findings, most severe first";
  }

  search.addEventListener("input", function () {
    if (lows) {
      lows.reset();
      if (search.value.trim()) group.open = true; // a search shows its low matches without another click
    }
    update();
  });
  boxes.forEach(function (box) { box.addEventListener("change", update); });
  if (lows) {
    lows.match = matches;
    lows.onchange = update;
    group.addEventListener("toggle", update);
  }

  // A link to a finding (per-class table, class maps) opens its group and lifts any filter that hides it.
  function reveal(id) {
    var card = id && document.getElementById(id);
    if (!card || !texts.has(card)) return;
    if (!matches(card)) {
      search.value = "";
      boxes.forEach(function (box) { box.checked = true; });
    }
    if (lows && group.contains(card)) {
      group.open = true;
      lows.reveal(card);
    }
    update();
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest('a[href^="#finding-"]');
    if (link) reveal(link.getAttribute("href").slice(1));
  });
  update();
  var opened = document.getElementById(location.hash.slice(1));
  if (opened && texts.has(opened)) { // opened at a finding's address: show it and go there
    reveal(opened.id);
    opened.scrollIntoView({ block: "start" });
  }
})();
