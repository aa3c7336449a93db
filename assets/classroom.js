// The participant's classroom panel (src/views/classroom.rs), from the live stream
// /api/my-vm/classroom: the "I need help" button and the hand's state, the latest
// announcement, the notice while the instructor has control of this desktop (and when it
// is given back), and the instructor's broadcast: a view-only noVNC client over
// /broadcast/ws, shown instead of the participant's own desktop on the desktop page and
// inside the seat page (which links to /broadcast, full size). The body's data-broadcast
// (off | connecting | connected) and the panel's data-hand / data-control /
// data-announcement say what is shown.
(function () {
  "use strict";
  const panel = document.getElementById("classroom");
  if (!panel || !window.EventSource) return;
  const byId = (id) => document.getElementById(id);
  const raiseForm = byId("hand-raise-form");
  const lowerForm = byId("hand-lower-form");
  const handState = byId("hand-state");
  const announcement = byId("announcement");
  const announcementText = byId("announcement-text");
  const controlNotice = byId("control-notice");
  const givenBack = byId("given-back");
  const note = byId("broadcast-note");
  const yours = byId("broadcast-yours");
  const screen = byId("broadcast-screen");
  const RETRY_MS = 2000;

  // Answered in place, so an open desktop stays connected; the live stream shows the result.
  for (const form of [raiseForm, lowerForm]) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        redirect: "manual",
        body: new URLSearchParams(new FormData(form)),
      }).then((answer) => {
        if (answer.status >= 400) handState.textContent = "That did not work; reload the page.";
      }).catch(() => {
        handState.textContent = "The workshop server cannot be reached; try again.";
      });
    });
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      console.error("classroom event:", error);
      return undefined;
    }
  }

  const events = new EventSource(panel.dataset.events);
  events.addEventListener("hand", (event) => {
    const hand = parse(event);
    if (!hand) return;
    raiseForm.hidden = hand.raised;
    lowerForm.hidden = !hand.raised;
    handState.textContent = hand.taken_by
      ? hand.taken_by + " is coming to help you"
      : "Your hand is raised";
    panel.dataset.hand = hand.raised ? (hand.taken_by ? "taken" : "raised") : "down";
  });
  events.addEventListener("announcement", (event) => {
    const latest = parse(event);
    if (latest === undefined) return;
    announcement.hidden = !latest;
    announcementText.textContent = latest ? latest.text : "";
    panel.dataset.announcement = latest ? String(latest.id) : "";
  });
  let controlled = false;
  events.addEventListener("control", (event) => {
    const now = event.data === "true";
    controlNotice.hidden = !now;
    givenBack.hidden = !(controlled && !now);
    controlled = now;
    panel.dataset.control = now ? "instructor" : "participant";
  });
  events.addEventListener("broadcast", (event) => {
    const on = parse(event);
    if (!on) return;
    // The seat on air keeps its own desktop (the instructor demonstrates on it).
    const watching = on.on && !on.yours;
    note.hidden = !watching;
    yours.hidden = !(on.on && on.yours);
    if (watching) watch(on.id);
    else unwatch();
  });

  // The broadcast viewer.
  let viewer = null; // the noVNC client, while one is open
  let onAir = null; // the broadcast's id while there is one
  let retry = null;
  let loading = null;
  document.body.dataset.broadcast = "off";

  function watch(id) {
    if (onAir !== id && viewer) {
      // Another desktop is on air: start over.
      const old = viewer;
      viewer = null;
      old.disconnect();
    }
    onAir = id;
    screen.hidden = false;
    document.body.dataset.broadcast = "connecting";
    connect();
  }

  function unwatch() {
    onAir = null;
    clearTimeout(retry);
    if (viewer) {
      const old = viewer;
      viewer = null;
      old.disconnect();
    }
    screen.hidden = true;
    document.body.dataset.broadcast = "off";
  }

  function connect() {
    if (viewer || onAir === null) return;
    loading = loading || import("./vendor/novnc/core/rfb.js").then((module) => module.default);
    loading.then((RFB) => {
      if (viewer || onAir === null) return;
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
        "/broadcast/ws";
      const client = new RFB(screen, url, { shared: true });
      viewer = client;
      client.viewOnly = true;
      client.scaleViewport = true;
      client.resizeSession = false;
      client.addEventListener("connect", () => {
        if (viewer === client) document.body.dataset.broadcast = "connected";
      });
      client.addEventListener("disconnect", () => {
        if (viewer !== client) return;
        viewer = null;
        if (onAir === null) return;
        document.body.dataset.broadcast = "connecting";
        retry = setTimeout(connect, RETRY_MS);
      });
    }, (error) => {
      console.error("loading noVNC:", error);
      note.textContent = "The instructor's screen cannot be shown — reload the page.";
    });
  }
})();
