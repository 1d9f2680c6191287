// Cairn: file upload on the bucket and image pages. No framework, no inline script (the
// Content-Security-Policy allows only files from this origin).
//
// The file goes to POST <form data-url>?key=<prefix + file name> as the raw
// request body, so the appliance streams it into the object store instead of
// parsing a multipart form. XMLHttpRequest, unlike fetch, reports upload
// progress. The form token travels in the X-CSRF-Token header. The listener
// sits on the document, so it keeps working after htmx swaps the page.
// An image goes to POST /images/upload?name=...&project=...&visibility=...
// the same way; once its bytes are sent, the appliance checks and stores it
// before answering, which the page says.
(function () {
  "use strict";

  function say(el, text, isError) {
    if (!el) {
      return;
    }
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  // imageName makes an image name of a file name: "Debian 12.qcow2" gives
  // "Debian-12".
  function imageName(file) {
    return file.replace(/\.(qcow2|img|raw|iso)$/i, "").replace(/[^A-Za-z0-9._-]+/g, "-")
      .replace(/^[^A-Za-z0-9]+/, "").slice(0, 63);
  }

  document.addEventListener("change", function (ev) {
    var input = ev.target;
    var name = document.getElementById("image-name");
    if (input.id === "image-file" && name && !name.value && input.files && input.files[0]) {
      name.value = imageName(input.files[0].name);
    }
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || (form.id !== "upload-form" && form.id !== "image-upload-form")) {
      return;
    }
    ev.preventDefault();
    var image = form.id === "image-upload-form";
    var input = form.querySelector(image ? "#image-file" : "#upload-file");
    var button = form.querySelector(image ? "#image-upload" : "#upload-submit");
    var bar = form.querySelector(image ? "#image-progress" : "#upload-progress");
    var status = document.getElementById(image ? "image-status" : "upload-status");
    var file = input && input.files && input.files[0];
    if (!file) {
      return;
    }
    var d = form.dataset;
    var target = d.url + "?key=" + encodeURIComponent(d.prefix + file.name);
    if (image) {
      var q = new URLSearchParams();
      ["name", "project", "visibility", "os_type"].forEach(function (k) {
        var el = form.elements.namedItem(k);
        if (el && el.value) {
          q.set(k, el.value.trim());
        }
      });
      target = d.url + "?" + q.toString();
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", target);
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
    xhr.upload.addEventListener("load", function () {
      if (image) {
        bar.removeAttribute("value"); // indeterminate while the appliance checks it
        say(status, d.msgChecking, false);
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
