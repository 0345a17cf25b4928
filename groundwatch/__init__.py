"""The ``groundwatch`` command line and what a person reads: the commands (``cli``), the
preflight of ``check-config``, the report and its HTML page, ``explain``, progress lines and the
demo. It sits above every other package: it imports ``workers``, ``metrics`` and ``evaluator``;
none of them imports it (docs/decisions/0017-rooms-split-by-who-uses-them.md).
"""
