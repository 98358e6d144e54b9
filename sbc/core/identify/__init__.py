"""sbc/core/identify."""
