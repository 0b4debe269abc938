"""Plugins that ship with popgate, each a short file an admin can copy and adapt.

Use one as ``use = "python:popgate.plugins.NAME"`` in a ``[[plugin]]`` table; README.md,
"Shipped Python plugins", lists them with their options.
"""
