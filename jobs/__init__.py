"""The bottom layer of batcher: settings, the SQL store (models, schema, queries) and the error tree.

Nothing here imports from ``workers`` or ``batcher``.
"""
