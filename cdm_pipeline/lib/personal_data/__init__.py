"""Primitives for handling personal values, used by every stage: masking for display, the keyed
hash, and the suppression list that keeps erased people out of new loads.

This package sits below extract, identity and marts and imports none of them (nor the privacy
operations in ``lib/privacy``, which sit above everything they rebuild).
"""
