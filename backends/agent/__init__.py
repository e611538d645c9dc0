"""The worker agent: one process that owns one worker's sandboxes.

It starts an actor cold from a template or restores it from a snapshot URI, checkpoints
it to a snapshot URI, stops it, and reports what runs (for the controller's
reconciliation), over a small authenticated HTTP API. Every order carries an operation
id: an order repeated (a retry after a lost answer) gets the first answer and is never
carried out twice. Every activation carries its generation (the fencing token): the
agent refuses an older generation of an actor than one it has seen, and writes the
generation into the manifest of every snapshot it produces.

Snapshots move through fsspec: ``file://`` (one machine), ``s3://`` (an S3-compatible
store), ``gs://`` (GCS). Pieces: ``api`` (the orders and answers, checked),
``transfer`` (snapshots to and from URIs), ``worker`` (the sandboxes), ``server`` (the
HTTP API, ``python -m backends.agent``), ``client`` (what a control plane calls).
"""
