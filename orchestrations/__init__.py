"""Orchestrator functions: pure, replay-safe generators (no I/O, clock, random or env)."""
