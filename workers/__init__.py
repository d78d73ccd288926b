"""The middle layer of batcher: API client, retry policy, rate limiters, execution core and Celery tasks."""
