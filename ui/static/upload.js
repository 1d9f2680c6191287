// Cairn: file upload on the bucket page. No framework, no inline script (the
// Content-Security-Policy allows only files from this origin).
//
// The file goes to POST <form data-url>?key=<prefix + file name> as the raw
// request body, so the appliance streams it into the object store instead of
// parsing a multipart form. XMLHttpRequest, unlike fetch, reports upload
// progress. The form token travels in the X-CSRF-Token header. The listener
// sits on the document, so it keeps working after htmx swaps the page.
(function () {
  "use strict";

  function say(el, text, isError) {
    if (!el) {
      return;
    }
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.id !== "upload-form") {
      return;
    }
    ev.preventDefault();
    var input = form.querySelector("#upload-file");
    var button = form.querySelector("#upload-submit");
    var bar = form.querySelector("#upload-progress");
    var status = document.getElementById("upload-status");
    var file = input && input.files && input.files[0];
    if (!file) {
      return;
    }
    var d = form.dataset;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", d.url + "?key=" + encodeURIComponent(d.prefix + file.name));
    xhr.setRequestHeader("X-CSRF-Token", d.csrf);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");

    function finish(text) {
      button.disabled = false;
      input.disabled = false;
      bar.hidden = true;
      say(status, text, true);
    }

    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.max = e.total;
        bar.value = e.loaded;
      }
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) {
        bar.value = bar.max;
        // Reload the listing; it shows the new object and a message.
        window.location.assign(xhr.getResponseHeader("Location") || window.location.href);
        return;
      }
      var to = xhr.getResponseHeader("HX-Redirect"); // signed out meanwhile
      if (to) {
        window.location.assign(to);
        return;
      }
      var type = xhr.getResponseHeader("Content-Type") || "";
      var text = type.indexOf("text/plain") === 0 ? xhr.responseText.trim() : "";
      finish(text || d.msgFailed + " (" + xhr.status + ")");
    });
    xhr.addEventListener("error", function () {
      finish(d.msgFailed);
    });
    xhr.addEventListener("abort", function () {
      finish(d.msgFailed);
    });

    button.disabled = true;
    input.disabled = true;
    bar.max = file.size || 1;
    bar.value = 0;
    bar.hidden = false;
    say(status, d.msgUploading.replace("%s", file.name), false);
    xhr.send(file);
  });
})();
