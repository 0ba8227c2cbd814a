"""Privacy helpers: masking personal values for display (more arrives with erasure and consent)."""
