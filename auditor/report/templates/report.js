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
