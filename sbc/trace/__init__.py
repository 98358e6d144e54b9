"""The per-call SIP trace, pure: the ring that keeps recent calls' messages
(ring.py), the call record read off them (summary.py), and the two ways out:
a pcap file (pcap.py) and HEP v3 packets (hep.py). Bytes in, bytes out; the
capture hook and the HEP sender are in sbc.io."""
