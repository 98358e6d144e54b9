"""Peers and helpers beside sbc: the VOS3000 stand-in and the demo."""
