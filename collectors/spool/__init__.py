"""The spool between the serving process and the store: what a captured interaction goes through.

- ``journal``: the append-only local journal (serving process appends; the loader child reads and commits).
- ``loader_supervisor``: runs in the serving process; starts the loader child, applies its reports,
  restarts it if it dies, drains it at shutdown.
- ``loader_child``: the loader child process's entry point (``python -m collectors.spool.loader_child``).
- ``writer``: runs in the loader child; drains journals into the store in batches.
- ``report``: what the loader child tells the serving process, one line per batch.

The store backends themselves live in ``collectors/store/``.
"""
