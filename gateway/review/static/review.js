// Keyboard shortcuts of the review page: a approve, r reject, e edit, 1-5 score, j next, k previous, l list.
"use strict";
(function () {
  function submit(id, stars) {
    var form = document.getElementById(id);
    if (!form) return;
    if (stars) {
      var button = form.querySelector('button[name="stars"][value="' + stars + '"]');
      if (button) { form.requestSubmit(button); }
      return;
    }
    form.requestSubmit();
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
    if (typing) {
      if (target.id === "edit-answer" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submit("edit-form");
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var key = event.key;
    if (key === "a") submit("approve-form");
    else if (key === "r") submit("reject-form");
    else if (key >= "1" && key <= "5") submit("score-form", key);
    else if (key === "e") {
      var editor = document.getElementById("edit-answer");
      if (editor) { event.preventDefault(); editor.focus(); editor.select(); }
    } else if (key === "j") {
      var skip = document.getElementById("skip");
      if (skip) window.location.assign(skip.href);
    } else if (key === "k") window.history.back();
    else if (key === "l") window.location.assign("/admin/review/list");
    else return;
  });
})();
