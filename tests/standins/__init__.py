"""Local stand-ins for external providers: each speaks its provider's wire format on a real port,
so the real adapters are tested without anything leaving this machine."""
