"""What Carebase notifies people about: each notification type's category, fallback chain and
urgency. Templates live in web/templates/notifications/<language>/<type>.txt."""

from __future__ import annotations

from dataclasses import dataclass

# Order updates, payments and security messages cannot be switched off (the seeds: "order updates
# always on"); the rest can, promotions and health tips first of all.
CATEGORIES = ("appointments", "orders", "payments", "prescriptions", "messages", "documents", "security",
              "promotions", "health_tips")
MANDATORY = frozenset({"orders", "payments", "security"})
LANGUAGES = ("en", "hi")


@dataclass(frozen=True)
class NotificationType:
    name: str
    category: str
    # Channels tried in order until one takes it (the in-app notice is always left as well).
    chain: tuple[str, ...]
    # Urgent messages ignore quiet hours and the per-person rate limit.
    urgent: bool = False


_PUSH_FIRST = ("push", "sms", "email")  # the seed's chain for order updates
TYPES = {t.name: t for t in (
    NotificationType("appointment.booked", "appointments", _PUSH_FIRST),
    NotificationType("appointment.reminder", "appointments", _PUSH_FIRST),
    NotificationType("appointment.cancelled", "appointments", _PUSH_FIRST),
    NotificationType("order.status", "orders", _PUSH_FIRST),
    NotificationType("order.new", "orders", ("push", "email")),  # to the pharmacy's staff
    NotificationType("stock.low", "orders", ("email", "push")),  # to the pharmacy's staff
    NotificationType("payment.received", "payments", ("email", "push")),
    NotificationType("payment.refunded", "payments", ("email", "push")),
    NotificationType("payment.failed", "payments", ("push", "email")),
    NotificationType("subscription.status", "payments", ("email", "push")),  # to the pharmacy's staff
    # The code the patient gives the courier: a text message first, and it cannot wait for morning.
    NotificationType("order.delivery_code", "orders", ("sms", "whatsapp", "email"), urgent=True),
    NotificationType("prescription.approved", "prescriptions", _PUSH_FIRST),
    NotificationType("prescription.rejected", "prescriptions", _PUSH_FIRST),
    # The seed's documents chain is e-mail -> backup SMTP -> WhatsApp; one e-mail channel here,
    # whose provider is a setting, then WhatsApp.
    NotificationType("document.ready", "documents", ("email", "whatsapp")),
    NotificationType("message.new", "messages", ("push", "email")),
    NotificationType("security.alert", "security", ("sms", "whatsapp", "email"), urgent=True),
    NotificationType("promotion", "promotions", ("email", "push")),
    NotificationType("health_tip", "health_tips", ("push", "email")),
)}
