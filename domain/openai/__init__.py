"""The OpenAI Batch API as a view of docbatch jobs: files in, a job, files out.

``files`` (upload checks and storage), ``convert`` (request lines to documents),
``batches`` (create, status, counts, expiry, finalize) and ``render`` (OpenAI's objects
and output lines).

An uploaded input file (``purpose=batch``) is checked line by line as it is stored
(``files.store_upload``). ``batches.create_batch`` turns its request lines into the
documents of ONE ordinary job — the same units, queues, workers and results as
``/v1/jobs`` — with a task per deployment the lines name (each document runs on its line's
deployment only), and records which line each document came from (document metadata
``openai``: ``[line, custom_id, input index, inputs on the line, encoding]``, then the
moderation threshold and the model the line named when it is not the first line's). Lines
the job cannot take (unknown model, a bad body) are kept on the batch as line errors. The
output and error files are rendered from the results: live while the batch runs, and
written once to a blob when it ends (``batches.finalize``).

Endpoint → task::

    /v1/embeddings              embed      (body.input: a string or a list of strings)
    /v1/docbatch/<task>         <task>     (body: the task's params plus "text")
    /v1/chat/completions, /v1/completions  generate, when the deployment runs it
"""
