// Open the evidence of the item a link points at (#item-ID): CSS :target cannot open <details>.
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
})();
