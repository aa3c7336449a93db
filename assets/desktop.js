// The participant's desktop in the page: noVNC's RFB client over the allocator's WebSocket
// relay, reconnecting when the connection drops. The page provides #desktop-screen (data-ws:
// the relay's path; data-view-only) and #desktop-status; this script keeps the status text
// and the body's data-desktop (connecting | connected | disconnected) current.

const FIRST_DELAY_S = 1;
const MAX_DELAY_S = 10;

const screen = document.getElementById("desktop-screen");
const statusLine = document.getElementById("desktop-status");

function show(state, text) {
  document.body.dataset.desktop = state;
  if (statusLine) statusLine.textContent = text;
}

if (screen) {
  // Loaded here rather than by a static import so that a failed load still says so.
  import("./vendor/novnc/core/rfb.js").then(
    (module) => start(module.default),
    (error) => {
      console.error("loading noVNC:", error);
      show("disconnected", "The desktop viewer could not be loaded — reload the page.");
    },
  );
}

function start(RFB) {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    screen.dataset.ws;
  const viewOnly = screen.dataset.viewOnly === "true";

  let rfb = null; // the one client at a time
  let timer = null; // the pending reconnect, if any
  let delay = FIRST_DELAY_S;
  let stopped = false;
  let everConnected = false;
  let connects = 0; // completed connections on this page (data-connects: tests wait on it)

  function connect() {
    if (rfb || stopped) return;
    clearTimeout(timer);
    timer = null;
    show("connecting", "Connecting to your desktop…");
    let client;
    try {
      client = new RFB(screen, url, { shared: true });
    } catch (error) {
      console.error("starting the VNC client:", error);
      retry();
      return;
    }
    rfb = client;
    client.viewOnly = viewOnly;
    client.scaleViewport = true;
    client.resizeSession = false;
    client.focusOnClick = true;
    client.addEventListener("connect", () => {
      everConnected = true;
      connects += 1;
      document.body.dataset.connects = String(connects);
      delay = FIRST_DELAY_S;
      show("connected", "Connected");
      client.focus({ preventScroll: true });
    });
    client.addEventListener("disconnect", async () => {
      rfb = null;
      if (stopped) return;
      if (await seatGone()) {
        stopped = true;
        show("disconnected", "Your seat changed — opening your seat's page…");
        location.assign("/my-vm");
        return;
      }
      retry();
    });
    // The desktop's security type is None: a request for credentials means something is
    // wrong on the VM, and asking the participant for a password would not fix it.
    client.addEventListener("credentialsrequired", () =>
      refuse(client, "Cannot show your desktop: unexpected password prompt. Please tell the instructor."));
    client.addEventListener("serververification", () =>
      refuse(client, "Cannot show your desktop: unexpected server verification. Please tell the instructor."));
    client.addEventListener("securityfailure", (event) =>
      console.warn("VNC security failure:", event.detail.status, event.detail.reason));
  }

  function refuse(client, text) {
    stopped = true;
    show("disconnected", text);
    client.disconnect();
  }

  // "connect" comes after the RFB handshake. Until one has completed on this page, a close
  // means the relay or the VNC server behind it is not there yet (the VM is still starting);
  // after one, a working desktop was lost, and it stays "lost" until it is back.
  function retry() {
    let left = delay;
    delay = Math.min(delay * 2, MAX_DELAY_S);
    const text = everConnected
      ? (s) => `Connection lost — reconnecting in ${s} s…`
      : (s) => `Your desktop is not ready yet — retrying in ${s} s…`;
    const tick = () => {
      if (left <= 0) {
        timer = null;
        connect();
        return;
      }
      show("disconnected", text(left));
      left -= 1;
      timer = setTimeout(tick, 1000);
    };
    tick();
  }

  // The participant's page: is their seat still theirs? After a lost connection the seat
  // page says what happened (released, moved, VM unresponsive) and offers what to do.
  async function seatGone() {
    if (!screen.dataset.events) return false;
    try {
      const answer = await fetch("/api/my-vm", { credentials: "same-origin" });
      if (!answer.ok) return false;
      const seat = await answer.json();
      return seat.state !== "ready" && seat.state !== "rebooting";
    } catch {
      return false;
    }
  }

  // Back on the network: no reason to sit out the rest of the wait.
  window.addEventListener("online", () => {
    if (timer !== null) connect();
  });

  watchNotice();
  connect();
}

// The participant sees when the instructor is viewing their screen (`viewing` events).
function watchNotice() {
  const notice = document.getElementById("desktop-notice");
  if (!notice || !screen.dataset.events) return;
  const events = new EventSource(screen.dataset.events);
  events.addEventListener("viewing", (event) => {
    notice.hidden = event.data !== "true";
  });
}
