"""Privacy operations over the whole warehouse: finding a data subject, access documents, erasure
(which re-resolves identity and rebuilds the marts), the request queue and the analyst export.

These sit above identity and marts. The primitives they share with extract and identity (masking,
the keyed hash, the suppression list) live in ``lib/personal_data``, below everything.
"""
