"""The cron components, one module per job, and what they share.

- ``transfer``: acquire NEW rows and submit them to FTS (write-ahead records make a killed
  pass resumable without submitting twice);
- ``monitor``: bulk-poll FTS and hand finished files to the reporter;
- ``reporter``: turn FTS results into transfer states (DONE, RETRY, FAILED);
- ``retry_manager``: cool-off (RETRY → NEW), kills, recovery of stuck rows;
- ``publisher``: publish transferred files into the catalog, in blocks;
- ``handoffs``: the typed sandbox entries the components pass to each other;
- ``retry_policy``: the one rule that decides RETRY or FAILED;
- ``pipeline``: settings, per-pass tool cache and group commit shared by the FTS components;
- ``build``: one pass of any component, built from a configuration;
- ``runner``: running passes as cron does (lock, loop, SIGTERM).

Nothing here knows whether the state backend is local or remote, or which transfer tool
is behind the interface.
"""
