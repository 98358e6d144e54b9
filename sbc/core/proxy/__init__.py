"""sbc/core/proxy."""
