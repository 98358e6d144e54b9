"""sbc/state."""
