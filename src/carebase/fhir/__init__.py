"""FHIR R4 facade over Carebase's domains (see routes.py)."""

# Each mapper registers its resource types on import.
from carebase.fhir import clinical as _clinical  # noqa: F401
from carebase.fhir import directory as _directory  # noqa: F401
from carebase.fhir import medications as _medications  # noqa: F401
from carebase.fhir import outside as _outside  # noqa: F401  (after the mappers whose types it joins)
from carebase.fhir import patient as _patient  # noqa: F401
from carebase.fhir import privacy as _privacy  # noqa: F401
from carebase.fhir import scheduling as _scheduling  # noqa: F401
