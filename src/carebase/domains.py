"""Every domain, imported once so its tables join the metadata and its projectors register.

A new capability is a new folder plus one line here.
"""

from carebase.audit import models as _audit_models  # noqa: F401
from carebase.consult import models as _consult_models  # noqa: F401
from carebase.encounters import events as _encounters_events  # noqa: F401
from carebase.fhir import bulk as _fhir_bulk  # noqa: F401  (its tables and the export job)
from carebase.hl7v2 import models as _hl7v2_models  # noqa: F401
from carebase.outside_records import events as _outside_records_events  # noqa: F401
from carebase.identity import events as _identity_events  # noqa: F401
from carebase.knowledge import service as _knowledge  # noqa: F401  (its tables, loaded after migrations)
from carebase.messaging import models as _messaging_models  # noqa: F401
from carebase.messaging import service as _messaging_jobs  # noqa: F401  (the unread-message nudge)
from carebase.notifications import models as _notifications_models  # noqa: F401
from carebase.notifications import service as _notifications_service  # noqa: F401  (the address resolver)
from carebase.patients import events as _patients_events  # noqa: F401
from carebase.payments import models as _payments_models  # noqa: F401
from carebase.payments import service as _payments_service  # noqa: F401  (its jobs)
from carebase.pharmacy import models as _pharmacy_models  # noqa: F401
from carebase.pharmacy import subscriptions as _pharmacy_subscriptions  # noqa: F401  (its purpose and renewal job)
from carebase.platform import delivery as _delivery  # noqa: F401
from carebase.platform import jobs as _jobs  # noqa: F401
from carebase.platform import ratelimit as _ratelimit  # noqa: F401
from carebase.platform import web as _web  # noqa: F401
from carebase.prescribing import models as _prescribing_models  # noqa: F401
from carebase.providers import events as _providers_events  # noqa: F401
from carebase.scheduling import events as _scheduling_events  # noqa: F401
from carebase.scheduling import service as _scheduling_jobs  # noqa: F401  (the reminder job)
from carebase.tenants import events as _tenants_events  # noqa: F401

ROUTERS = (
    # First: FastAPI tries routes in order, and platform/routing.py lets a router whose paths
    # cannot match decline at once. The facade's two /api/v1 routes (the record exports) are taken
    # by nothing else, so its place ahead of the JSON API changes no match.
    "carebase.fhir.routes",
    "carebase.identity.routes",
    "carebase.tenants.routes",
    "carebase.patients.routes",
    "carebase.patients.pages",
    "carebase.providers.routes",
    "carebase.providers.pages",
    "carebase.scheduling.routes",
    "carebase.scheduling.pages",
    "carebase.notifications.routes",
    "carebase.notifications.pages",
    "carebase.notifications.webhooks",
    "carebase.encounters.routes",
    "carebase.encounters.pages",
    "carebase.messaging.routes",
    "carebase.consult.routes",
    "carebase.consult.pages",
    "carebase.prescribing.routes",
    "carebase.prescribing.pages",
    "carebase.pharmacy.routes",
    "carebase.pharmacy.pages",
    "carebase.payments.routes",
    "carebase.payments.pages",
    "carebase.messaging.pages",
    "carebase.audit.routes",
    "carebase.ops.routes",
    "carebase.streams.routes",
    "carebase.streams.files",
    "carebase.hl7v2.routes",
    "carebase.hl7v2.pages",
    "carebase.portal.pages",
)
