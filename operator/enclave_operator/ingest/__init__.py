"""DataIngest worker: one shard of an Indexed Job pulls, de-identifies and uploads.

Modules: :mod:`.spec` (environment contract), :mod:`.sharding` (deterministic split),
:mod:`.layout` (object key names, shard manifest merge), :mod:`.sources` (DICOMweb and
S3 discovery/fetch), :mod:`.destination` (scoped S3 writes with resume), :mod:`.worker`
(the process entry point). See docs/ingest-worker.md.
"""
