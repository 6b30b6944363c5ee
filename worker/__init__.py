"""The Celery side of chunkq: the app, its signals, worker start-up and the CLI."""
