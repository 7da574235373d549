// pleura exam tab: a click on a zone of the chest map selects that zone in the zone list
// (the list is the Gradio component the server listens to; the map is drawn by ui/exam.py).
(function () {
  document.addEventListener("click", function (ev) {
    var g = ev.target && ev.target.closest ? ev.target.closest("#pleura-exam-svg .pl-zone") : null;
    if (!g) return;
    var zone = g.getAttribute("data-zone");
    var labels = document.querySelectorAll("#pleura-exam-zone label");
    for (var i = 0; i < labels.length; i++) {
      var text = (labels[i].textContent || "").trim();
      if (text === zone || text.indexOf(zone + " ") === 0) {
        var input = labels[i].querySelector("input");
        (input || labels[i]).click();
        return;
      }
    }
  });
})();
