"""Load tests, SIPp scenarios and the harness that drives them (see README.md)."""
