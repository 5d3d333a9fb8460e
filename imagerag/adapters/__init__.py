"""Adapters: one module per external service, each implementing a Protocol of imagerag.ports.

Only imagerag.config builds them.
"""
