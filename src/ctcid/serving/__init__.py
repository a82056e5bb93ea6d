"""Serving the registry's champion: package it as a Bento, count CTCs in whole fields.

``served`` says which model is served and how it cuts fields, ``uploads`` turns files into
checked arrays (or a 4xx :class:`~ctcid.errors.InputRejected`), ``counting`` segments and scores a
field, ``package`` imports the champion and builds the Bento, ``predict`` is the offline twin of
the service and ``server`` starts it. The service itself is ``serving/service.py`` at the top of
the repository; it imports these modules and copies nothing.
"""
