"""The top layer of batcher: CLI, input reader, ingest, export and the dev relay."""
