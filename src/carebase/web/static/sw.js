/* Carebase service worker: shows Web Push notifications and opens their link when clicked.
 *
 * The payload is what platform/channels/push.py sends, encrypted to this browser:
 * {"title": ..., "body": ..., "url": ...}. Served from /static/, so its scope is /static/ unless
 * the server sends "Service-Worker-Allowed: /" with this file; push and notification clicks work
 * either way (they do not depend on the pages the worker controls).
 */

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch (_) {
      data = { body: event.data.text() };
    }
  }
  // Browsers penalise a push that shows nothing, so there is always a notification.
  event.waitUntil(self.registration.showNotification(data.title || "Carebase", {
    body: data.body || "",
    data: { url: data.url || "/" },
  }));
});

function safeUrl(raw) {
  // Only web links: the payload is ours, but a notification must never run a script URL.
  try {
    const url = new URL(raw || "/", self.location.origin);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : self.location.origin + "/";
  } catch (_) {
    return self.location.origin + "/";
  }
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = safeUrl(event.notification.data && event.notification.data.url);
  event.waitUntil((async () => {
    // Pages outside this worker's scope are "uncontrolled": include them to reuse an open tab.
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((w) => w.url === url);
    if (open && "focus" in open) return open.focus();
    return self.clients.openWindow(url);
  })());
});
