// Cairn: a VM's screen, through noVNC (vendored under novnc/, ES modules).
// The page carries a fresh ticket in data-path; the WebSocket goes to the
// same host the page came from. No inline script: the Content-Security-
// Policy allows only files from this origin.
import RFB from "./novnc/core/rfb.js";

const screen = document.getElementById("novnc-screen");
const status = document.getElementById("console-status");
const cad = document.getElementById("console-cad");
const d = screen.dataset;

function say(state, text) {
  status.textContent = text;
  status.dataset.state = state;
}

if (d.path) {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + d.path;
  say("connecting", d.msgConnecting);
  try {
    const rfb = new RFB(screen, url);
    rfb.scaleViewport = true; // the whole screen fits the window
    rfb.focusOnClick = true;
    rfb.addEventListener("connect", () => {
      say("connected", d.msgConnected);
      cad.disabled = false;
      rfb.focus();
    });
    rfb.addEventListener("disconnect", (e) => {
      cad.disabled = true;
      if (e.detail.clean) {
        say("disconnected", d.msgDisconnected);
      } else {
        say("failed", d.msgFailed);
      }
    });
    rfb.addEventListener("credentialsrequired", () => say("failed", d.msgPassword));
    rfb.addEventListener("securityfailure", (e) => say("failed", d.msgFailed + " " + (e.detail.reason || "")));
    cad.addEventListener("click", () => {
      rfb.sendCtrlAltDel();
      rfb.focus();
    });
    window.cairnConsole = rfb; // for tests and the curious
  } catch (e) {
    say("failed", d.msgFailed + " " + e.message);
  }
}
