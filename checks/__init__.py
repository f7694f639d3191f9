"""Readiness probes, one package per checklist area."""
