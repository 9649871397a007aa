"""The worker side: Celery app and tasks, model handlers, chunking, batching."""
