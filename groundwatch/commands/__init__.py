"""The commands of ``groundwatch``, one module per kind (processes, demo, store, offline,
calibrate); the parser in :mod:`groundwatch.cli` names each command's function, and only the
module of the command that runs is imported (``report`` and ``explain`` never load Celery;
``worker`` never loads the demo).
"""
