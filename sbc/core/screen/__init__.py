"""sbc/core/screen."""
