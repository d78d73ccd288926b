"""``batcher dashboard``: a local web app over the store the CLI uses (SQLite or PostgreSQL).

Modules: ``app`` (routes, templates, the JSON the pages poll), ``board`` (what the pages show,
from the store's aggregates), ``tally`` (a job's calls over time, read incrementally), ``reports``
(the usage report and a file's estimate), ``actions`` (pause, resume, cancel, retry, export),
``guard`` (the token beyond loopback, CSRF, the Host check), ``serve`` (running it with uvicorn).
"""

from __future__ import annotations
