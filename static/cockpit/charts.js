/* Draws every <canvas data-chart="ID"> from the JSON in <script id="ID" type="application/json">
   (written by Django's json_script), so no inline script is needed under the CSP. */
(function () {
  "use strict";
  var palette = ["#1f4fd1", "#e07b00", "#2a9d3c", "#b8336a", "#6c4fd1", "#7a7a7a"];

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") { return; }
    var config = JSON.parse(source.textContent);
    var hasRight = false;
    config.datasets.forEach(function (ds, i) {
      var colour = palette[i % palette.length];
      ds.backgroundColor = ds.type === "line" ? colour : colour + "cc";
      ds.borderColor = colour;
      ds.borderWidth = ds.type === "line" || config.type === "line" ? 2 : 0;
      if (ds.yAxisID === "y1") { hasRight = true; }
    });
    var scales = { y: { beginAtZero: true, position: "left" } };
    if (hasRight) {
      scales.y1 = { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "%" } };
    }
    new Chart(canvas, {
      type: config.type || "bar",
      data: { labels: config.labels, datasets: config.datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: scales,
        plugins: { legend: { position: "bottom" } }
      }
    });
    canvas.dataset.rendered = "true";
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("canvas[data-chart]"), draw);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
