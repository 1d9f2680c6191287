// Cairn: a VM's serial port as text. Bytes from the WebSocket (its path,
// with a fresh ticket, is in data-path) are appended to the <pre>; keys
// typed while it has focus are sent as the bytes a terminal would send.
// Colour and cursor escape sequences are dropped: this is a log to read and
// a prompt to type at, not a terminal emulator.
(function () {
  "use strict";
  var out = document.getElementById("serial-output");
  var status = document.getElementById("console-status");
  if (!out || !out.dataset.path) {
    return;
  }
  var d = out.dataset;
  var maxChars = 200000; // keep the page light on a long-running VM
  var dec = new TextDecoder("utf-8");
  var enc = new TextEncoder();
  var keys = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
    ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D",
    Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~", PageUp: "\x1b[5~", PageDown: "\x1b[6~"
  };

  function say(state, text) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function append(text) {
    text = text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\x1b[()][0-9A-Za-z]/g, "").replace(/\r(?!\n)/g, "");
    var s = out.textContent;
    for (var i = 0; i < text.length; i++) {
      var c = text[i];
      if (c === "\b") {
        s = s.slice(0, -1);
      } else if (c !== "\x07" && c !== "\x00") {
        s += c;
      }
    }
    if (s.length > maxChars) {
      s = s.slice(s.length - maxChars);
    }
    var follow = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.textContent = s;
    if (follow) {
      out.scrollTop = out.scrollHeight;
    }
  }

  var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + d.path);
  ws.binaryType = "arraybuffer";
  say("connecting", d.msgConnecting);
  ws.addEventListener("open", function () {
    say("connected", d.msgConnected);
    out.focus();
  });
  ws.addEventListener("message", function (e) {
    append(typeof e.data === "string" ? e.data : dec.decode(e.data, { stream: true }));
  });
  ws.addEventListener("close", function () {
    say("disconnected", d.msgDisconnected);
  });

  function send(text) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(enc.encode(text));
    }
  }

  out.addEventListener("keydown", function (e) {
    var s = keys[e.key];
    if (e.ctrlKey && !e.altKey && !e.metaKey && e.key.length === 1) {
      var c = e.key.toUpperCase().charCodeAt(0);
      if (c >= 64 && c <= 95) {
        s = String.fromCharCode(c - 64); // Ctrl-C is 0x03
      }
    } else if (!s && e.key.length === 1 && !e.ctrlKey && !e.metaKey) {
      s = e.key;
    }
    if (s) {
      e.preventDefault();
      send(s);
    }
  });
  out.addEventListener("paste", function (e) {
    e.preventDefault();
    send((e.clipboardData || window.clipboardData).getData("text").replace(/\r?\n/g, "\r"));
  });
})();
