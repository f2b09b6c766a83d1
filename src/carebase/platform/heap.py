"""The garbage collector, tuned for a long-running process (the server, the worker, the HL7
listener).

Measured (docs/benchmarks.md, FHIR search): with CPython's defaults a full collection walked the
whole heap (every module, pydantic schema and FHIR model loaded at start-up) every two seconds
under load, 150-200 ms each, and every request in flight waited for it: the p95 of a search was
twice its median. Two changes:

* ``gc.freeze()`` once start-up is done: what exists then lives as long as the process, and a
  full collection no longer walks it.
* A larger first generation: with 8 requests in flight, each holding a page of resources for tens
  of milliseconds, the default (700 allocations) promoted most of a request's objects to the
  older generations before they died, which is what made full collections so frequent.
"""

from __future__ import annotations

import gc

# Tried under the FHIR search benchmark: 10,000 still let full collections come every few seconds;
# 50,000 left none after start-up (a young collection then takes 5-60 ms, a few times a minute).
GEN0 = 50_000


def settle() -> None:
    """Once the process has started: freeze what start-up made and raise the first threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0, gen1, gen2)
