"""Exports shaped exactly as the tools write them, for the preset tests (issue 18).

Each writer puts one tool's export for one day under a landing folder, at the path its preset
expects. Headers and value formats follow the tool's public documentation, cited in each writer.
The people are shared (people.py), so one retailer's exports link across tools as they would.
"""
