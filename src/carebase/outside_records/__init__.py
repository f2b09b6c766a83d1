"""Outside records: clinical and directory resources received from other systems (a FHIR import,
a transaction Bundle from another EHR, a Synthea population), kept as they came."""
