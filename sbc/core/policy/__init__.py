"""sbc/core/policy."""
