"""Backbone module (being filled in by the backbone-zoo work)."""
