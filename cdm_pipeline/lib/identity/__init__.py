"""Identity resolution: which staged records are the same person, and their golden records.

The flow, one module per step: ``records`` (the identity graph's nodes) → ``deterministic``
(exact-identifier edges, with the junk-value and over-sharing guards) → ``model`` (the Splink
model: settings built from the columns the sources provide, training, the versioned JSON file;
its columns and blocking rules in ``blocking``) → ``matching`` (scored pairs) → ``clusters``
(connected components, governance overrides, cluster-size cap) → ``customer_ids`` (stable ids
across runs) → ``survivorship`` (golden records) → ``checks`` on the published tables →
``evaluation`` / ``explain`` for governance. ``run_ids`` names the re-resolutions after an erasure.
"""
