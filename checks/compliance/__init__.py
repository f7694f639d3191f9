"""Probes of the compliance items that the running system can show: the legal pages it serves,
and its retention settings."""
