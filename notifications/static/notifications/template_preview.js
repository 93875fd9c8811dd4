// Live preview for message templates: re-render into the preview frame shortly after each edit.
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    var button = document.getElementById("template-preview-button");
    if (!button) { return; }
    var form = button.form;
    var timer = null;
    function refresh() { button.click(); }
    ["subject", "body_text", "body_html", "locale", "channel", "preview_reference"].forEach(function (name) {
      var field = form.elements[name];
      if (!field) { return; }
      field.addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(refresh, 600);
      });
      field.addEventListener("change", refresh);
    });
    refresh();
  });
})();
