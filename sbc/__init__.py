"""sbc: a SIP-aware front-end (session border controller) for VOS3000."""
