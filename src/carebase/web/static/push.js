/* Turn on push notifications for this browser: carebaseEnablePush(vapidPublicKey, csrfToken).
 *
 * Call it from a click (browsers only ask for notification permission after a user gesture).
 * It registers /static/sw.js, subscribes with the server's VAPID public key and sends the
 * subscription to POST /api/v1/me/push-devices. Resolves to the PushSubscription; rejects with an
 * Error whose message can be shown to the person.
 */
(function () {
  "use strict";

  const WORKER_URL = "/static/sw.js";
  // The default scope of a worker served from /static/; push does not need a wider one.
  const WORKER_SCOPE = "/static/";

  function keyBytes(base64url) {
    const base64 = (base64url + "=".repeat((4 - (base64url.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  function sameKey(buffer, bytes) {
    if (!buffer || buffer.byteLength !== bytes.length) return false;
    const view = new Uint8Array(buffer);
    return bytes.every((b, i) => view[i] === b);
  }

  async function activeRegistration() {
    const registration = await navigator.serviceWorker.register(WORKER_URL, { scope: WORKER_SCOPE });
    // serviceWorker.ready only settles for a worker controlling this page, which one scoped to
    // /static/ never does: wait for this registration's worker instead.
    const worker = registration.active ? null : registration.installing || registration.waiting;
    if (worker && worker.state !== "activated") {
      await new Promise((resolve, reject) => {
        worker.addEventListener("statechange", () => {
          if (worker.state === "activated") resolve();
          if (worker.state === "redundant") reject(new Error("The notification service could not start."));
        });
      });
    }
    return registration;
  }

  async function carebaseEnablePush(vapidPublicKey, csrfToken) {
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      throw new Error("This browser cannot receive push notifications.");
    }
    if ((await Notification.requestPermission()) !== "granted") {
      throw new Error("Notifications are blocked for this site; allow them in the browser's site settings.");
    }
    const registration = await activeRegistration();
    const applicationServerKey = keyBytes(vapidPublicKey);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options.applicationServerKey, applicationServerKey)) {
      // Made for another server key (the operator rotated it): the push service would refuse ours.
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
    }
    const json = subscription.toJSON();
    const response = await fetch("/api/v1/me/push-devices", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify({ kind: "webpush", endpoint: json.endpoint,
                             keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } }),
    });
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).detail || "";
      } catch (_) { /* not problem+json */ }
      throw new Error(detail || `Could not save this device (${response.status}).`);
    }
    return subscription;
  }

  window.carebaseEnablePush = carebaseEnablePush;
})();
