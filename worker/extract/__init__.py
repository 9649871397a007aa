"""Turning stored original files into text, off the api's request path.

``extract(data, name, limits)`` detects the format by content (``detect.py``), runs the
format's extractor and returns an ``Extracted``: the text, a page map (PDF), section
starts (DOCX/HTML headings, e-mail parts), metadata, and attachments that become
documents of their own. ``sandbox.Sandbox`` runs it in a child process with a time
limit, so a parser that hangs or crashes costs one document, never the worker.
"""
