"""Turning stored original files into text, off the api's request path.

``formats.extract(file, name, limits, spool)`` detects the format by content (the rules
of ``registry.FORMATS``, containers first), runs the format's extractor and returns an
``Extracted``: the text, a page map (PDF), section starts (DOCX/HTML headings, e-mail
parts), metadata, and the files found inside (attachments, archive members), written to
the ``spool`` within the upload's budget. ``sandbox.Sandbox`` runs it in a child process
(``child.py``) with a time limit and resource limits, so a parser that hangs, crashes or
is exploited costs one document, never the worker; ``expand.Expander`` follows what is
found inside, and ``unit.extract_files`` is an extract unit's compute step.
"""
