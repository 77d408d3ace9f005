"""BIDS in and out: find a dataset's anatomical images, write BIDS derivatives.

``entities`` (file-name rules) and ``dataset`` (finding images) sit beside ``io``;
``derivatives`` names outputs for the shared predict API; ``app`` is the BIDS App
(participant and group levels) behind ``lofihippseg bids``.
"""
