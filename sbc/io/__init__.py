"""sbc/io."""
