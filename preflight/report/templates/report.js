// Open the evidence of the item a link points at (#item-ID): CSS :target cannot open <details>.
// Filter the items by outcome, area, severity and text, on the page itself (nothing is loaded).
(function () {
  function openAll(root) {
    root.querySelectorAll("details").forEach(function (d) { d.open = true; });
  }
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    if (!el) return;
    for (var p = el.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    openAll(el);
    el.scrollIntoView();
  }
  addEventListener("hashchange", openTarget);
  addEventListener("beforeprint", function () { openAll(document); });
  openTarget();

  var fields = ["outcome", "area", "severity"].map(function (name) {
    return [name, document.getElementById("filter-" + name)];
  });
  var text = document.getElementById("filter-text");
  var count = document.getElementById("filter-count");
  var items = Array.prototype.slice.call(document.querySelectorAll("article.item"));
  function apply() {
    var words = (text.value || "").toLowerCase().trim();
    var shown = 0;
    items.forEach(function (item) {
      var visible = fields.every(function (f) {
        return !f[1].value || item.dataset[f[0]] === f[1].value;
      }) && (!words || item.textContent.toLowerCase().indexOf(words) !== -1);
      item.hidden = !visible;
      if (visible) shown += 1;
    });
    var filtering = words || fields.some(function (f) { return f[1].value; });
    if (filtering) {
      document.querySelectorAll("details.group-details").forEach(function (d) { d.open = true; });
    }
    count.textContent = filtering ? shown + " of " + items.length + " items" : "";
    document.querySelectorAll("#items h3.group").forEach(function (heading) {
      var any = false;
      for (var el = heading.nextElementSibling; el && el.tagName !== "H3"; el = el.nextElementSibling) {
        if (el.matches("article.item:not([hidden])") || el.querySelector("article.item:not([hidden])")) any = true;
      }
      heading.hidden = !any;
    });
  }
  if (text && count) {
    fields.forEach(function (f) { f[1].addEventListener("change", apply); });
    text.addEventListener("input", apply);
  }
})();
