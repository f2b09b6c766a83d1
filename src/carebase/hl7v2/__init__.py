"""HL7 v2 ADT ingestion: over MLLP (``carebase hl7-listen``) and HTTP (POST /api/v1/hl7/v2)."""
